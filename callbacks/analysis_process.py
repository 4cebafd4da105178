"""The analysis process of the live callback: picklable analyses away from the RunEngine's GIL.

Analyses are CPU- and GIL-heavy; run in the RunEngine's process they make the RunEngine thread
wait for the GIL (measured: documents delayed by up to 85 ms with a pure-Python analysis). The
:class:`AnalysisProcess` runs them in a child interpreter that reads the cube from shared memory.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from txm_live.edges import EdgeWindow
from txm_live.errors import AnalysisError, TxmLiveError

__all__ = ["AnalysisProcess", "NotTransferable", "child_main"]

#: Modules of the default analyses, imported by the child as soon as it starts.
_PRELOAD = ("txm_live.phases", "txm_live.preview", "txm_live.exafs", "river.cluster")

logger = logging.getLogger("txm_live.callbacks.analysis_process")


class AnalysisProcess:
    """A separate Python process that runs picklable analyses on shared-memory blocks.

    Analyses are CPU- and GIL-heavy; in the RunEngine's process they would make the RunEngine
    thread wait for the GIL (measured: documents delayed by up to 85 ms with a pure-Python
    analysis running). Here they run in a child started with ``subprocess`` (never re-imports the
    user's ``__main__`` script, unlike multiprocessing's spawn), connected by a private socket
    pair. The block is passed as a :class:`~txm_live.cube.SharedBlockRef` (no copy); the result
    comes back pickled. The child ignores Ctrl-C, exits when the parent closes the connection or
    dies (also in the middle of an analysis: ``PR_SET_PDEATHSIG`` on Linux, else a thread that
    watches the parent's pid), and is restarted after a crash.
    """

    _CHILD_CODE = (
        "import sys; from txm_live.callbacks.analysis_process import child_main; child_main(sys.argv[1], int(sys.argv[2]))"
    )

    def __init__(self) -> None:
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        import socket
        import subprocess
        from multiprocessing.connection import Connection

        parent, child = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", self._CHILD_CODE, str(child.fileno()), str(os.getpid())],
                pass_fds=(child.fileno(),),
                start_new_session=True,  # no SIGINT from the beamline terminal
            )
        finally:
            child.close()
        self._conn = Connection(parent.detach())

    def warm_up(self) -> None:
        """Start the child now (it preloads the default analyses) unless it is running."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._start()
                except OSError as exc:  # run() falls back to the thread and says why
                    logger.debug("analysis process not started: %s", exc)

    def run(self, fn: Callable, ref: Any, energies: np.ndarray, valid: np.ndarray | None, window: EdgeWindow) -> Any:
        """Run ``fn(energies, <block of ref>, window=window, valid=valid)`` in the child.

        Raises
        ------
        AnalysisError
            The analysis raised (its message is kept), or the child died.
        NotTransferable
            The child could not unpickle ``fn`` (run it in a thread instead).
        """
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._start()
                except OSError as exc:  # no interpreter to start (frozen app...): use the thread
                    raise NotTransferable(f"cannot start the analysis process: {exc}") from exc
            try:
                self._conn.send((fn, ref, energies, valid, window))
                status, payload = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                code = self._proc.poll() if self._proc is not None else None
                self._shutdown_locked()
                raise AnalysisError(f"analysis process died (exit code {code}): {exc!r}") from exc
        if status == "ok":
            return payload
        if status == "untransferable":
            raise NotTransferable(payload)
        type_name, text = payload
        import txm_live.errors as errors

        cls = getattr(errors, type_name, None)
        if isinstance(cls, type) and issubclass(cls, TxmLiveError):
            raise cls(text)
        raise AnalysisError(f"{window.name}: {type_name}: {text}")

    def _shutdown_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError, EOFError) as exc:
                logger.debug("analysis process: %s", exc)
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: kill it
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            self._shutdown_locked()

    def kill(self) -> None:
        """Kill the child now, even while an analysis runs (without waiting for the lock)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


class NotTransferable(Exception):
    """The analysis function cannot be sent to the analysis process."""


def _die_with_parent(parent_pid: int, *, kernel_signal: bool = True) -> None:
    """End this process as soon as ``parent_pid`` is gone, even in the middle of an analysis.

    Linux: the kernel sends SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``). The
    kernel ties it to the parent *thread* that started the child, so a daemon thread also polls
    the parent pid (every 0.5 s) everywhere: a child never outlives its parent by seconds.
    ``kernel_signal=False`` leaves the kernel's signal out (a child started from a thread that
    may end before the parent process does: only the poll).
    """
    import signal

    if kernel_signal and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError) as exc:
            logger.debug("analysis process: prctl unavailable: %s", exc)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="txm-live-parent-watch", daemon=True).start()


def child_main(fd: str, parent_pid: int | None = None) -> None:
    """Entry point of the analysis process (see :class:`AnalysisProcess`)."""
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    conn = Connection(int(fd))
    # this process is ours and does nothing but analyses: the Dask workers' allocator settings
    # (measured: 0.45-0.82 s -> 0.12-0.17 s of system CPU per full-size L3 edge)
    from txm_live.worker_allocator import apply_in_this_process

    apply_in_this_process()
    for module in _PRELOAD:  # import the default analyses before the first edge is complete
        try:
            importlib.import_module(module)
        except ImportError as exc:
            logger.debug("analysis process: cannot preload %s: %s", module, exc)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the function is not importable here
            conn.send(("untransferable", f"{type(exc).__name__}: {exc}"))
            continue
        if msg is None:
            return
        fn, ref, energies, valid, window = msg
        try:
            with ref.attach() as block:
                result = fn(energies, block, window=window, valid=valid)
            conn.send(("ok", result))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as a named error
            conn.send(("error", (type(exc).__name__, str(exc))))
