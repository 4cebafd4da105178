"""Bluesky plans for the simulated TXM: the XANES imaging scan of the stream contract.

See ``docs/architecture.md`` ("The stream contract") for the documents :func:`xanes_scan` emits.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg

from txm_live.sim.devices import CLOSED, OPEN, SimTXM

__all__ = ["CONTRACT_VERSION", "coarse_energies", "default_energies", "xanes_scan"]

#: Version of the stream contract written into ``start["txm_live"]["contract_version"]``.
CONTRACT_VERSION = 1


def default_energies() -> np.ndarray:
    """The production energy grid: 6000 -> 7023 eV in 1 eV steps (1024 energies), float64."""
    return np.arange(6000.0, 7024.0, 1.0)


def coarse_energies(n_points: int = 64, *, start: float = 6000.0, stop: float = 7023.0) -> np.ndarray:
    """An evenly spaced grid of ``n_points`` energies over the same range, for quick tests.

    Parameters
    ----------
    n_points : int
        Number of energies (>= 2).
    start, stop : float
        First and last energy (eV).
    """
    if not isinstance(n_points, (int, np.integer)) or n_points < 2:
        raise ValueError(f"n_points must be an int >= 2, got {n_points!r}")
    if not stop > start:
        raise ValueError(f"stop must be greater than start, got start={start!r}, stop={stop!r}")
    return np.linspace(float(start), float(stop), int(n_points))


def _take_darks(txm: SimTXM, n_dark: int) -> Generator[Msg, Any, None]:
    yield from bps.mv(txm.shutter, CLOSED)
    for _ in range(n_dark):
        yield from bps.trigger_and_read([txm.camera], name="dark")


def xanes_scan(
    txm: SimTXM,
    energies: Sequence[float] | np.ndarray,
    *,
    n_dark: int = 5,
    element: str | None = "Nd",
    edges: Sequence[str] | None = ("L3", "L2"),
    md: dict[str, Any] | None = None,
) -> Generator[Msg, Any, str]:
    """TXM XANES imaging scan: darks, then sample and flat image per energy, then darks.

    Parameters
    ----------
    txm : SimTXM
        The microscope (:func:`txm_live.sim.make_txm`).
    energies : sequence of float
        Monochromator energies (eV) in acquisition order (finite, non-empty).
    n_dark : int
        Dark frames (shutter closed) at the start and again at the end (>= 0).
    element, edges : str, sequence of str or None
        Recorded in the start document for the analysis (``txm_live["element"]``, ``["edges"]``);
        ``None`` leaves the key out (the consumer is told or detects them).
    md : dict, optional
        Extra start-document metadata; it may not override the ``txm_live`` key.

    Yields
    ------
    Msg
        Bluesky messages; returns the run uid.

    Notes
    -----
    Streams: ``dark`` (``camera_image``, ``camera_pixel_size``), ``primary`` (``mono_energy``,
    ``camera_image``, ``camera_pixel_size``) and ``flat`` (same keys as primary, sample moved to
    ``txm.sample_out``); the flat event of an energy follows its primary event. The camera is
    staged for the whole run (file-backed cameras open their HDF5 files there). The shutter is
    left closed and the sample in the beam at the end.
    """
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError(f"energies must be a non-empty 1-D sequence of finite numbers, got shape {e.shape}")
    if not isinstance(n_dark, (int, np.integer)) or n_dark < 0:
        raise ValueError(f"n_dark must be an int >= 0, got {n_dark!r}")
    if md is not None and "txm_live" in md:
        raise ValueError("md must not contain the key 'txm_live' (it is written by xanes_scan)")
    cam, mono, stage = txm.camera, txm.mono, txm.stage
    energy_list = [float(x) for x in e]
    contract = {
        "contract_version": CONTRACT_VERSION,
        "energy_key": mono.name,
        "image_key": cam.image.name,
        "pixel_size_key": cam.pixel_size.name,
        "primary_stream": "primary",
        "flat_stream": "flat",
        "dark_stream": "dark",
        "energies": energy_list,
        "image_shape": [int(s) for s in txm.detector_shape],
        "pixel_size_nm": txm.pixel_size_at(energy_list[0]),
    }
    if element is not None:
        contract["element"] = str(element)
    if edges is not None:
        contract["edges"] = [str(x) for x in edges]
    start_md: dict[str, Any] = {
        "plan_name": "xanes_scan",
        "plan_args": {"energies": energy_list, "n_dark": int(n_dark),
                      "element": None if element is None else str(element),
                      "edges": None if edges is None else [str(x) for x in edges]},
        "detectors": [cam.name],
        "motors": [mono.name],
        "num_points": len(energy_list),
        "num_intervals": len(energy_list) - 1,
        "hints": {"dimensions": [([mono.name], "primary")]},
        "sim_seed": txm.model.seed,
        "file_backed": bool(cam.file_backed),
        **(md or {}),
        "txm_live": contract,
    }

    @bpp.stage_decorator([cam])
    @bpp.run_decorator(md=start_md)
    def inner() -> Generator[Msg, Any, None]:
        yield from bps.mv(stage, txm.sample_in)
        yield from _take_darks(txm, int(n_dark))
        yield from bps.mv(txm.shutter, OPEN)
        for energy in energy_list:
            yield from bps.mv(mono, energy)
            yield from bps.trigger_and_read([mono, cam], name="primary")
            yield from bps.mv(stage, txm.sample_out)
            yield from bps.trigger_and_read([mono, cam], name="flat")
            yield from bps.mv(stage, txm.sample_in)
            yield from bps.checkpoint()
        yield from _take_darks(txm, int(n_dark))

    return (yield from inner())
