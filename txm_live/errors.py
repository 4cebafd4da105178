"""Exception hierarchy of txm-live.

Every error raised on purpose by txm-live derives from :class:`TxmLiveError`, so a beamline
script can catch all of them at once and still tell them apart by name.
"""

from __future__ import annotations

__all__ = [
    "TxmLiveError",
    "DocumentError",
    "FrameError",
    "MissingFlatError",
    "AnalysisError",
    "InsufficientDataError",
    "RunIncompleteError",
    "EdgeDetectionError",
    "ExafsUnavailableError",
    "DistributedError",
    "WorkerLostError",
    "IlluminatedDarkError",
    "EnergyRangeError",
    "ResultsWriteError",
    "CatalogError",
    "ScanInterruptedError",
    "DataLossError",
]


class TxmLiveError(Exception):
    """Base class of all txm-live errors."""


class DocumentError(TxmLiveError, ValueError):
    """A Bluesky document does not fit the stream contract (missing key, unknown stream...)."""


class FrameError(TxmLiveError, ValueError):
    """One frame is unusable (wrong shape or dtype, NaN energy...). The frame is skipped."""


class MissingFlatError(TxmLiveError):
    """No flat (reference) image or I0 monitor is available for a sample frame."""


class AnalysisError(TxmLiveError):
    """The phase analysis of an edge failed."""


class InsufficientDataError(AnalysisError):
    """Too few energies or usable pixels to analyse an edge."""


class RunIncompleteError(TxmLiveError):
    """A run ended (aborted, or never sent ``stop``) before its analysis could finish."""


class EdgeDetectionError(AnalysisError):
    """The element or edge of a scan could not be identified unambiguously from the data.

    The message lists the candidate edges; pass ``element=`` / ``edges=`` explicitly.
    """


class ExafsUnavailableError(AnalysisError):
    """The energy window does not reach far enough above the edge for EXAFS.

    Not a failure of the run: it is reported as a note (``"EXAFS not available: ..."``).
    """


class DistributedError(AnalysisError):
    """Work sent to a Dask cluster did not come back: a worker was lost more often than the
    scheduler retries a task (``KilledWorker``), the scheduler went away, or the wait timed out.
    The message names the task and the cause; nothing is retried silently beyond Dask's own
    rescheduling of a lost worker's tasks.
    """


class WorkerLostError(DistributedError):
    """A Dask worker died during the work (its tasks failed too often, or data only it held,
    such as a scattered tile, is gone). :func:`txm_live.phases.analyze_edge` analyses the edge
    again once on the remaining workers before raising it.
    """


class IlluminatedDarkError(FrameError):
    """Dark frames were taken with the beam on (their mean is a large fraction of the flat's).

    Typical of a plan's dry-run mode that leaves the shutter open. The darks are rejected and
    the scan is processed without dark subtraction.
    """


class EnergyRangeError(DocumentError):
    """The scan's energies lie outside every edge window (wrong units, element or edges).

    The message names the energy range seen, its units and the windows.
    """


class ResultsWriteError(TxmLiveError, OSError):
    """A results file could not be written (full disk, permissions...).

    Nothing is left behind: the file is built in memory and renamed into place only when all its
    bytes are on disk, so an older ``phases.h5`` stays intact. The analysis itself is not lost
    (the :class:`~txm_live.results.RunResult` and the derived run are still there).
    """


class CatalogError(TxmLiveError):
    """The catalog did not accept documents in time (server down, disk full, unwritable).

    The scan is never delayed by it; the camera's raw HDF5 files keep the data.
    """


class ScanInterruptedError(RunIncompleteError):
    """The scan was interrupted (Ctrl-C, ``RE.abort()``): partial results were written."""


class DataLossError(TxmLiveError):
    """Documents of a run were lost in transport (e.g. a ZeroMQ high-water mark overflowed)."""
