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
    "IlluminatedDarkError",
    "EnergyRangeError",
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


class IlluminatedDarkError(FrameError):
    """Dark frames were taken with the beam on (their mean is a large fraction of the flat's).

    Typical of a plan's dry-run mode that leaves the shutter open. The darks are rejected and
    the scan is processed without dark subtraction.
    """


class EnergyRangeError(DocumentError):
    """The scan's energies lie outside every edge window (wrong units, element or edges).

    The message names the energy range seen, its units and the windows.
    """
