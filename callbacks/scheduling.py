"""Analysis scheduling of the live callback: edge windows, sessions, when an edge is analysed, and where.

:class:`AnalysisScheduling` is a mixin of :class:`~txm_live.callbacks.live.XanesLiveCallback`:
it chooses and fits each run's edge windows (options, start document, else detected from the
data), makes the run's :class:`~txm_live.session.XanesSession`, submits an edge's window data to
the analysis thread as soon as the window is complete (or at ``stop``), and runs each analysis
(preview, then exact) in the analysis process, on a Dask cluster or on the analysis thread. Every
failure becomes a named error of the run; none is raised. No numerics here.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from txm_live.callbacks.analysis_process import AnalysisProcess, NotTransferable
from txm_live.callbacks.edge_choice import FittedWindows, choose, mean_od_spectrum, windows_for, windows_from_data
from txm_live.callbacks.run_state import _labelled, _named, _RunState
from txm_live.edges import EdgeWindow, fit_window
from txm_live.errors import AnalysisError, InsufficientDataError, TxmLiveError
from txm_live.results import EdgeResult, RunResult
from txm_live.session import WindowData, XanesSession

__all__ = ["AnalysisScheduling"]

logger = logging.getLogger("txm_live.callbacks.live")  # one logger for the live callback (demo quiets it)


#: The default of each analysis option (option -> module, function), imported at first use.
_DEFAULTS: dict[str, tuple[str, str]] = {
    "analysis": ("txm_live.phases", "analyze_edge"),
    "preview": ("txm_live.preview", "preview_edge"),
    "compare": ("txm_live.phases", "compare_edges"),
    "exafs": ("txm_live.exafs", "extract_exafs"),
}


class AnalysisScheduling:
    """Mixin: edge windows, sessions and the scheduling of analyses (see the module docstring).

    The host (:class:`~txm_live.callbacks.live.XanesLiveCallback`) provides the options below,
    ``_progress`` and the finalization (:class:`~txm_live.callbacks.finalize.RunFinalization`).
    """

    element: str | None
    edges: tuple[str, ...] | None
    windows: tuple[EdgeWindow, ...] | None
    analysis: Callable[..., EdgeResult] | None
    preview: Any
    compare: Callable[[EdgeResult, EdgeResult], Any] | None
    exafs: Any
    register: bool
    correct_magnification: bool
    session_options: dict
    dask: Any
    analysis_process: bool
    _dask_client: Any
    _process: AnalysisProcess | None
    _executor: ThreadPoolExecutor
    _finalizers: list[Future]
    _open_uids: list[str]
    _progress: Callable[..., None]
    _safe_publish: Callable[[_RunState, Callable[[], None]], None]
    _derived: Callable[[_RunState], Any]
    _finalize_guarded: Callable[[_RunState], RunResult]

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

    def _window_complete(self, st: _RunState, window: EdgeWindow, *, closed_at_stop: bool = False) -> None:
        """Start the analysis of ``window``: complete, or ``closed_at_stop`` by a run that stopped
        before completing it (progress stage ``"window-incomplete"``)."""
        if window.edge in st.submitted:
            return
        st.submitted.add(window.edge)
        if closed_at_stop:
            self._progress(st, "window-incomplete", edge=window.edge, message="window closed at stop (incomplete)")
        else:
            self._progress(st, "window-complete", edge=window.edge)
        assert st.session is not None
        try:
            if st.session.cube is not None and st.session.n_frames:
                # what was acquired may hold fewer points than planned: a named error now, not at analysis
                fitted = fit_window(window, st.session.cube.energies, scan_stopped=closed_at_stop)
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
                    self._window_complete(st, window, closed_at_stop=True)
                    continue
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
        """The callable given for ``which`` (an option name of :data:`_DEFAULTS`), else the default one."""
        module, name = _DEFAULTS[which]
        given = getattr(self, which)
        if callable(given):  # analysis and compare are validated: a callable or None
            return given
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            default = "default analysis " if which == "analysis" else ""
            raise AnalysisError(f"{default}{module}.{name} unavailable: {exc}") from exc

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
