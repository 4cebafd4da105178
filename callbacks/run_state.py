"""What the live callback tracks and reports about one run: its state, progress events, summaries.

:class:`_RunState` is shared by the ingest worker (:mod:`txm_live.callbacks.run_ingest`), the analysis
scheduling (:mod:`txm_live.callbacks.scheduling`) and the finalization
(:mod:`txm_live.callbacks.finalize`) of :class:`~txm_live.callbacks.live.XanesLiveCallback`.
:class:`ProgressEvent` and :class:`RunSummary` are public (re-exported by
:mod:`txm_live.callbacks.live`). No numerics here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from txm_live.callbacks.derived import DerivedRun
from txm_live.callbacks.edge_choice import EdgeChoice
from txm_live.edges import EdgeWindow
from txm_live.errors import TxmLiveError
from txm_live.results import EdgeResult, RunResult
from txm_live.session import XanesSession

__all__ = ["ProgressEvent", "RunSummary"]

_MAX_ERRORS = 200


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
        ``"start"``, ``"frame"``, ``"window-complete"``, ``"window-incomplete"`` (a window closed
        at stop by a run that stopped before completing it; analysed as is),
        ``"analysis-started"``, ``"analysis-finished"``, ``"analysis-failed"``, ``"error"``,
        ``"stop"`` or ``"finished"``.
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


def _pixel_size_md(start_doc: dict) -> float | None:
    """The start document's ``txm_live.pixel_size_nm`` if it is a positive finite number."""
    md = start_doc.get("txm_live")
    value = md.get("pixel_size_nm") if isinstance(md, dict) else None
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None
