"""Which scalar reading is the incident-intensity (I0) monitor: decided from the data.

A beamline plan reads several ion chambers or scaler channels with names that say nothing about
where they sit (FXI: ``ic3``, ``ic4``; elsewhere ``ion_chamber1``, ``sclr1_channels_chan2``...).
Dividing each sample and flat image by an *upstream* monitor removes the beam's changes from the
optical density; dividing by a chamber *downstream* of the sample (I1, It) also removes the
sample's own mean absorption, edge step included, and breaks the optical density.
:class:`MonitorChoice` tells them apart from the first sample/flat pairs of a run.

Model (one pair: a sample frame and a flat frame at the same energy; ``S``, ``F`` their mean
dark-subtracted counts, ``a``, ``b`` a candidate's readings during them, ``beta`` the log ratio of
the beams during the two exposures, ``OD`` the sample's mean optical density, ``kappa`` the
fraction of it the candidate sees: 0 upstream, about 1 downstream)::

    ln(S / F) = beta - OD
    ln(a / b) = beta - kappa * OD
    u = ln(a / b) - ln(S / F) = (1 - kappa) * OD         (the beam cancels)

``OD`` is estimated by the median over pairs of ``-ln(S / F)`` (most sample/flat pairs are taken
seconds apart, so the median ``beta`` is close to 0; a beam change between the two exposures
of a few pairs does not move the median), or, when larger, by the largest median ``u`` of a
candidate that follows the flats (``u`` is free of the beam, and equals ``OD`` for an upstream
monitor); ``1 - kappa`` by the median ``u`` over it.
A monitor must also follow the camera from flat to flat: ``ln(b / F)`` may change smoothly with
the energy (the chamber's and the camera's efficiencies), not jump when the beam jumps.

Decision: an upstream monitor sees at most :data:`MAX_SEEN` of the sample's absorption and
follows the flats within :data:`MAX_TRACKING_ERROR`; a candidate that sees at least
:data:`MIN_SEEN_DOWNSTREAM` of it follows the sample's absorption (downstream) and is never
used. A sample that absorbs too little (apparent mean OD below :data:`MIN_OD`), no pair, or no
qualifying candidate: no monitor, and the reason says so. Among several qualifying monitors,
the one that follows the flats best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MAX_SEEN", "MAX_TRACKING_ERROR", "MIN_OD", "MIN_SEEN_DOWNSTREAM", "MonitorChoice", "MonitorDecision",
           "frame_level"]

#: An upstream monitor sees at most this fraction of the sample's mean absorption.
MAX_SEEN = 0.3
#: A candidate seeing at least this fraction follows the sample's absorption (downstream).
MIN_SEEN_DOWNSTREAM = 0.7
#: Below this apparent mean optical density of the sample, upstream and downstream cannot be told apart.
MIN_OD = 0.05
#: RMS frame-to-frame change of ln(reading / flat counts) allowed for a monitor, as a fraction of
#: the RMS change of ln(flat counts) itself, plus 1 % (the chamber's and camera's efficiencies
#: change with the energy; a constant reading passes when the beam is constant: it then cancels).
MAX_TRACKING_ERROR = 0.5


def frame_level(image: np.ndarray, dark: np.ndarray | None = None) -> float:
    """Mean counts per exposure of ``image`` ((H, W) or (N, H, W) chunk) minus the dark's mean.

    Notes
    -----
    Only the mean is needed: the ratio of two exposures' means is the ratio of their beams times
    the sample's mean transmission. Float64 accumulation, one pass over the frame.
    """
    arr = np.asarray(image)
    level = float(np.mean(arr, dtype=np.float64))
    if dark is not None:
        level -= float(np.mean(np.asarray(dark), dtype=np.float64))
    return level


@dataclass(frozen=True)
class MonitorDecision:
    """What :meth:`MonitorChoice.decide` decided.

    Attributes
    ----------
    key : str or None
        The I0 monitor, or None (none qualifies, or the data cannot tell).
    reason : str
        Plain-language reason (notes, derived start document).
    seen : dict of str to float
        Per evaluated candidate, the fraction of the sample's mean absorption it sees
        (0 upstream, about 1 downstream).
    tracking : dict of str to float
        Per evaluated candidate, the RMS frame-to-frame change of ln(reading / flat counts).
    n_pairs : int
        Sample/flat pairs the decision is based on.
    mean_od : float or None
        Apparent mean optical density of the sample (median over pairs).
    """

    key: str | None
    reason: str
    seen: dict[str, float] = field(default_factory=dict)
    tracking: dict[str, float] = field(default_factory=dict)
    n_pairs: int = 0
    mean_od: float | None = None


class MonitorChoice:
    """Online choice of the I0 monitor among ``candidates`` from sample/flat pairs (module docstring).

    Parameters
    ----------
    candidates : sequence of str
        Scalar reading keys to evaluate.
    n_pairs : int
        Pairs after which :attr:`ready` is True.
    energy_tolerance : float
        Energies (eV) closer than this form a pair.
    """

    def __init__(self, candidates: Sequence[str], *, n_pairs: int = 5, energy_tolerance: float = 0.01) -> None:
        if not candidates:
            raise ValueError("candidates: at least one key is needed")
        if n_pairs < 1:
            raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
        if not energy_tolerance >= 0:
            raise ValueError(f"energy_tolerance must be >= 0, got {energy_tolerance}")
        self.candidates = tuple(dict.fromkeys(str(c) for c in candidates))
        self.n_pairs = int(n_pairs)
        self.energy_tolerance = float(energy_tolerance)
        self._open: dict[str, list[tuple[float, float, dict[str, float]]]] = {"sample": [], "flat": []}
        self._pairs: list[tuple[float, float, dict[str, float], dict[str, float]]] = []  # S, F, a, b
        self._flats: list[tuple[float, dict[str, float]]] = []  # every flat's level and readings, in order

    def add_candidates(self, candidates: Sequence[str]) -> MonitorChoice:
        """Evaluate these keys too (e.g. those of a stream described later); returns self."""
        self.candidates = tuple(dict.fromkeys([*self.candidates, *(str(c) for c in candidates)]))
        return self

    @property
    def ready(self) -> bool:
        """True once :attr:`n_pairs` sample/flat pairs were seen."""
        return len(self._pairs) >= self.n_pairs

    def update(self, kind: str, energy: float, image: np.ndarray, *, dark: np.ndarray | None = None,
               readings: Mapping[str, Any]) -> MonitorChoice:
        """Add one sample or flat frame (its image, the current dark mean and the candidates' readings)."""
        if kind not in ("sample", "flat"):
            raise ValueError(f"kind must be 'sample' or 'flat', got {kind!r}")
        level = frame_level(image, dark)
        vals: dict[str, float] = {}
        for key in self.candidates:
            try:
                v = float(readings[key])
            except (KeyError, TypeError, ValueError):
                continue
            if np.isfinite(v) and v > 0:
                vals[key] = v
        try:
            e = float(energy)
        except (TypeError, ValueError):
            return self
        if not (np.isfinite(level) and level > 0 and np.isfinite(e)):
            return self
        if kind == "flat":
            self._flats.append((level, vals))
        other = self._open["flat" if kind == "sample" else "sample"]
        match = next((i for i, (oe, _, _) in enumerate(other) if abs(oe - e) <= self.energy_tolerance), None)
        if match is None:
            self._open[kind].append((e, level, vals))
            return self
        _, olevel, ovals = other.pop(match)
        if kind == "sample":
            self._pairs.append((level, olevel, vals, ovals))
        else:
            self._pairs.append((olevel, level, ovals, vals))
        return self

    def _tracking(self, key: str) -> float:
        """RMS frame-to-frame change of ln(b / F) over the flats (NaN with fewer than 2 readings)."""
        pts = [(level, vals[key]) for level, vals in self._flats if key in vals]
        if len(pts) < 2:
            return float("nan")
        arr = np.log(np.asarray(pts, dtype=np.float64))
        return float(np.sqrt(np.mean(np.diff(arr[:, 1] - arr[:, 0]) ** 2)))

    def _flat_change(self) -> float:
        """RMS frame-to-frame change of ln(F) over the flats (the beam and the camera's efficiency)."""
        levels = np.log(np.asarray([level for level, _ in self._flats], dtype=np.float64))
        return float(np.sqrt(np.mean(np.diff(levels) ** 2))) if levels.size >= 2 else 0.0

    def decide(self) -> MonitorDecision:
        """The monitor from the pairs seen so far (see the module docstring)."""
        n = len(self._pairs)
        if n == 0:
            return MonitorDecision(None, f"no sample/flat pair at the same energy to compare {list(self.candidates)} "
                                         "with the camera: none used; pass i0_key= to normalize by one")
        s = np.asarray([p[0] for p in self._pairs])
        f = np.asarray([p[1] for p in self._pairs])
        t = np.log(s / f)
        unseen: dict[str, float] = {}  # median (1 - kappa) OD per candidate
        tracking: dict[str, float] = {}
        for key in self.candidates:
            rows = [(i, p[2][key] / p[3][key]) for i, p in enumerate(self._pairs) if key in p[2] and key in p[3]]
            if not rows:
                continue
            idx = np.asarray([i for i, _ in rows])
            unseen[key] = float(np.median(np.log(np.asarray([r for _, r in rows])) - t[idx]))
            tracking[key] = self._tracking(key)
        allowed = MAX_TRACKING_ERROR * self._flat_change() + 0.01
        # the sample's mean OD: from the images (the median beam change between a sample and its
        # flat is ~0), or, larger, the beam-free (1 - kappa) OD of a candidate that follows the flats
        # (an upstream one sees kappa = 0): a lower bound of the OD either way
        mean_od = max([float(np.median(-t))] + [v for k, v in unseen.items() if not tracking[k] > allowed])
        seen = {k: float(1.0 - v / mean_od) if mean_od > 0 else float("nan") for k, v in unseen.items()}
        common = dict(seen=seen, tracking=tracking, n_pairs=n, mean_od=mean_od)
        what = f"{n} sample/flat pair{'s' if n != 1 else ''}"
        if not seen:
            return MonitorDecision(None, f"{list(self.candidates)} have no positive reading in both the sample "
                                         f"and the flat of any of the first {what}: none used", **common)
        if mean_od < MIN_OD:
            return MonitorDecision(None, f"the sample absorbs too little in the first {what} (mean OD "
                                         f"{mean_od:.3f} < {MIN_OD}) to tell an upstream monitor from a chamber "
                                         f"downstream of the sample among {sorted(seen)}: none used; pass i0_key=",
                                   **common)
        untracked = [k for k in seen if tracking[k] > allowed]
        upstream = [k for k in seen if seen[k] <= MAX_SEEN and k not in untracked]
        downstream = [k for k in seen if seen[k] >= MIN_SEEN_DOWNSTREAM and k not in untracked]

        def pct(k: str) -> str:
            return f"{k!r} sees {100 * seen[k]:.0f} %"

        parts = []
        if downstream:
            parts.append(", ".join(pct(k) for k in downstream) + " (it follows the sample's absorption: a chamber "
                         "downstream of the sample?): not used")
        if untracked:
            parts.append(", ".join(f"{k!r} does not follow the flats' counts (frame to frame "
                                   f"{100 * tracking[k]:.1f} % > {100 * allowed:.1f} %)" for k in untracked)
                         + ": not used")
        unclear = [k for k in seen if k not in upstream + downstream + untracked]
        if unclear:
            parts.append(", ".join(pct(k) for k in unclear) + f" (between {100 * MAX_SEEN:.0f} and "
                         f"{100 * MIN_SEEN_DOWNSTREAM:.0f} %: unclear): not used")
        others = "; ".join(parts)
        basis = f"from the first {what}, sample mean OD {mean_od:.2f}"
        if not upstream:
            return MonitorDecision(None, f"no upstream monitor {basis}: {others}; none used; pass i0_key= "
                                         "to normalize by one", **common)
        best = min(upstream, key=lambda k: (tracking[k] if np.isfinite(tracking[k]) else np.inf, k))
        also = [k for k in upstream if k != best]
        why = (f"decided {basis}: it sees {100 * seen[best]:.0f} % of the sample's absorption (an upstream "
               f"monitor) and follows the flats' counts within {100 * tracking[best]:.2f} % frame to frame")
        if also:
            why += f"; {sorted(also)} also qualif{'ies' if len(also) == 1 else 'y'} (the one that follows the flats best is used)"
        if others:
            why += f"; {others}"
        return MonitorDecision(best, why, **common)
