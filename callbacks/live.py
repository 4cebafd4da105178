"""Live consumer of TXM XANES runs: Bluesky documents in, phase maps out, scan never disturbed.

Threads
-------
* **RunEngine thread**: :meth:`XanesLiveCallback.__call__` only puts ``(name, doc)`` on a
  ``queue.SimpleQueue`` (no copy, no conversion, no validation, no lock shared with the worker).
* **ingest worker** (one thread): drains the queue into an :class:`event_model.RunRouter` whose
  factory makes one thin :class:`RunIngest` router per run; it feeds the frames to the run's
  :class:`~txm_live.session.XanesSession` (flat/dark correction, magnification, registration,
  cube). When an edge window is complete the window's data are handed to the analysis thread.
* **analysis thread** (one thread): schedules the analyses (each edge as soon as its window is
  complete, or at ``stop``), the comparison of every pair of edges of the same element and
  EXAFS, and emits the derived run.
  Picklable analyses (the default ones) run in a separate **analysis process** on the cube in
  shared memory, so that they never hold the RunEngine's GIL.

Every exception met on the worker or analysis thread is recorded as a named error in the run's
:class:`~txm_live.results.RunResult` and in the derived run's ``log`` stream; none reaches the
RunEngine.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import event_model
import numpy as np

from txm_live.callbacks.analysis_process import AnalysisProcess, NotTransferable
from txm_live.callbacks.assets import AssetRegistry
from txm_live.callbacks.derived import DerivedRun
from txm_live.callbacks import ingest
from txm_live.callbacks.edge_choice import (
    EdgeChoice,
    FittedWindows,
    choose,
    mean_od_spectrum,
    planned_energies,
    windows_for,
    windows_from_data,
)
from txm_live.edges import EdgeWindow, fit_window
from txm_live.errors import (
    AnalysisError,
    DataLossError,
    DocumentError,
    EnergyRangeError,
    ExafsUnavailableError,
    FrameError,
    InsufficientDataError,
    TxmLiveError,
)
from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult, RunResult
from txm_live.session import WindowData, XanesSession

__all__ = ["XanesLiveCallback", "ProgressEvent", "RunIngest", "RunSummary"]

logger = logging.getLogger("txm_live.callbacks.live")

Analysis = Callable[..., EdgeResult]

_MAX_ERRORS = 200
#: A sample frame whose pixel size differs from the run's reference (start document, else the
#: median of the frames so far) by more than this factor is skipped. Magnification drifts by a
#: few per cent per 100 eV in a TXM; a factor 1.5 is far outside any scan, a 10x slip is caught.
PIXEL_SIZE_TOLERANCE = 1.5
_RECENT_UIDS = 1000  # finished runs remembered, to ignore a repeated start document


@dataclass(frozen=True)
class RunSummary:
    """What remains of a run once its full :class:`RunResult` is dropped (long sessions).

    Attributes
    ----------
    run_uid : str
    n_frames : int
    ok : bool
        :attr:`RunResult.ok`.
    incomplete : bool
        The run was interrupted or lacked frames (:attr:`RunResult.incomplete`).
    edges : tuple of str
        Edges analysed.
    errors : tuple of str
        The first 10 named errors.
    n_errors : int
    """

    run_uid: str
    n_frames: int
    ok: bool
    incomplete: bool
    edges: tuple[str, ...]
    errors: tuple[str, ...]
    n_errors: int

    @classmethod
    def of(cls, result: RunResult) -> RunSummary:
        """Summary of a result."""
        return cls(result.run_uid, int(result.n_frames), bool(result.ok), bool(result.incomplete),
                   tuple(result.edges), tuple(result.errors[:10]), len(result.errors))


@dataclass(frozen=True)
class ProgressEvent:
    """Progress report passed to the ``progress`` callable (called from the worker threads).

    Attributes
    ----------
    run_uid : str
        Raw run uid.
    stage : str
        ``"start"``, ``"frame"``, ``"window-complete"``, ``"analysis-started"``,
        ``"analysis-finished"``, ``"analysis-failed"``, ``"error"``, ``"stop"`` or ``"finished"``.
    n_frames : int
        Sample frames stored so far.
    n_expected : int or None
        Planned sample frames (from the start document), if known.
    edge : str or None
        Edge concerned (``"L3"``...), for window and analysis stages.
    message : str
        Human-readable detail (the error text for ``"error"``).
    elapsed : float
        Seconds since the run's start document was processed.
    result : EdgeResult or None
        The finished analysis, for ``"analysis-finished"`` (``message`` says ``"preview"`` or
        ``"exact"``).
    seconds : float or None
        Wall-clock duration of the analysis, for ``"analysis-finished"``.
    """

    run_uid: str
    stage: str
    n_frames: int
    n_expected: int | None = None
    edge: str | None = None
    message: str = ""
    elapsed: float = 0.0
    result: EdgeResult | None = None
    seconds: float | None = None


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _labelled(exc: BaseException, label: str) -> str:
    """``"<Name>: <label>: <message>"``; exceptions that are not ours are named AnalysisError."""
    if isinstance(exc, TxmLiveError):
        return f"{type(exc).__name__}: {label}: {exc}"
    return f"AnalysisError: {label}: {_named(exc)}"


@dataclass
class _RunState:
    """Everything the callback tracks about one raw run (shared by worker and analysis threads)."""

    uid: str
    start_doc: dict
    t0: float
    windows: tuple[EdgeWindow, ...]
    n_expected: int | None
    choice: EdgeChoice | None = None
    plan: np.ndarray | None = None
    requested: tuple[str, ...] = ()
    pending_detection: bool = False
    session: XanesSession | None = None
    errors: list[str] = field(default_factory=list)
    n_suppressed: int = 0
    results: dict[str, EdgeResult] = field(default_factory=dict)
    previews: dict[str, EdgeResult] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)
    stopped: bool = False
    exit_status: str | None = None
    derived: DerivedRun | None = None
    warnings: list[str] = field(default_factory=list)
    incomplete: bool = False
    pixel_sizes: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ingest: dict[str, str] = field(default_factory=dict)  # what was autodetected (role -> decision)
    error_counts: dict[str, int] = field(default_factory=dict)  # error type -> count, never capped
    first_errors: dict[str, str] = field(default_factory=dict)  # error type -> first message

    def add_error(self, message: str, *, count: int = 1) -> None:
        """Record one error (``count``: how many occurrences ``message`` stands for)."""
        kind = message.split(":", 1)[0].split(" ", 1)[0] if ":" in message else "TxmLiveError"
        with self.lock:
            self.error_counts[kind] = self.error_counts.get(kind, 0) + count
            self.first_errors.setdefault(kind, message)
            if len(self.errors) < _MAX_ERRORS:
                self.errors.append(message)
            else:
                self.n_suppressed += 1

    def error_summary(self) -> list[str]:
        """``"FrameError x188: <first message>"`` per error type when errors were cut at the cap."""
        if not self.n_suppressed:
            return []
        total = sum(self.error_counts.values())
        lines = [f"TxmLiveError: error summary: {total} errors, {self.n_suppressed} not listed; by type: "
                 + ", ".join(f"{k} x{n}" for k, n in self.error_counts.items())]
        for kind, n in self.error_counts.items():
            lines.append(f"{kind} x{n}: {self.first_errors[kind].split(':', 1)[-1].strip()}")
        return lines


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
            return ingest.stream_kind(name, primary=self.primary_stream, flat=self.flat_stream,
                                      dark=self.dark_stream) == kind

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
        kind = ingest.stream_kind(name, primary=self.primary_stream, flat=self.flat_stream, dark=self.dark_stream)
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
        self._desc[doc["uid"]] = {
            "kind": kind,
            "name": name,
            "image_key": image_key,
            "energy_key": energy_key if energy_key in dks else None,
            "energy_candidates": candidates,
            "energy_units": (dks.get(energy_key) or {}).get("units") if energy_key else None,
            "units": {k: v.get("units") for k, v in dks.items()},
            "pixel_key": pixel_key if pixel_key in dks else None,
            "i0_key": self._i0_key(kind, name, dks),
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
            if self._waiting:
                st.add_error(f"FrameError: {len(self._waiting)} file-backed frames never got their "
                             "stream_datum/datum document; skipped")
                self._waiting = []
            num_events = doc.get("num_events")
            # our streams: the primary, the streams of our descriptors, and any stream of the stop
            # document that is ours by name (its descriptor may have been lost)
            ours = {self.primary_stream} | {d["name"] for d in self._desc.values()}
            if isinstance(num_events, dict):
                ours |= {str(n) for n in num_events if ingest.stream_kind(
                    str(n), primary=self.primary_stream, flat=self.flat_stream, dark=self.dark_stream)}
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
        n_before = session.n_frames
        if kind == "flat":
            i0 = row.get(d["i0_key"]) if d["i0_key"] else None
            done = session.add_flat(energy, image, i0=i0)  # type: ignore[arg-type]
        else:
            pixel = row.get(d["pixel_key"]) if d["pixel_key"] else None
            self._check_pixel_size(pixel, energy)
            i0 = row.get(d["i0_key"]) if d["i0_key"] else None
            done = session.add_sample(energy, image, pixel_size=pixel, i0=i0)  # type: ignore[arg-type]
        if session.n_frames != n_before:
            self.owner._progress(self.state, "frame")
        for window in done:
            self.owner._window_complete(self.state, window)
        if self.state.pending_detection:
            self.owner._plan_acquired(self.state)

    def _i0_key(self, kind: str, name: str, dks: dict) -> str | None:
        """The I0 monitor of a sample or flat stream (see callbacks.ingest.i0_monitor), noted."""
        if kind == "dark":
            return None  # darks are not normalized by I0
        key, note = ingest.i0_monitor(self.state.start_doc, dks, name, option=self.owner.i0_key)
        if note:
            self._detected(f"{kind} I0 monitor", note)
        return key

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
        ref = XanesLiveCallback._pixel_size_md(self.state.start_doc)
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

    def start(self, doc):  # noqa: D102 - pass through every document unchanged
        return doc

    def stop(self, doc):  # noqa: D102
        return doc

    def descriptor(self, doc):  # noqa: D102
        return doc

    def event(self, doc):  # noqa: D102
        return doc

    def event_page(self, doc):  # noqa: D102
        return doc

    def resource(self, doc):  # noqa: D102
        return doc

    def datum(self, doc):  # noqa: D102
        return doc

    def datum_page(self, doc):  # noqa: D102
        return doc

    def stream_resource(self, doc):  # noqa: D102
        return doc

    def stream_datum(self, doc):  # noqa: D102
        return doc


_STOP = object()
_POLL_S = 0.004  # worker idle poll period (s): adds at most this latency to the ingest


class XanesLiveCallback:
    """Live TXM XANES analysis, subscribed to a RunEngine (``RE.subscribe(cb)``).

    Parameters
    ----------
    energy_key, image_key, pixel_size_key, i0_key : str, optional
        Data keys of the monochromator energy, the camera image, the per-frame pixel size and a
        scalar I0 monitor. Default: the start document's ``txm_live`` dict, else autodetected
        (the only 2-D array key; a scalar key containing ``energy``; a key containing
        ``pixel_size``; a scalar named like an I0 monitor, see :func:`txm_live.callbacks.ingest.i0_monitor`).
        With an I0 monitor in the sample and flat streams, each is divided by its own reading
        (darks are not); ``i0_key=False`` turns that off.
    primary_stream, flat_stream, dark_stream : str, optional
        Stream names (default: start document, else ``"primary"``, ``"flat"``, ``"dark"``).
    element : str, optional
        Element (default: the start document's ``txm_live.element``, else its top-level
        ``element``, else detected from the data; see :mod:`txm_live.callbacks.edge_choice`).
    edges : sequence of str, optional
        Edges (default: the start document's ``txm_live.edges`` / ``edges``, else the element's
        tabulated edges inside the planned or acquired energy range, else detected from the mean
        spectrum). Results are keyed by edge name in acquisition order whatever the order here.
    windows : sequence of EdgeWindow, optional
        Explicit edge windows (override ``element``/``edges``). Every window is fitted into the
        planned energies at the start of the run (a window the plan cannot fill is a named
        :class:`~txm_live.errors.InsufficientDataError` before the first frame), else into the
        acquired ones.
    analysis : callable, optional
        ``analysis(energies, block, *, window, valid) -> EdgeResult``; default
        :func:`txm_live.phases.analyze_edge`.
    preview : callable or bool, optional
        Same signature; run on each completed window before ``analysis`` (fast preview, published
        as stream ``<edge>_preview`` and in ``RunResult.previews``). ``True`` uses
        :func:`txm_live.preview.preview_edge`; ``None``/``False``: no preview. A preview failure
        is a note labelled ``"<element> <edge> preview failed (...)"`` in ``RunResult.notes``:
        it does not count as the edge's failure and leaves ``RunResult.ok`` alone.
    compare : callable, optional
        ``compare(first, second)`` for every pair of analysed edges of the same element (first
        acquired first, e.g. L3 then L2), returning an object with ``.agreement`` (and
        ``.mapping``); default :func:`txm_live.phases.compare_edges`. Results in
        ``RunResult.comparisons``; a single-edge run has none.
    exafs : callable or bool
        ``exafs(energies, mu, *, e0)`` -> ExafsResult applied to each phase mean spectrum of
        every analysed edge; ``True`` uses :func:`txm_live.exafs.extract_exafs` (given the edge
        window's ``pre``/``post`` ranges too), ``False`` skips EXAFS. An
        :class:`~txm_live.errors.ExafsUnavailableError` (window too short) becomes a note.
    register, correct_magnification : bool
        Frame registration and magnification correction (see :class:`~txm_live.session.XanesSession`).
    progress : callable, optional
        ``progress(ProgressEvent)``, called from the worker threads.
    session_options : dict, optional
        Extra keyword arguments of :class:`~txm_live.session.XanesSession` (``flat_mode``,
        ``max_pending``, ``energy_tolerance``, ``registration_options``...).
    root_map : dict, optional
        Root remapping of old-style file resources.
    analysis_process : bool
        Run picklable analyses (module-level functions such as the default ones) in a separate
        Python process on the cube in shared memory, so that they never compete with the
        RunEngine for the GIL. Analyses that cannot be pickled (lambdas, closures) run on the
        analysis thread.
    dask : str or dask.distributed.Client, optional
        Send every edge analysis to a Dask cluster (a scheduler address ``"tcp://host:8786"``,
        ``"local[:N]"`` for a LocalCluster of this machine, or a Client): this machine then only
        ingests frames. One task per edge window; its block crosses the network once. A lost
        worker is retried by Dask; beyond that the run gets a named ``DistributedError``.
        Default: the local analysis process (``analysis_process``).
    energy_units : {"eV", "keV"}, optional
        Units of the energy key, overriding the descriptor's ``units`` (default: the descriptor's
        ``units``; without units keV when every value is below 100, with a note).
    flats_from, darks_from : str or run, optional
        Take the flat (reference) or dark frames from another run, for beamlines that record
        references in a separate run: a uid (read from ``reference_catalog``) or a run object
        (``BlueskyRun``, databroker ``Header``). Its flat/dark stream is found by the usual names
        and read before the run's own frames; the run's own references are still used.
    reference_catalog : optional
        Catalog of ``flats_from``/``darks_from`` uids: a Tiled client or URI, a databroker
        catalog, a Tiled profile name or a local catalog directory
        (see :func:`txm_live.callbacks.replay.replay_runs`).
    switch_interval : float or None
        Lower the interpreter's GIL switch interval (``sys.setswitchinterval``, process-wide) to
        this many seconds if it is larger (default 1 ms instead of Python's 5 ms), so that the
        RunEngine thread never waits long for the GIL while the worker runs; ``None`` leaves it.
    max_results : int
        Full :class:`RunResult` objects kept (the most recent runs; :attr:`results`, :meth:`wait`).
        Older runs keep only a :class:`RunSummary` (:attr:`summaries`), so memory stays flat over
        a long session (one result holds a few label/SNR maps, ~10 MB at full frame size).

    Notes
    -----
    Cost on the RunEngine thread: one ``queue.put`` per document (microseconds). Memory: the
    float32 cube of the running run (1.6 GB for 1024 energies at 602x643) plus raw frames queued
    while the worker catches up; a run's cube is released as soon as its analyses finish.
    """

    def __init__(
        self,
        *,
        energy_key: str | None = None,
        image_key: str | None = None,
        flat_stream: str | None = None,
        dark_stream: str | None = None,
        primary_stream: str | None = None,
        pixel_size_key: str | None = None,
        i0_key: str | bool | None = None,
        element: str | None = None,
        edges: Sequence[str] | None = None,
        windows: Sequence[EdgeWindow] | None = None,
        analysis: Analysis | None = None,
        preview: Analysis | bool | None = None,
        compare: Callable[[EdgeResult, EdgeResult], Any] | None = None,
        exafs: Callable[..., ExafsResult] | bool = True,
        register: bool = True,
        correct_magnification: bool = True,
        progress: Callable[[ProgressEvent], None] | None = None,
        session_options: dict | None = None,
        root_map: dict | None = None,
        analysis_process: bool = True,
        switch_interval: float | None = 0.001,
        max_results: int = 20,
        energy_units: str | None = None,
        flats_from: Any = None,
        darks_from: Any = None,
        reference_catalog: Any = None,
        dask: Any = None,
    ) -> None:
        for name, fn in (("analysis", analysis), ("compare", compare), ("progress", progress)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {fn!r}")
        if not (isinstance(max_results, int) and max_results >= 1):
            raise ValueError(f"max_results must be an integer >= 1, got {max_results!r}")
        if switch_interval is not None and not (0 < switch_interval <= 0.1):
            raise ValueError(f"switch_interval must be in (0, 0.1] s or None, got {switch_interval!r}")
        if not (preview is None or isinstance(preview, bool) or callable(preview)):
            raise ValueError(f"preview must be None, a bool or a callable, got {preview!r}")
        if not (isinstance(exafs, bool) or callable(exafs)):
            raise ValueError(f"exafs must be a bool or a callable, got {exafs!r}")
        self.energy_key = energy_key
        self.image_key = image_key
        self.flat_stream = flat_stream
        self.dark_stream = dark_stream
        self.primary_stream = primary_stream
        self.pixel_size_key = pixel_size_key
        self.i0_key = i0_key
        self.element = element
        self.edges = tuple(edges) if edges is not None else None
        self.windows = tuple(windows) if windows is not None else None
        self.analysis = analysis
        self.preview = preview
        self.compare = compare
        self.exafs = exafs
        self.register = register
        self.correct_magnification = correct_magnification
        self.progress = progress
        self.session_options = dict(session_options or {})
        self.root_map = root_map
        if energy_units is not None and str(energy_units).strip().lower() not in ingest.ENERGY_UNITS:
            raise ValueError(f"energy_units must be 'eV' or 'keV', got {energy_units!r}")
        self.energy_units = energy_units
        for name, ref in (("flats_from", flats_from), ("darks_from", darks_from)):
            if ref is not None and isinstance(ref, str) and reference_catalog is None:
                raise ValueError(f"{name}={ref!r} is a uid: pass reference_catalog= (or a run object)")
        self.flats_from = flats_from
        self.darks_from = darks_from
        self.reference_catalog = reference_catalog
        if dask is not None and not isinstance(dask, str) and not hasattr(dask, "submit"):
            raise ValueError(f"dask must be a scheduler address, 'local[:N]' or a dask.distributed.Client, got {dask!r}")
        self.dask = dask
        self._dask_client: Any = None  # connected on the analysis thread at the first analysis
        self.analysis_process = bool(analysis_process) and dask is None
        self._process: AnalysisProcess | None = AnalysisProcess() if self.analysis_process else None
        if switch_interval is not None and sys.getswitchinterval() > switch_interval:
            # The RunEngine thread and the ingest worker share the GIL: a thread asking for it waits
            # up to one switch interval (5 ms by default) while the other runs Python code.
            sys.setswitchinterval(switch_interval)

        # SimpleQueue.put is one C call that never blocks and takes no Python-level lock, so the
        # RunEngine thread never waits for the worker; counters replace Queue.join().
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._in_counter = itertools.count(1)
        self._n_in = 0  # documents enqueued (written by the RunEngine thread only)
        self._n_done = 0  # documents processed (written by the worker only)
        self._done_cv = threading.Condition()
        self._subscribers: dict[int, Callable[[str, dict], None]] = {}
        self._sub_ids = itertools.count()
        self._runs: dict[str, _RunState] = {}  # open (not finalized) runs
        self._open_uids: list[str] = []  # runs that got start but not stop, arrival order
        self._synthetic_stops: set[str] = set()
        self._results: collections.deque[RunResult] = collections.deque(maxlen=max_results)
        self._summaries: list[RunSummary] = []
        self._recent_uids: collections.deque[str] = collections.deque(maxlen=_RECENT_UIDS)
        #: Runs finished so far (results kept or not).
        self.n_finished = 0
        self._finalizers: list[Future] = []
        self.errors: list[str] = []  # errors not attributable to a run
        self._closed = False
        self._router = event_model.RunRouter([self._factory], filler_class=_PassThroughFiller)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txm-live-analysis")
        self._worker = threading.Thread(target=self._work, name="txm-live-ingest", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------ RE thread
    def __call__(self, name: str, doc: dict) -> None:
        """Enqueue one document (the only thing done on the RunEngine thread)."""
        if not self._closed:
            self._n_in = next(self._in_counter)
            self._queue.put((name, doc))

    # --------------------------------------------------------------- public
    def subscribe(self, fn: Callable[[str, dict], None]) -> int:
        """Send the derived-run documents to ``fn(name, doc)``; returns a token for :meth:`unsubscribe`."""
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        token = next(self._sub_ids)
        self._subscribers[token] = fn
        return token

    def unsubscribe(self, token: int) -> None:
        """Stop sending derived documents to the subscriber of ``token``."""
        self._subscribers.pop(token, None)

    @property
    def backlog(self) -> int:
        """Documents queued but not yet processed."""
        return max(self._n_in - self._n_done, 0)

    def wait(self, timeout: float | None = None) -> list[RunResult]:
        """Block until every queued document is processed and every stopped run is analysed.

        Returns the :class:`RunResult` of every finished run so far, in order. A run that has not
        sent its ``stop`` yet is not waited for.

        Raises
        ------
        TimeoutError
            If that does not happen within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._n_in
        with self._done_cv:
            while self._n_done < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{target - self._n_done} documents still queued after {timeout} s")
                self._done_cv.wait(remaining)
        for fut in list(self._finalizers):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                fut.result(timeout=remaining)
            except TimeoutError as exc:
                raise TimeoutError(f"analysis still running after {timeout} s") from exc
            except Exception as exc:  # noqa: BLE001 - a bad run never makes wait() raise
                self._global_error(f"TxmLiveError: finalization failed: {_named(exc)}")
        return list(self._results)

    @property
    def results(self) -> list[RunResult]:
        """Results of the most recent finished runs (at most ``max_results``), oldest first."""
        return list(self._results)

    @property
    def summaries(self) -> list[RunSummary]:
        """A :class:`RunSummary` of every finished run, oldest first."""
        return list(self._summaries)

    def close(self, timeout: float | None = None) -> list[RunResult]:
        """Process what is queued, finish runs that never stopped (flagged), stop the threads.

        Returns the results of the last ``max_results`` runs. Further documents are ignored. With
        a ``timeout``, analyses still running after it are abandoned (the analysis process is
        killed) and :class:`TimeoutError` is raised; nothing else raises.
        """
        if self._closed:
            return list(self._results)
        self._n_in = next(self._in_counter)
        self._queue.put(("__close__", None))
        self._closed = True
        finished = False
        try:
            self.wait(timeout)
            finished = True
        finally:
            self._queue.put((_STOP, None))
            self._worker.join(timeout)
            if not finished and self._process is not None:
                self._process.kill()  # unblocks the analysis thread (EOF -> AnalysisError)
            self._executor.shutdown(wait=finished, cancel_futures=not finished)
            if self._process is not None:
                self._process.close()
            if self._dask_client is not None and self._dask_client is not self.dask:
                from txm_live.distributed import close_client

                close_client(self._dask_client)
        return list(self._results)

    # ---------------------------------------------------------- worker side
    def _work(self) -> None:
        get = self._queue.get_nowait
        while True:
            try:
                name, doc = get()
            except queue.Empty:
                # Poll instead of blocking in get(): then the RunEngine thread's put() never wakes
                # a waiting thread, and the OS never preempts the RunEngine thread in favour of the
                # woken worker inside put() (measured: ~3 % of documents delayed by 5-20 ms on a
                # loaded 2-core machine with a blocking get()).
                time.sleep(_POLL_S)
                continue
            if name is _STOP:
                return
            try:
                if name == "__close__":
                    self._stop_open_runs()
                else:
                    self._route(name, doc)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                logger.exception("txm-live worker: unexpected error on %r document", name)
                self._global_error(_named(exc))
            finally:
                with self._done_cv:
                    self._n_done += 1
                    self._done_cv.notify_all()

    def _run_of(self, name: str, doc: dict) -> _RunState | None:
        uid = None
        if name in ("start",):
            uid = doc.get("uid")
        elif name == "stop" or name in ("stream_resource", "resource"):
            uid = doc.get("run_start")
        elif name in ("descriptor",):
            uid = doc.get("run_start")
        elif name in ("event", "event_page"):
            uid = self._router._descriptor_to_start.get(doc.get("descriptor"))
        elif name == "stream_datum":
            uid = self._router._stream_resources.get(doc.get("stream_resource"))
        return self._runs.get(uid) if uid else None

    def _route(self, name: str, doc: dict) -> None:
        if not isinstance(doc, dict):
            self._global_error(f"DocumentError: {name!r} document is a {type(doc).__name__}, not a dict; ignored")
            return
        if name == "start":
            uid = doc.get("uid")
            if uid in self._runs or uid in self._recent_uids:
                msg = f"DocumentError: repeated start document of run {str(uid)[:8]} ignored"
                st = self._runs.get(uid)
                if st is not None:
                    st.add_error(msg)
                else:
                    self._global_error(msg)
                logger.warning("txm-live: %s", msg)
                return
            self._stop_open_runs()
        try:
            self._router(name, doc)
        except TxmLiveError as exc:
            self._attribute(name, doc, exc)
        except Exception as exc:  # noqa: BLE001 - e.g. documents of a run whose start we never saw
            self._attribute(name, doc, exc)

    def _attribute(self, name: str, doc: dict, exc: BaseException) -> None:
        try:
            st = self._run_of(name, doc)
        except Exception:  # noqa: BLE001 - garbled references: the error belongs to no run
            st = None
        msg = _named(exc) if isinstance(exc, TxmLiveError) else f"DocumentError: {name} document: {_named(exc)}"
        if st is not None:
            st.add_error(msg)
            self._progress(st, "error", message=msg)
        else:
            self._global_error(msg)
        logger.warning("txm-live: %s", msg)
        if name == "stop" and st is not None and not st.stopped:
            st.stopped = True
            self._run_stopped(st)

    def _global_error(self, msg: str) -> None:
        """Record an error that belongs to no known run (kept: the first 200)."""
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(msg)

    def _stop_open_runs(self) -> None:
        """Send a synthetic stop through the router for runs that never sent one."""
        for uid in list(self._open_uids):
            stop = {
                "uid": str(uuid.uuid4()),
                "time": time.time(),
                "run_start": uid,
                "exit_status": "fail",
                "reason": "txm-live: no stop document received",
                "num_events": {},
            }
            self._synthetic_stops.add(stop["uid"])
            try:
                self._router("stop", stop)
            except Exception as exc:  # noqa: BLE001
                self._attribute("stop", stop, exc)

    def _factory(self, name: str, start_doc: dict) -> tuple[list, list]:
        uid = start_doc["uid"]
        st = _RunState(uid=uid, start_doc=start_doc, t0=time.monotonic(), windows=(), n_expected=None)
        try:
            if self.session_options.get("expected_energies") is not None:
                st.plan = np.asarray(self.session_options["expected_energies"], dtype=np.float64).ravel()
            else:
                st.plan = planned_energies(start_doc)
        except (DocumentError, TypeError, ValueError) as exc:
            st.add_error(_named(exc) if isinstance(exc, DocumentError) else f"DocumentError: expected_energies: {exc}")
        st.n_expected = int(st.plan.size) if st.plan is not None else None
        self._choose_windows(st)
        self._runs[uid] = st
        self._open_uids.append(uid)
        if self._process is not None:
            self._process.warm_up()  # the child imports the analyses while the edge is scanned
        return [RunIngest(self, st)], []

    def _choose_windows(self, st: _RunState) -> None:
        """Element, edges and windows of a new run, fitted to the plan (or left to the data)."""
        try:
            st.choice = choose(st.start_doc, element=self.element, edges=self.edges, windows=self.windows)
            if st.choice.needs_data and (st.choice.element is None or st.plan is None):
                st.pending_detection = True
                st.notes.append(
                    "element and edges not given (options, start document): found from the data once the "
                    + ("planned energies are acquired" if st.plan is not None else "scan stops"))
                return
            self._apply(st, windows_for(st.choice, st.plan, what="planned"))
        except (ValueError, TxmLiveError) as exc:
            name = type(exc).__name__ if isinstance(exc, TxmLiveError) else "DocumentError"
            msg = f"{name}: cannot build edge windows: {exc}"
            st.add_error(msg)
            self._progress(st, "error", message=msg)

    def _apply(self, st: _RunState, fitted: FittedWindows) -> None:
        st.windows = fitted.windows
        st.requested = fitted.requested
        st.notes.extend(fitted.notes)
        for msg in fitted.errors:
            st.add_error(msg)
            self._progress(st, "error", message=msg)
        if st.session is not None:
            st.session.windows = st.windows

    def _detect(self, st: _RunState) -> None:
        """Find the edges from the acquired data (worker thread), then start the complete windows."""
        st.pending_detection = False
        session = st.session
        if session is None or session.cube is None or not session.n_frames:
            st.add_error("EdgeDetectionError: no sample frame to detect the element and edges from")
            return
        energies, block = session.cube.block(-np.inf, np.inf)
        try:
            mean_od = mean_od_spectrum(block, session.cube.valid_mask())
            self._apply(st, windows_from_data(st.choice, energies, mean_od))  # type: ignore[arg-type]
        except (ValueError, TxmLiveError, ImportError) as exc:
            st.add_error(_named(exc) if isinstance(exc, TxmLiveError) else f"EdgeDetectionError: {_named(exc)}")
            return
        for window in st.windows:
            if session.is_complete(window):
                self._window_complete(st, window)

    def _plan_acquired(self, st: _RunState) -> None:
        """Called after each frame: detect the edges once every planned energy is acquired."""
        if st.pending_detection and st.plan is not None and st.session is not None and st.session.cube is not None:
            if st.session.cube.covers(float(st.plan.min()), float(st.plan.max())):
                self._detect(st)

    def _make_session(self, st: _RunState, md: dict) -> XanesSession:
        opts = dict(self.session_options)
        if st.plan is not None:
            opts["expected_energies"] = st.plan
        shape = md.get("image_shape")
        if shape is not None and "frame_shape" not in opts:
            try:
                if len(shape) == 2 and min(int(s) for s in shape) > 0:
                    opts["frame_shape"] = (int(shape[0]), int(shape[1]))
            except (TypeError, ValueError):
                st.add_error("DocumentError: txm_live.image_shape in the start document is not [H, W]")
        opts.setdefault("shared_memory", self.analysis_process)
        return XanesSession(
            windows=st.windows,
            register=self.register,
            correct_magnification=self.correct_magnification,
            **opts,
        )

    def _progress(
        self,
        st: _RunState,
        stage: str,
        *,
        edge: str | None = None,
        message: str = "",
        result: EdgeResult | None = None,
        seconds: float | None = None,
    ) -> None:
        if self.progress is None:
            return
        n = st.session.n_frames if st.session is not None else 0
        ev = ProgressEvent(st.uid, stage, n, st.n_expected, edge, message, time.monotonic() - st.t0, result, seconds)
        try:
            self.progress(ev)
        except Exception:  # noqa: BLE001 - a broken progress display must not stop the analysis
            logger.exception("txm-live: progress callback failed")

    def _window_complete(self, st: _RunState, window: EdgeWindow) -> None:
        if window.edge in st.submitted:
            return
        st.submitted.add(window.edge)
        self._progress(st, "window-complete", edge=window.edge)
        assert st.session is not None
        try:
            if st.session.cube is not None and st.session.n_frames:
                # what was acquired may hold fewer points than planned: a named error now, not at analysis
                fitted = fit_window(window, st.session.cube.energies)
                if fitted != window:
                    st.windows = tuple(fitted if w.edge == window.edge else w for w in st.windows)
                    window = fitted
            data = st.session.window_data(window)
        except InsufficientDataError as exc:
            st.add_error(f"InsufficientDataError: {exc}")
            return
        except TxmLiveError as exc:
            st.add_error(f"{type(exc).__name__}: {window.name}: {exc}")
            return
        if data.missing.size:
            st.add_error(
                f"FrameError: {window.name} analysed without {data.missing.size} planned energies "
                f"(first {data.missing[0]:.2f} eV)"
            )
        self._executor.submit(self._analyse, st, data)

    def _run_stopped(self, st: _RunState) -> None:
        """Flush the run's waiting frames, start the remaining analyses, schedule finalization."""
        if st.uid in self._open_uids:
            self._open_uids.remove(st.uid)
        cube = st.session.cube if st.session is not None else None
        if cube is not None and cube.memory_note:
            st.notes.append(cube.memory_note)
        try:
            self._analyse_rest(st)
        except Exception as exc:  # noqa: BLE001 - finalization must be scheduled in any case
            st.add_error(_named(exc) if isinstance(exc, TxmLiveError) else f"TxmLiveError: at stop: {_named(exc)}")
        finally:
            self._progress(st, "stop")
            # finished futures hold their RunResult: drop them (wait() only needs the pending ones)
            self._finalizers = [f for f in self._finalizers if not f.done()]
            self._finalizers.append(self._executor.submit(self._finalize_guarded, st))

    def _analyse_rest(self, st: _RunState) -> None:
        session = st.session
        if session is None:
            if not st.errors:
                st.add_error("InsufficientDataError: the run had no sample frame")
            return
        try:
            for window in session.flush():
                self._window_complete(st, window)
        finally:
            by_type: dict[str, list[str]] = {}
            for msg in session.errors:
                by_type.setdefault(msg.split(":", 1)[0], []).append(msg)
            for kind, msgs in by_type.items():
                more = len(msgs) - 1
                st.add_error(f"{kind} x{len(msgs)}: {msgs[0].split(':', 1)[-1].strip()}" if more else msgs[0],
                             count=len(msgs))
            st.warnings.extend(session.warnings)
        if st.pending_detection:
            self._detect(st)
        for window in st.windows:
            if window.edge in st.submitted:
                continue
            if session.n_frames and len(session.cube.block(window.start, window.end)[0]):  # type: ignore[union-attr]
                if st.plan is not None:
                    st.incomplete = True
                    st.add_error(f"RunIncompleteError: {window.name} window incomplete at stop; analysed as is")
                else:  # nothing announced where the scan would end: its end is the window's end
                    st.notes.append(
                        f"{window.name}: the scan ended at {float(session.cube.energies.max()):.1f} eV, "  # type: ignore[union-attr]
                        f"below the window's end {window.end:.1f} eV (no energy plan in the start document); "
                        "window fitted to the acquired energies")
                self._window_complete(st, window)
            else:
                st.incomplete = True
                st.add_error(f"InsufficientDataError: no frame in the {window.name} window")

    # -------------------------------------------------------- analysis side
    def _resolve(self, which: str) -> Callable:
        if which == "analysis":
            if self.analysis is not None:
                return self.analysis
            try:
                from txm_live.phases import analyze_edge
            except ImportError as exc:
                raise AnalysisError(f"default analysis txm_live.phases.analyze_edge unavailable: {exc}") from exc
            return analyze_edge
        if which == "preview":
            if callable(self.preview):
                return self.preview
            try:
                from txm_live.preview import preview_edge
            except ImportError as exc:
                raise AnalysisError(f"txm_live.preview.preview_edge unavailable: {exc}") from exc
            return preview_edge
        if which == "compare":
            if self.compare is not None:
                return self.compare
            try:
                from txm_live.phases import compare_edges
            except ImportError as exc:
                raise AnalysisError(f"txm_live.phases.compare_edges unavailable: {exc}") from exc
            return compare_edges
        if which == "exafs":
            if callable(self.exafs):
                return self.exafs
            try:
                from txm_live.exafs import extract_exafs
            except ImportError as exc:
                raise AnalysisError(f"txm_live.exafs.extract_exafs unavailable: {exc}") from exc
            return extract_exafs
        raise ValueError(which)

    def _derived(self, st: _RunState) -> DerivedRun:
        if st.derived is None:
            md = {
                "version": 2,
                "element": "+".join(dict.fromkeys(w.element for w in st.windows)),
                "edges": [w.edge for w in st.windows],
                "edges_requested": list(st.requested),
                "edge_choice": st.choice.source if st.choice is not None else "",
                "notes": list(st.notes),
                "windows": [
                    {"element": w.element, "edge": w.edge, "e0": w.e0, "start": w.start, "end": w.end} for w in st.windows
                ],
                "register": self.register,
                "correct_magnification": self.correct_magnification,
                "ingest": dict(st.ingest),
            }
            px = self._pixel_size(st)
            if px is not None:
                md["pixel_size_nm"] = px
            start, problems = _checked_start(st.start_doc)
            for problem in problems:
                st.add_error(problem)
            st.derived = DerivedRun(start, self._emit_derived, metadata=md)
        return st.derived

    @staticmethod
    def _pixel_size(st: _RunState) -> float | None:
        """Pixel size (nm) of the phase maps: the first sample frame's, else the start document's."""
        if st.session is not None and st.session.pixel_size_ref is not None:
            return float(st.session.pixel_size_ref)
        return XanesLiveCallback._pixel_size_md(st.start_doc)

    @staticmethod
    def _pixel_size_md(start_doc: dict) -> float | None:
        """The start document's ``txm_live.pixel_size_nm`` if it is a positive finite number."""
        md = start_doc.get("txm_live")
        value = md.get("pixel_size_nm") if isinstance(md, dict) else None
        try:
            v = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) and v > 0 else None

    def _emit_derived(self, name: str, doc: dict) -> None:
        for fn in list(self._subscribers.values()):
            try:
                fn(name, doc)
            except Exception:  # noqa: BLE001 - a failing subscriber must not stop the others
                logger.exception("txm-live: derived-run subscriber %r failed on %s", fn, name)

    def _analyse(self, st: _RunState, data: WindowData) -> None:
        w = data.window
        for kind in ("preview", "exact"):
            if kind == "preview" and not self.preview:
                continue
            self._progress(st, "analysis-started", edge=w.edge, message=kind)
            t0 = time.perf_counter()
            try:
                fn = self._resolve("preview" if kind == "preview" else "analysis")
                result = self._call_analysis(fn, data)
                if not isinstance(result, EdgeResult):
                    raise AnalysisError(f"analysis returned {type(result).__name__}, expected EdgeResult")
            except Exception as exc:  # noqa: BLE001 - failing analyses are reported, never raised
                if kind == "preview":
                    # the preview is a courtesy: its failure is a note labelled as the preview's and
                    # leaves the edge and RunResult.ok to the exact analysis
                    msg = f"{w.name} preview failed ({_named(exc)}); the exact analysis goes on"
                    st.notes.append(msg)
                else:
                    msg = _labelled(exc, w.name)
                    st.add_error(msg)
                logger.warning("run %s: %s", st.uid[:8], msg)
                self._progress(st, "analysis-failed", edge=w.edge, message=msg)
                continue
            if kind == "preview":
                st.previews[w.edge] = result
                self._safe_publish(st, lambda r=result: self._derived(st).edge(r, stream=f"{w.edge.lower()}_preview"))
            else:
                st.results[w.edge] = result
                self._safe_publish(st, lambda r=result: self._derived(st).edge(r))
            self._progress(
                st, "analysis-finished", edge=w.edge, message=kind, result=result, seconds=time.perf_counter() - t0
            )

    def _call_analysis(self, fn: Callable, data: WindowData) -> Any:
        """Run one analysis in the analysis process when possible, else on this thread."""
        w = data.window
        if self.dask is not None:
            from txm_live.distributed import connect, gather

            if self._dask_client is None:
                self._dask_client = connect(self.dask)
            fut = self._dask_client.submit(fn, data.energies, np.asarray(data.block), window=w,
                                           valid=data.valid, pure=False)
            (result,) = gather(self._dask_client, [fut], what=f"{w.name} analysis")
            return result
        if self.analysis_process and data.shared is not None:
            import pickle

            try:
                pickle.dumps(fn)
            except Exception:  # noqa: BLE001 - lambdas, closures, local classes
                logger.debug("analysis %r is not picklable: running it on the analysis thread", fn)
            else:
                assert self._process is not None  # created with analysis_process=True
                try:
                    return self._process.run(fn, data.shared, data.energies, data.valid, w)
                except NotTransferable as exc:
                    logger.debug("analysis %r not importable in the analysis process (%s): thread", fn, exc)
        return fn(data.energies, data.block, window=w, valid=data.valid)

    def _safe_publish(self, st: _RunState, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            st.add_error(f"DocumentError: derived run: {_named(exc)}")
            logger.exception("txm-live: cannot publish derived documents")

    def _compare_pairs(self, st: _RunState, edges: dict[str, EdgeResult]) -> list[EdgePairComparison]:
        """Cross-check every pair of analysed edges of the same element (acquisition order)."""
        by_key = {w.edge: w for w in st.windows}
        keys = list(edges)
        pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]
                 if by_key[a].element == by_key[b].element]
        out: list[EdgePairComparison] = []
        if not pairs:
            return out
        for a, b in pairs:
            label = f"{by_key[a].element} {a}/{b} comparison"
            try:
                detail = self._resolve("compare")(edges[a], edges[b])
                mapping = getattr(detail, "mapping", None)
                out.append(EdgePairComparison(
                    reference=a, other=b, agreement=float(detail.agreement),
                    mapping=tuple(int(m) for m in mapping) if mapping is not None else (), detail=detail))
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                st.add_error(_labelled(exc, label))
        return out

    def _exafs_of(self, st: _RunState, edges: dict[str, EdgeResult]) -> dict[str, tuple[ExafsResult, ...]]:
        """EXAFS of every phase mean of every analysed edge; an edge too short for it gets a note."""
        out: dict[str, tuple[ExafsResult, ...]] = {}
        if self.exafs is False:
            return out
        windows = {w.edge: w for w in st.windows}
        for key, res in edges.items():
            label = windows[key].name
            try:
                fn = self._resolve("exafs")
                # the default extraction normalizes with the edge's own pre-/post-edge ranges
                extra = {"pre": windows[key].pre, "post": windows[key].post} if not callable(self.exafs) else {}
                items = [fn(res.energies, res.mean_spectra[i], e0=res.e0, **extra) for i in range(res.n_phases)]
            except ExafsUnavailableError as exc:
                st.notes.append(f"{label}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                st.add_error(_labelled(exc, f"{label} EXAFS"))
                continue
            out[key] = tuple(
                r if r.phase == i else ExafsResult(i, r.k, r.chi, r.kweight, r.r, r.chir_mag, r.first_shell_r)
                for i, r in enumerate(items))
        return out

    def _finalize(self, st: _RunState) -> RunResult:
        order = [w.edge for w in st.windows]  # windows are kept in acquisition order (increasing e0)
        edges = {k: st.results[k] for k in order if k in st.results}
        previews = {k: st.previews[k] for k in order if k in st.previews}
        comparisons = self._compare_pairs(st, edges)
        exafs = self._exafs_of(st, edges)
        for warning in st.warnings:
            self._safe_publish(st, lambda m=warning: self._derived(st).log(f"Warning: {m}"))
        st.errors.extend(st.error_summary())  # past the cap: the counts per type are always kept
        n_frames = st.session.n_frames if st.session is not None else 0
        elements = list(dict.fromkeys(w.element for w in st.windows))
        if not elements and st.choice is not None and st.choice.element:
            elements = [st.choice.element]
        result = RunResult(
            run_uid=st.uid,
            element="+".join(elements),
            edges=edges,
            previews=previews,
            comparisons=tuple(comparisons),
            exafs=exafs,
            errors=tuple(st.errors),
            notes=tuple(st.notes),
            n_frames=n_frames,
            pixel_size_nm=self._pixel_size(st),
            requested_edges=st.requested or tuple(order),
        )
        derived = self._derived(st)
        for comp in comparisons:
            self._safe_publish(st, lambda c=comp: derived.comparison(c))
        for key, items in exafs.items():
            self._safe_publish(st, lambda k=key, x=items: derived.exafs(x, edge=k))
        for msg in st.notes:
            self._safe_publish(st, lambda m=msg: derived.log(f"Note: {m}"))
        for msg in st.errors:
            self._safe_publish(st, lambda m=msg: derived.log(m))
        status = "success" if not st.errors else ("abort" if st.exit_status == "abort" else "fail")
        self._safe_publish(st, lambda: derived.stop(exit_status=status, reason="; ".join(st.errors[:5])))
        result = self._store(st, result)
        self._progress(st, "finished", message="ok" if result.ok else f"{len(result.errors)} errors")
        if st.session is not None:
            st.session.release()
            st.session = None
        self._runs.pop(st.uid, None)
        return result

    def _finalize_guarded(self, st: _RunState) -> RunResult:
        """:meth:`_finalize`, and if it fails a result with the error: a run never vanishes."""
        try:
            return self._finalize(st)
        except Exception as exc:  # noqa: BLE001 - e.g. a broken subscriber or result type
            logger.exception("txm-live: finalization of run %s failed", st.uid[:8])
            st.add_error(f"TxmLiveError: finalization failed: {_named(exc)}")
            result = RunResult(run_uid=st.uid, edges=dict(st.results), previews=dict(st.previews),
                               errors=tuple(st.errors), notes=tuple(st.notes),
                               n_frames=st.session.n_frames if st.session is not None else 0)
            result = self._store(st, result)
            if st.session is not None:
                st.session.release()
                st.session = None
            self._runs.pop(st.uid, None)
            return result

    def _store(self, st: _RunState, result: RunResult) -> RunResult:
        """Keep ``result`` (bounded, see ``max_results``) and its summary; returns it."""
        if st.incomplete and not result.incomplete:
            result = dataclasses.replace(result, incomplete=True)
        self._results.append(result)
        self._summaries.append(RunSummary.of(result))
        self._recent_uids.append(st.uid)
        self.n_finished += 1
        return result

    def __repr__(self) -> str:
        return f"<XanesLiveCallback runs={len(self._runs)} finished={self.n_finished} backlog={self.backlog}>"



def _checked_start(start_doc: dict) -> tuple[dict, list[str]]:
    """The raw start document's fields that the derived run copies, each checked by the schema.

    Returns ``(doc, problems)``: ``doc`` holds the uid and every copied field (``scan_id``,
    ``sample``, ``proposal_id``) that is valid in a run-start document; each invalid field is
    left out and named in ``problems`` (``DocumentError`` messages). Producers that do not
    validate (ZeroMQ, replay of old catalogs) can send e.g. ``scan_id="abc"``.
    """
    from event_model import schema_validators
    from event_model import DocumentNames

    validator = schema_validators[DocumentNames.start]
    doc: dict = {"uid": start_doc.get("uid")}
    problems = []
    for key in ("scan_id", "sample", "proposal_id"):
        if key not in start_doc:
            continue
        probe = {"uid": "probe", "time": 0.0, key: start_doc[key]}
        try:
            validator.validate(probe)
        except Exception as exc:  # noqa: BLE001 - jsonschema.ValidationError
            text = str(getattr(exc, "message", exc))
            problems.append(f"DocumentError: start document field {key!r} is invalid ({text}); not copied to the derived run")
        else:
            doc[key] = start_doc[key]
    return doc, problems
