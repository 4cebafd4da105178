"""Per-run document router of the live callback: one run's documents into its :class:`XanesSession`.

:class:`RunIngest` is the thin :class:`event_model.DocumentRouter` that
:class:`~txm_live.callbacks.live.XanesLiveCallback`'s :class:`event_model.RunRouter` makes for each
run (on the ingest worker thread): it handles ``start``/``descriptor``/``event``/``event_page``/
asset documents/``stop``, decides the stream roles, data keys and energy units (through
:mod:`txm_live.callbacks.ingest`), locates each frame (inline, datum or stream_datum) and passes
it on to the session; completed edge windows and the run's stop go back to the callback's
scheduling (:mod:`txm_live.callbacks.scheduling`). No numerics here: images and energies are
looked up and passed on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import event_model
import numpy as np

from txm_live.callbacks import ingest
from txm_live.callbacks.assets import AssetRegistry
from txm_live.callbacks.edge_choice import windows_for
from txm_live.callbacks.run_state import _named, _pixel_size_md, _RunState
from txm_live.errors import DataLossError, DocumentError, EnergyRangeError, FrameError, TxmLiveError
from txm_live.monitor import MonitorChoice
from txm_live.session import XanesSession

if TYPE_CHECKING:
    from txm_live.callbacks.live import XanesLiveCallback

__all__ = ["RunIngest", "MAX_HELD_BYTES", "MAX_HELD_FRAMES", "MONITOR_PAIRS", "PIXEL_SIZE_TOLERANCE"]

logger = logging.getLogger("txm_live.callbacks.live")  # one logger for the live callback (demo quiets it)

#: A sample frame whose pixel size differs from the run's reference (start document, else the
#: median of the frames so far) by more than this factor is skipped. Magnification drifts by a
#: few per cent per 100 eV in a TXM; a factor 1.5 is far outside any scan, a 10x slip is caught.
PIXEL_SIZE_TOLERANCE = 1.5
#: Sample/flat pairs compared with the camera before an I0 monitor is chosen from the data.
MONITOR_PAIRS = 5
#: Sample and flat events held back at most while the I0 monitor is undecided (then it is decided
#: with the pairs seen so far, or none is used) ...
MAX_HELD_FRAMES = 4 * MONITOR_PAIRS
#: ... and at most this many bytes of images (the demo's full size, 730 x 771 uint16 frames with 5
#: exposures per event, holds 20 events in 113 MB; a 2048 x 2048 camera decides after 6).
MAX_HELD_BYTES = 256 * 1024 * 1024


class RunIngest(event_model.DocumentRouter):
    """Per-run document router: routes the frames of one run into its :class:`XanesSession`.

    Made by :class:`XanesLiveCallback` (through :class:`event_model.RunRouter`); not meant to be
    used on its own. No numerics here: images and energies are looked up and passed on.
    """

    def __init__(self, owner: XanesLiveCallback, state: _RunState) -> None:
        super().__init__()
        self.owner = owner
        self.state = state
        self.assets = AssetRegistry(root_map=owner.root_map)
        self._desc: dict[str, dict[str, Any]] = {}
        self._waiting: list[tuple[str, int, dict, dict, int | None]] = []  # events waiting for their stream_datum
        self._n_external: dict[str, int] = {}  # file-backed (stream_datum) events seen per descriptor
        self._n_events: dict[str, int] = {}  # events received per stream name (checked at stop)
        md = state.start_doc.get("txm_live")
        self.md: dict = md if isinstance(md, dict) else {}
        o = owner
        self.primary_stream = o.primary_stream or self.md.get("primary_stream") or "primary"
        # None: the usual names (flat, bkg, background, reference / dark), see callbacks.ingest
        self.flat_stream = o.flat_stream or self.md.get("flat_stream")
        self.dark_stream = o.dark_stream or self.md.get("dark_stream")
        self.energy_key = o.energy_key or self.md.get("energy_key")
        self.image_key = o.image_key or self.md.get("image_key")
        self.pixel_size_key = o.pixel_size_key or self.md.get("pixel_size_key")
        self.energy_units = o.energy_units or self.md.get("energy_units")
        self.plan, self.plan_source = ingest.planned_energies(state.start_doc)
        self.scale: float | None = None  # energy units -> eV, decided once per run
        self._range_checked = False
        # I0 monitor decided from the data (txm_live.monitor): the chooser while undecided, and
        # the sample/flat frames held back until it decides (at most MAX_HELD_FRAMES)
        self._monitor: MonitorChoice | None = None
        self._monitor_done = False
        self._monitor_key: str | None = None  # what it decided (for streams described afterwards)
        self._monitor_note = ""
        self._held: list[tuple[dict, Any, Any, Any]] = []
        self._held_bytes = 0
        self.data_monitor = True  # False for reference runs (flats_from/darks_from): no pairs there

    # ------------------------------------------------------------- ingest
    def _detected(self, what: str, text: str) -> None:
        """Record an autodetection decision (logged, derived run start, RunResult.notes)."""
        if self.state.ingest.get(what) == text:
            return
        self.state.ingest[what] = text
        self.state.notes.append(f"{what}: {text}")
        logger.info("run %s: %s: %s", self.state.uid[:8], what, text)

    def _decide_scale(self, units: str | None, first_value: float | None = None) -> float:
        if self.scale is not None:
            return self.scale
        units = self.energy_units or units
        values = ([first_value] if first_value is not None else None)
        if not units and self.plan is not None and self.plan_source != "txm_live.energies":
            values = self.plan
        elif not units and self.plan_source == "txm_live.energies":
            units = "eV"  # the txm-live contract: energies in eV
        if not units and values is None:
            raise _Undecided
        self.scale, note = ingest.energy_scale(units, values)
        self._detected("energy units", f"{units} (converted to eV)" if units and self.scale != 1.0
                       else (str(units) if units else note))
        return self.scale

    def _to_ev(self, value: Any, units: str | None) -> float | None:
        if value is None:
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            return value  # the session names the bad energy
        try:
            scale = self._decide_scale(units, v)
        except _Undecided:  # pragma: no cover - first_value is given
            scale = 1.0
        return round(v * scale, 6) if scale != 1.0 else v

    def _check_range(self, energy_ev: float, units: str | None) -> bool:
        """Named error (at the first frame) if the scan misses every edge window; False then."""
        self._range_checked = True
        windows = self.state.windows
        if not windows:
            return True
        plan_ev = None if self.plan is None else self.plan * (1.0 if self.plan_source == "txm_live.energies" else (self.scale or 1.0))
        lo_w = min(w.start for w in windows)
        hi_w = max(w.end for w in windows)
        if plan_ev is not None:
            inside = np.any([(plan_ev >= w.start) & (plan_ev <= w.end) for w in windows])
            emin, emax = float(plan_ev.min()), float(plan_ev.max())
            what = f"planned energies ({self.plan_source})"
        else:
            inside = lo_w - 1000.0 <= energy_ev <= hi_w
            emin = emax = energy_ev
            what = "first energy"
        if not inside:
            shown = "keV" if self.scale == 1000.0 else "eV"
            raw = f"{emin / (self.scale or 1):g}-{emax / (self.scale or 1):g} {shown}"
            wins = ", ".join(f"{w.name} {w.start:.0f}-{w.end:.0f} eV" for w in windows)
            self._record(EnergyRangeError(
                f"{what} {raw} (= {emin:.1f}-{emax:.1f} eV) lie outside every edge window ({wins}); "
                f"energy units {self.state.ingest.get('energy units', 'eV')!r}: check energy_units=, element= and edges="))
        return bool(inside)

    # -------------------------------------------------------------- helpers
    def _stream_kind(self, name: str) -> str | None:
        """``"sample"``, ``"flat"``, ``"dark"`` or None (not ours) for the stream ``name`` of this run."""
        return ingest.stream_kind(name, primary=self.primary_stream, flat=self.flat_stream, dark=self.dark_stream)

    def _record(self, exc: BaseException) -> None:
        msg = _named(exc)
        self.state.add_error(msg)
        logger.warning("run %s: %s", self.state.uid[:8], msg)
        self.owner._progress(self.state, "error", message=msg)

    def _session(self) -> XanesSession:
        if self.state.session is None:
            st = self.state
            if self.plan is not None and self.plan_source != "txm_live.energies" and st.plan is None:
                try:
                    scale = self._decide_scale(None)  # from the plan's values if not decided yet
                except (_Undecided, DocumentError):
                    scale = 1.0
                st.plan = np.round(self.plan * scale, 6)  # e.g. FXI's eng_list in keV -> eV
                st.n_expected = int(st.plan.size)
                in_range = self._check_range(float(st.plan[0]), None)  # before fitting: names the units
                if st.choice is not None and not st.pending_detection and in_range:
                    try:  # the windows are fitted to the planned energies, now known in eV
                        self.owner._apply(st, windows_for(st.choice, st.plan, what="planned"))
                    except (ValueError, TxmLiveError) as exc:
                        self._record(exc if isinstance(exc, TxmLiveError) else DocumentError(str(exc)))
            self.state.session = self.owner._make_session(self.state, self.md)
            for kind, ref in (("flat", self.owner.flats_from), ("dark", self.owner.darks_from)):
                if ref is not None:
                    self._load_references(kind, ref)
        return self.state.session

    def _load_references(self, kind: str, ref: Any) -> None:
        """Feed the ``kind`` frames of another run (``flats_from``/``darks_from``) to this session."""
        from txm_live.callbacks.replay import catalog_client, is_run, replay_run

        label = ref if isinstance(ref, str) else getattr(ref, "metadata", {}).get("start", {}).get("uid", "run")
        sub = _RunState(uid=self.state.uid, start_doc={}, t0=self.state.t0, windows=self.state.windows, n_expected=None)
        router = event_model.RunRouter(
            [lambda name, start: ([_ReferenceIngest(self, sub, kind, start)], [])], filler_class=_PassThroughFiller)

        def wanted(name: str) -> bool:
            return self._stream_kind(name) == kind

        try:
            if is_run(ref):
                replay_run(ref, None, router, progress=False, streams=wanted)
            else:
                with catalog_client(self.owner.reference_catalog) as client:
                    replay_run(client, ref, router, progress=False, streams=wanted)
        except Exception as exc:  # noqa: BLE001 - the run goes on with its own references
            self._record(DocumentError(f"{kind}s_from {label}: cannot read the reference run: {_named(exc)}"))
            return
        for msg in sub.errors:
            self.state.add_error(f"{msg.split(':', 1)[0]}: {kind}s_from {label}: {msg.split(':', 1)[-1].strip()}")
        self._detected(f"{kind}s from", f"run {label} ({sub.ingest.get('n_' + kind, '0')} {kind} frames)")

    # ------------------------------------------------------------ documents
    def start(self, doc: dict) -> None:
        self.owner._progress(self.state, "start", message=f"plan {doc.get('plan_name', '?')}")

    def descriptor(self, doc: dict) -> None:
        name = doc.get("name", "primary")
        kind = self._stream_kind(name)
        if kind is None:
            return  # baseline, monitors...: not ours
        dks = doc.get("data_keys", {})
        image_key = self.image_key
        if image_key is None:
            image_key, why = ingest.image_key(dks, name)
            shape = dks[image_key].get("shape") or []
            per_event = f"; {shape[0]} frames per event, summed" if len(shape) == 3 and shape[0] > 1 else ""
            self._detected("image key", f"{image_key!r} ({why}, shape {list(shape)}{per_event})")
        elif image_key not in dks:
            raise DocumentError(f"stream {name!r}: image key {image_key!r} not among {sorted(dks)}")
        energy_key, candidates = self.energy_key, []
        if energy_key is None:
            energy_key, why, candidates = ingest.energy_candidates(
                self.state.start_doc, dks, name, has_plan=self.plan is not None)
            if energy_key is not None:
                self._detected("energy key", f"{energy_key!r} ({why})")
        if kind != "dark" and energy_key is None and not candidates:
            raise DocumentError(f"stream {name!r}: no energy key among {sorted(dks)}; pass energy_key=")
        if kind != "dark" and energy_key is not None and energy_key not in dks:
            raise DocumentError(f"stream {name!r}: no energy key ({energy_key!r}) among {sorted(dks)}")
        if energy_key in dks:
            try:
                self._decide_scale(dks[energy_key].get("units"))
            except _Undecided:
                pass  # decided from the first value
        pixel_key = self.pixel_size_key
        if pixel_key is None:
            cands = [k for k in dks if "pixel_size" in k.lower()]
            pixel_key = cands[0] if cands else None
        ext = dks[image_key].get("external")
        self._detected(f"{kind} stream", repr(name))
        i0_key, i0_candidates = self._i0_key(kind, name, dks, exclude=(energy_key, pixel_key))
        self._desc[doc["uid"]] = {
            "kind": kind,
            "name": name,
            "image_key": image_key,
            "energy_key": energy_key if energy_key in dks else None,
            "energy_candidates": candidates,
            "energy_units": (dks.get(energy_key) or {}).get("units") if energy_key else None,
            "units": {k: v.get("units") for k, v in dks.items()},
            "pixel_key": pixel_key if pixel_key in dks else None,
            "i0_key": i0_key,
            "i0_candidates": i0_candidates,  # decided from the data (txm_live.monitor) when not empty
            "stream_external": ext == "STREAM:",
            # StreamDatum indices count events: a (N, H, W) key holds N dataset rows per index
            "rows_per_index": int(shape3[0]) if len(shape3 := dks[image_key].get("shape") or []) == 3 else 1,
            "image_ndim": len(shape3),  # declared: 2 (H, W) or 3 (N, H, W); 0 when not declared
        }

    def event(self, doc: dict) -> None:
        d = self._desc.get(doc["descriptor"])
        if d is None:
            return
        self._n_events[d["name"]] = self._n_events.get(d["name"], 0) + 1
        self._frame(d, doc["descriptor"], doc["seq_num"], doc["data"], doc.get("filled", {}))

    def event_page(self, doc: dict) -> None:
        d = self._desc.get(doc["descriptor"])
        if d is None:
            return
        data, filled = doc["data"], doc.get("filled", {})
        columns = {"seq_num": doc["seq_num"], **{f"data.{k}": v for k, v in data.items()},
                   **{f"filled.{k}": v for k, v in filled.items()}}
        lengths = {k: len(v) if hasattr(v, "__len__") else -1 for k, v in columns.items()}
        self._n_events[d["name"]] = self._n_events.get(d["name"], 0) + max(lengths["seq_num"], 0)
        if len(set(lengths.values())) != 1:
            # which energy goes with which image is unknown: the whole page is skipped
            raise DocumentError(
                f"stream {d['name']!r}: ragged event_page (column lengths {lengths}); "
                f"its {max(lengths.values())} frames skipped"
            )
        for i, seq in enumerate(doc["seq_num"]):
            row = {k: v[i] for k, v in data.items()}
            frow = {k: v[i] for k, v in filled.items()}
            try:
                self._frame(d, doc["descriptor"], seq, row, frow)
            except TxmLiveError as exc:  # one bad row must not lose the rest of the page
                self._record(exc)

    def stream_resource(self, doc: dict) -> None:
        self.assets.stream_resource(doc)

    def stream_datum(self, doc: dict) -> None:
        self.assets.stream_datum(doc)
        self._retry_waiting()

    def _retry_waiting(self) -> None:
        """Frames whose asset documents arrived late (after the event) are read now."""
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for desc_uid, seq, row, frow, position in waiting:
                try:
                    self._frame(self._desc[desc_uid], desc_uid, seq, row, frow, position)
                except TxmLiveError as exc:
                    self._record(exc)

    def resource(self, doc: dict) -> None:
        if doc.get("run_start", self.state.uid) == self.state.uid:
            self.assets.resource(doc)

    def datum(self, doc: dict) -> None:
        self.assets.datum(doc)
        self._retry_waiting()

    def datum_page(self, doc: dict) -> None:
        self.assets.datum_page(doc)
        self._retry_waiting()

    def stop(self, doc: dict) -> None:
        st = self.state
        st.stopped = True
        try:
            st.exit_status = doc.get("exit_status")
            if self._monitor is not None:  # fewer pairs than MONITOR_PAIRS: decide with those
                self._decide_monitor()
            if self._waiting:
                st.add_error(f"FrameError: {len(self._waiting)} file-backed frames never got their "
                             "stream_datum/datum document; skipped")
                self._waiting = []
            num_events = doc.get("num_events")
            # our streams: the primary, the streams of our descriptors, and any stream of the stop
            # document that is ours by name (its descriptor may have been lost)
            ours = {self.primary_stream} | {d["name"] for d in self._desc.values()}
            if isinstance(num_events, dict):
                ours |= {str(n) for n in num_events if self._stream_kind(str(n))}
            for name in sorted(ours):
                expected = num_events.get(name) if isinstance(num_events, dict) else None
                got = self._n_events.get(name, 0)
                if isinstance(expected, int) and expected > got:
                    st.add_error(
                        f"{DataLossError.__name__}: stream {name!r}: {expected - got} of {expected} events (per the stop "
                        "document) never arrived"
                    )
            for (desc_uid, key), n in self.assets.repeated_seq.items():
                name = self._desc.get(desc_uid, {}).get("name", desc_uid[:8])
                st.add_error(
                    f"DocumentError: stream {name!r}: {n} file-backed events repeated an earlier event's seq_num "
                    f"({key!r}); their frames were located by their position among the stream_datum ranges"
                )
            if doc.get("uid") in self.owner._synthetic_stops:
                st.incomplete = True
                st.add_error(
                    "RunIncompleteError: no stop document before the next run (or close()); "
                    "finished with the frames received"
                )
            elif st.exit_status != "success":
                st.incomplete = True
                st.add_error(
                    f"RunIncompleteError: run ended with exit_status {st.exit_status!r}"
                    + (f" ({doc.get('reason')})" if doc.get("reason") else "")
                )
            self.assets.close()
        finally:
            self.owner._run_stopped(st)  # whatever happened above, the run gets finalized

    # --------------------------------------------------------------- frames
    def _frame(self, d: dict, desc_uid: str, seq: int, row: dict, frow: dict, position: int | None = None) -> None:
        key = d["image_key"]
        if key in row:
            image = row[key]
            if frow.get(key) is False or isinstance(image, str):
                if not self.assets.has_datum(str(image)):
                    self._waiting.append((desc_uid, seq, row, frow, position))  # datum after the event
                    return
                image = self.assets.datum_frame(str(image))
        elif d["stream_external"]:
            if position is None:  # rank among the descriptor's file-backed events (see AssetRegistry)
                position = self._n_external.get(desc_uid, 0)
                self._n_external[desc_uid] = position + 1
            image = self.assets.stream_frame(desc_uid, key, seq, position=position,
                                             rows_per_index=d.get("rows_per_index", 1))
            if image is None:
                self._waiting.append((desc_uid, seq, row, frow, position))
                return
        else:
            raise FrameError(f"stream {d['name']!r} event {seq}: no {key!r} in the event")
        image = np.asarray(image)
        if d.get("image_ndim") == 2 and image.ndim == 3:  # a chunk where the descriptor declares one frame
            raise FrameError(f"stream {d['name']!r} event {seq}: image of shape {image.shape} where the "
                             f"descriptor declares {key!r} as one (H, W) frame; frame skipped")
        session = self._session()
        kind = d["kind"]
        if kind == "dark":
            session.add_dark(image)
            return
        if d["energy_key"] is None and d["energy_candidates"]:
            self._resolve_energy_key(d, row)
        energy = self._to_ev(row.get(d["energy_key"]), d["energy_units"]) if d["energy_key"] else None
        if kind == "sample" and not self._range_checked and isinstance(energy, float):
            self._check_range(energy, d["energy_units"])
        if kind == "sample":
            self._check_pixel_size(row.get(d["pixel_key"]) if d["pixel_key"] else None, energy)
        if self._monitor is not None and d.get("i0_candidates"):
            self._monitor.update(kind, energy, image, dark=session.darks.mean, readings=row)  # type: ignore[arg-type]
            self._held.append((d, image, energy, row))
            self._held_bytes += int(getattr(image, "nbytes", 0))
            if self._monitor.ready or len(self._held) >= MAX_HELD_FRAMES or self._held_bytes >= MAX_HELD_BYTES:
                self._decide_monitor()
            return
        self._add(d, image, energy, row)

    def _add(self, d: dict, image: Any, energy: Any, row: dict) -> None:
        """Pass one sample or flat frame, with its I0 reading, to the session."""
        session = self._session()
        n_before = session.n_frames
        i0 = row.get(d["i0_key"]) if d["i0_key"] else None
        if d["kind"] == "flat":
            done = session.add_flat(energy, image, i0=i0)
        else:
            pixel = row.get(d["pixel_key"]) if d["pixel_key"] else None
            done = session.add_sample(energy, image, pixel_size=pixel, i0=i0)
        if session.n_frames != n_before:
            self.owner._progress(self.state, "frame")
        for window in done:
            self.owner._window_complete(self.state, window)
        if self.state.pending_detection:
            self.owner._plan_acquired(self.state)

    def _i0_key(self, kind: str, name: str, dks: dict, *, exclude: tuple = ()) -> tuple[str | None, list[str]]:
        """The I0 monitor of a sample or flat stream (see callbacks.ingest.i0_monitor), noted, and
        the candidate readings to decide from the data when no key is conclusive.

        Candidates (see ingest.i0_candidates) go to the run's :class:`MonitorChoice`, which decides
        from the first sample/flat pairs (the frames are held back until then).
        """
        if kind == "dark":
            return None, []  # darks are not normalized by I0
        key, note = ingest.i0_monitor(self.state.start_doc, dks, name, option=self.owner.i0_key)
        if note:
            self._detected(f"{kind} I0 monitor", note)
            return key, []
        if not self.data_monitor:
            return None, []
        candidates = ingest.i0_candidates(self.state.start_doc, dks, exclude=exclude)
        if self._monitor_done:  # a stream described after the decision follows it
            if self._monitor_note and candidates:
                self._detected(f"{kind} I0 monitor", self._monitor_note)
            return (self._monitor_key if self._monitor_key in candidates else None), []
        if candidates:
            if self._monitor is None:
                self._monitor = MonitorChoice(candidates, n_pairs=MONITOR_PAIRS)
            else:  # the union over the sample and flat streams: pairs use the keys read in both
                self._monitor.add_candidates(candidates)
        return None, candidates

    def _decide_monitor(self) -> None:
        """Decide the I0 monitor from the pairs seen so far, note why, release the held frames."""
        monitor, self._monitor = self._monitor, None
        self._monitor_done = True
        if monitor is None:
            return
        decision = monitor.decide()
        text = f"{decision.key!r} ({decision.reason})" if decision.key else decision.reason
        self._monitor_key, self._monitor_note = decision.key, text
        for d in self._desc.values():
            if d.get("i0_candidates"):
                d["i0_key"] = decision.key if decision.key in d["i0_candidates"] else None
                self._detected(f"{d['kind']} I0 monitor", text)
        held, self._held, self._held_bytes = self._held, [], 0
        for d, image, energy, row in held:
            try:
                self._add(d, image, energy, row)
            except TxmLiveError as exc:
                self._record(exc)

    def _check_pixel_size(self, value: Any, energy: Any) -> None:
        """Raise FrameError when ``value`` is far from the run's pixel size (see PIXEL_SIZE_TOLERANCE).

        The reference is the start document's ``txm_live.pixel_size_nm`` when given, else the
        median of the pixel sizes of the earlier sample frames. Unusable values (None, NaN,
        negative) are left to the session, which ignores them with a warning.
        """
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if not (np.isfinite(v) and v > 0):
            return
        seen = self.state.pixel_sizes
        ref = _pixel_size_md(self.state.start_doc)
        if ref is None and seen:
            ref = float(np.median(seen))
        seen.append(v)
        if ref is not None and max(v / ref, ref / v) > PIXEL_SIZE_TOLERANCE:
            raise FrameError(
                f"sample frame at {energy} eV: pixel size {v:g} nm is {v / ref:.3g} x the run's {ref:g} nm; frame skipped"
            )


    def _resolve_energy_key(self, d: dict, row: dict) -> None:
        """Pick the energy key from the values: the scalar that follows the planned list."""
        known = self.state.ingest.get("energy key")
        found = next((c for c in d["energy_candidates"] if known is not None and known.startswith(repr(c))), None)
        if found is None:
            found = ingest.key_following_plan(row, d["energy_candidates"], self.plan)
            if found is None:
                named = [c for c in d["energy_candidates"] if "energy" in c.lower()]
                if not named:
                    raise DocumentError(
                        f"stream {d['name']!r}: no energy key: none of {d['energy_candidates']} has a value "
                        f"in the planned energies ({self.plan_source}); pass energy_key=")
                found = named[0]
                self._detected("energy key", f"{found!r} (a scalar key containing 'energy')")
            else:
                self._detected("energy key", f"{found!r} (its value follows the planned list {self.plan_source})")
        for other in [d, *self._desc.values()]:  # the other streams use the same key
            if other["energy_key"] is None and found in other["energy_candidates"]:
                other["energy_key"], other["energy_candidates"] = found, []
                other["energy_units"] = other["units"].get(found)


class _ReferenceIngest(RunIngest):
    """Reads only the ``kind`` (flat or dark) frames of a reference run into another run's session."""

    def __init__(self, target: RunIngest, state: _RunState, kind: str, start: dict) -> None:
        state.start_doc = start
        super().__init__(target.owner, state)
        self.kind = kind
        self.target = target
        self.data_monitor = False
        self.n = 0

    def _session(self) -> XanesSession:
        assert self.target.state.session is not None
        return self.target.state.session

    def _frame(self, d: dict, desc_uid: str, seq: int, row: dict, frow: dict, position: int | None = None) -> None:
        if d["kind"] == self.kind:
            super()._frame(d, desc_uid, seq, row, frow, position)
            self.n += 1
            self.state.ingest["n_" + self.kind] = str(self.n)

    def stop(self, doc: dict) -> None:
        self.assets.close()


class _Undecided(Exception):
    """Energy units cannot be decided yet (no units, no plan, no value)."""


class _PassThroughFiller(event_model.DocumentRouter):
    """Filler stand-in for RunRouter: asset documents are resolved by :class:`AssetRegistry`."""

    def __init__(self, handler_registry: dict, *, root_map: dict | None = None, inplace: bool = False) -> None:
        super().__init__()

    def _pass(self, doc: dict) -> dict:
        """Return ``doc`` unchanged (every document type)."""
        return doc

    start = stop = descriptor = event = event_page = _pass
    resource = datum = datum_page = stream_resource = stream_datum = _pass
