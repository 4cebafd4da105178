"""Finalization of a live run: comparisons, EXAFS, the derived run, the RunResult kept.

:class:`RunFinalization` is a mixin of :class:`~txm_live.callbacks.live.XanesLiveCallback`,
run on the analysis thread once a run has stopped and its analyses are done: it cross-checks
every pair of analysed edges of the same element, extracts EXAFS of every phase mean, publishes
the derived run's documents (:class:`~txm_live.callbacks.derived.DerivedRun`) to the
subscribers, assembles the run's :class:`~txm_live.results.RunResult` and keeps it (bounded by
``max_results``, with a :class:`~txm_live.callbacks.run_state.RunSummary` of every run). Results
files and figures are written by their consumers (:mod:`txm_live.callbacks.results_file`,
:mod:`txm_live.figures`). No numerics here.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from txm_live.callbacks.derived import DerivedRun
from txm_live.callbacks.run_state import RunSummary, _labelled, _named, _pixel_size_md, _RunState
from txm_live.errors import ExafsUnavailableError
from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult, RunResult

__all__ = ["RunFinalization"]

logger = logging.getLogger("txm_live.callbacks.live")  # one logger for the live callback (demo quiets it)


class RunFinalization:
    """Mixin: what happens to a run after its analyses (see the module docstring).

    The host (:class:`~txm_live.callbacks.live.XanesLiveCallback`) provides the options and
    containers below, ``_progress`` and ``_resolve`` (:class:`~txm_live.callbacks.scheduling.AnalysisScheduling`).
    """

    exafs: Any
    register: bool
    correct_magnification: bool
    n_finished: int
    _subscribers: dict[int, Callable[[str, dict], None]]
    _runs: dict[str, _RunState]
    _results: collections.deque[RunResult]
    _summaries: list[RunSummary]
    _recent_uids: collections.deque[str]
    _progress: Callable[..., None]
    _resolve: Callable[[str], Callable]

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
        return _pixel_size_md(st.start_doc)

    def _emit_derived(self, name: str, doc: dict) -> None:
        for fn in list(self._subscribers.values()):
            try:
                fn(name, doc)
            except Exception:  # noqa: BLE001 - a failing subscriber must not stop the others
                logger.exception("txm-live: derived-run subscriber %r failed on %s", fn, name)

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
        self._release(st)
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
            self._release(st)
            return result

    def _release(self, st: _RunState) -> None:
        """Free the run's session (its cube) and forget the finished run."""
        if st.session is not None:
            st.session.release()
            st.session = None
        self._runs.pop(st.uid, None)

    def _store(self, st: _RunState, result: RunResult) -> RunResult:
        """Keep ``result`` (bounded, see ``max_results``) and its summary; returns it."""
        if st.incomplete and not result.incomplete:
            result = dataclasses.replace(result, incomplete=True)
        self._results.append(result)
        self._summaries.append(RunSummary.of(result))
        self._recent_uids.append(st.uid)
        self.n_finished += 1
        return result


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
