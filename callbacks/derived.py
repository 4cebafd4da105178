"""The derived run: txm-live results published as Bluesky documents.

:class:`DerivedRun` composes, with :func:`event_model.compose_run`, one run per raw run whose
start document links back with ``raw_run_uid`` and records under ``txm_live`` the element, the
edges (acquisition order), where they came from, and the windows. Streams are named per edge
(``<edge>`` is the lower-case edge name: ``l3``, ``l2``, ``k``...), each with one event unless
noted:

==============================  ===============================================================
``<edge>_phases``               ``labels`` (H, W) int32 phase map, ``mask`` (H, W) bool, ``snr``
                                (H, W) float32, ``energies`` (n_e,), ``mean_spectra`` /
                                ``spread`` (n_phases, n_e), ``counts`` (n_phases,), ``eps``,
                                ``min_samples``, ``n_components``; edge, element, e0 and phase
                                names in the descriptor's ``configuration``.
``<edge>_preview``              the same for the fast streaming preview of the edge.
``<ref>_<other>_comparison``    ``reference`` and ``other`` edge names, ``agreement`` of their
                                phase maps, ``mapping`` (other phase -> reference phase); one
                                stream per pair of edges of the same element (none for a K-only
                                run).
``<edge>_exafs``                one event per phase of the edge: ``phase``, ``k``, ``chi``,
                                ``r``, ``chir_mag``, ``first_shell_r``.
``log``                         one event per named error (and ``Note: ...`` / ``Warning: ...``
                                lines) met while processing the raw run.
==============================  ===============================================================

Comparisons and EXAFS get one stream per pair / per edge (not one shared stream) because a
stream's events must all have the array shapes its descriptor declares: phase counts and k grids
differ between edges. Every data key sets ``dtype_numpy``; all documents are validated by
event-model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import event_model
import numpy as np

from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult

__all__ = ["DerivedRun"]


def _data_key(value: Any, source: str) -> dict:
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return {"source": source, "dtype": "string", "shape": [], "dtype_numpy": arr.dtype.str}
    if arr.ndim == 0:
        if arr.dtype.kind == "b":
            dtype = "boolean"
        elif arr.dtype.kind in "ui":
            dtype = "integer"
        else:
            dtype = "number"
        return {"source": source, "dtype": dtype, "shape": [], "dtype_numpy": arr.dtype.str}
    return {"source": source, "dtype": "array", "shape": list(arr.shape), "dtype_numpy": arr.dtype.str}


class DerivedRun:
    """Composer of the derived run of one raw run.

    Parameters
    ----------
    raw_start : dict
        Start document of the raw run.
    emit : callable
        ``emit(name, doc)`` receives every derived document.
    metadata : dict, optional
        Goes into the derived start document under ``txm_live``.

    Notes
    -----
    Documents hold numpy arrays (not lists): the label map of a 602x643 frame is 1.5 MB. Only the
    ``source`` string ``"txm-live"`` identifies the producer.
    """

    def __init__(self, raw_start: dict, emit: Callable[[str, dict], None], *, metadata: dict | None = None) -> None:
        self.raw_uid = raw_start["uid"]
        self._emit = emit
        md = {
            "raw_run_uid": self.raw_uid,
            "plan_name": "txm_live_analysis",
            "txm_live": dict(metadata or {}),
        }
        for key in ("scan_id", "sample", "proposal_id"):
            if key in raw_start:
                md[key] = raw_start[key]
        self._bundle = event_model.compose_run(metadata=md)
        self._descriptors: dict[str, Any] = {}
        self.started = False
        self.stopped = False

    @property
    def uid(self) -> str:
        """uid of the derived run's start document."""
        return self._bundle.start_doc["uid"]

    def _ensure_started(self) -> None:
        if not self.started:
            self.started = True
            self._emit("start", self._bundle.start_doc)

    def _event(self, stream: str, data: dict[str, Any], *, configuration: dict | None = None) -> None:
        self._ensure_started()
        bundle = self._descriptors.get(stream)
        if bundle is None:
            data_keys = {k: _data_key(v, "txm-live") for k, v in data.items()}
            cfg = None
            if configuration:
                cfg = {
                    stream: {
                        "data": configuration,
                        "timestamps": {k: self._bundle.start_doc["time"] for k in configuration},
                        "data_keys": {k: _data_key(v, "txm-live") for k, v in configuration.items()},
                    }
                }
            bundle = self._bundle.compose_descriptor(
                name=stream,
                data_keys=data_keys,
                configuration=cfg or {},
                object_keys={stream: list(data_keys)},
            )
            self._descriptors[stream] = bundle
            self._emit("descriptor", bundle.descriptor_doc)
        import time

        now = time.time()
        doc = bundle.compose_event(data=data, timestamps={k: now for k in data})
        self._emit("event", doc)

    # ------------------------------------------------------------ streams
    def edge(self, result: EdgeResult, *, stream: str | None = None) -> None:
        """Publish the phase analysis of one edge in stream ``<edge>_phases`` (or ``stream``)."""
        name = stream or f"{result.edge.lower()}_phases"
        data = {
            "labels": np.asarray(result.labels, dtype=np.int32),
            "mask": np.asarray(result.mask, dtype=bool),
            "snr": np.asarray(result.snr, dtype=np.float32),
            "energies": np.asarray(result.energies, dtype=np.float64),
            "mean_spectra": np.asarray(result.mean_spectra, dtype=np.float32),
            "spread": np.asarray(result.spread, dtype=np.float32),
            "counts": np.asarray(result.counts, dtype=np.int64),
            "eps": float(result.eps),
            "min_samples": int(result.min_samples),
            "n_components": int(result.n_components),
            "n_phases": int(result.n_phases),
        }
        cfg = {
            "edge": result.edge,
            "element": result.element,
            "e0": float(result.e0),
            "phase_names": " | ".join(result.phase_names),
            "outlier_phases": ",".join(str(i) for i in result.outlier_phases),
        }
        self._event(name, data, configuration=cfg)

    def comparison(self, comparison: EdgePairComparison) -> None:
        """Publish the cross-check of two edges (stream ``<reference>_<other>_comparison``)."""
        data: dict[str, Any] = {
            "reference": str(comparison.reference),
            "other": str(comparison.other),
            "agreement": float(comparison.agreement),
            "mapping": np.asarray(comparison.mapping, dtype=np.int64),
        }
        self._event(f"{comparison.reference.lower()}_{comparison.other.lower()}_comparison", data)

    def exafs(self, results: tuple[ExafsResult, ...] | list[ExafsResult], *, edge: str) -> None:
        """Publish the EXAFS of each phase of ``edge`` (stream ``<edge>_exafs``, one event per phase)."""
        for r in results:
            self._event(
                f"{edge.lower()}_exafs",
                {
                    "phase": int(r.phase),
                    "k": np.asarray(r.k, dtype=np.float64),
                    "chi": np.asarray(r.chi, dtype=np.float64),
                    "kweight": int(r.kweight),
                    "r": np.asarray(r.r, dtype=np.float64),
                    "chir_mag": np.asarray(r.chir_mag, dtype=np.float64),
                    "first_shell_r": float(r.first_shell_r),
                },
            )

    def log(self, message: str) -> None:
        """Publish one named error (stream ``log``)."""
        self._event("log", {"message": str(message)})

    def stop(self, *, exit_status: str = "success", reason: str = "") -> None:
        """Emit the stop document (once)."""
        if self.stopped:
            return
        self._ensure_started()
        self.stopped = True
        self._emit("stop", self._bundle.compose_stop(exit_status=exit_status, reason=reason[:2000]))
