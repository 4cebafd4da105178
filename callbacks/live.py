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

Modules: this one holds the public :class:`XanesLiveCallback` (options, RunEngine-thread entry,
worker loop and routing); :mod:`~txm_live.callbacks.run_ingest` the per-run document router,
:mod:`~txm_live.callbacks.scheduling` the edge windows and analysis scheduling,
:mod:`~txm_live.callbacks.finalize` the run's finalization, and :mod:`~txm_live.callbacks.run_state`
the per-run state, :class:`ProgressEvent` and :class:`RunSummary`.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import event_model
import numpy as np

from txm_live.callbacks import ingest
from txm_live.callbacks.analysis_process import AnalysisProcess
from txm_live.callbacks.edge_choice import planned_energies
from txm_live.callbacks.finalize import RunFinalization
from txm_live.callbacks.run_ingest import PIXEL_SIZE_TOLERANCE, RunIngest, _PassThroughFiller  # noqa: F401 - public here
from txm_live.callbacks.run_state import _MAX_ERRORS, ProgressEvent, RunSummary, _named, _RunState
from txm_live.callbacks.scheduling import AnalysisScheduling
from txm_live.edges import EdgeWindow
from txm_live.errors import DocumentError, TxmLiveError
from txm_live.results import EdgeResult, ExafsResult, RunResult

__all__ = ["XanesLiveCallback", "ProgressEvent", "RunIngest", "RunSummary"]

logger = logging.getLogger("txm_live.callbacks.live")

Analysis = Callable[..., EdgeResult]

_RECENT_UIDS = 1000  # finished runs remembered, to ignore a repeated start document

_STOP = object()
_POLL_S = 0.004  # worker idle poll period (s): adds at most this latency to the ingest


class XanesLiveCallback(AnalysisScheduling, RunFinalization):
    """Live TXM XANES analysis, subscribed to a RunEngine (``RE.subscribe(cb)``).

    Parameters
    ----------
    energy_key, image_key, pixel_size_key, i0_key : str, optional
        Data keys of the monochromator energy, the camera image, the per-frame pixel size and a
        scalar I0 monitor. Default: the start document's ``txm_live`` dict, else autodetected
        (the only 2-D array key; a scalar key containing ``energy``; a key containing
        ``pixel_size``; the I0 monitor by name (``I0``, ``i0``, ``*_i0``, the start document's
        ``ion_chamber``), else decided from the data among the plan's scalar detector readings by
        :class:`txm_live.monitor.MonitorChoice`: the chamber that follows the flats' counts and not
        the sample's absorption; an undecided case uses no I0 and says why in the notes).
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

    def __repr__(self) -> str:
        return f"<XanesLiveCallback runs={len(self._runs)} finished={self.n_finished} backlog={self.backlog}>"

