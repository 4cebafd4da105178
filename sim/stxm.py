"""A measured STXM stack as Bluesky documents (real data through the live pipeline).

:func:`stxm_documents` turns an aligned scanning transmission X-ray microscopy (STXM) stack, such as
the ALS Fe L3/L2 stack ``als_stxm_fe_l23_71214098.npz`` (``counts`` (n_energies, H, W),
``energy_ev``, ``pixel_size_nm``; see ``../shared/data/real-stxm-fe/README.md``), into the documents
of one run of the txm-live stream contract, validated by event-model: a ``primary`` stream with
one image per energy and a ``flat`` stream with the blank-beam level at that energy. Feed them to
any document consumer, e.g. ``for name, doc in stxm_documents(path): callback(name, doc)``.

The flat: a STXM has no flat-field image (the beam is a focused spot scanned over the sample), so
the incident intensity of an energy is the same for every pixel and is measured on the blank beam
around the particle. :func:`blank_beam_level` takes, at each energy, the median counts of the
blank-beam pixels: those whose stack-mean counts reach :data:`BLANK_FRACTION` of the 99th
percentile of the stack-mean counts (the brightest pixels; no sample absorbs nothing). The flat
event of an energy carries a constant image of that level. No dark stream is emitted: STXM
counting detectors have no dark offset, and the consumer's "no dark frames" warning says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["BLANK_FRACTION", "STXM_IMAGE_KEY", "blank_beam_level", "load_stxm_stack", "stxm_documents"]

#: Stack-mean counts of a blank-beam pixel, relative to the 99th percentile of all pixels.
BLANK_FRACTION: float = 0.97
#: Data key of the images.
STXM_IMAGE_KEY: str = "stxm_image"
_ENERGY_KEY = "mono_energy"
_PIXEL_KEY = "stxm_pixel_size"


def load_stxm_stack(npz_path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], NDArray[np.float64], float]:
    """Read ``counts`` (n_energies, H, W) float32, ``energy_ev`` (eV) and ``pixel_size_nm`` from an npz.

    Raises
    ------
    ValueError
        If an array is missing or the shapes disagree (the message names it).
    """
    path = Path(npz_path)
    with np.load(path) as data:
        for key in ("counts", "energy_ev", "pixel_size_nm"):
            if key not in data.files:
                raise ValueError(f"npz_path {path}: array {key!r} missing (has {sorted(data.files)})")
        counts = np.asarray(data["counts"], dtype=np.float32)
        energies = np.asarray(data["energy_ev"], dtype=np.float64)
        pixel = float(data["pixel_size_nm"])
    if counts.ndim != 3 or energies.shape != (counts.shape[0],):
        raise ValueError(f"npz_path {path}: counts {counts.shape} and energy_ev {energies.shape} disagree")
    if not (np.all(np.isfinite(energies)) and pixel > 0):
        raise ValueError(f"npz_path {path}: energies must be finite and pixel_size_nm > 0")
    return counts, energies, pixel


def blank_beam_level(
    counts: NDArray[np.floating], *, fraction: float = BLANK_FRACTION
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Incident intensity per energy from the blank-beam pixels of a stack.

    Parameters
    ----------
    counts : ndarray, shape (n_energies, H, W)
        Transmitted counts.
    fraction : float, optional
        A pixel is blank beam if its stack-mean counts are at least ``fraction`` times the 99th
        percentile of the stack-mean counts; in (0, 1].

    Returns
    -------
    i0 : ndarray of float64, shape (n_energies,)
        Median counts of the blank-beam pixels at each energy.
    blank : ndarray of bool, shape (H, W)
        The blank-beam pixels.

    Notes
    -----
    On the ALS Fe stack 46 % of the pixels are blank beam and ``i0`` follows the shape of the
    shipped ``i0_counts`` spectrum to 0.1 % (that spectrum is ~2.25 times brighter: another dwell).
    The median of thousands of pixels has a relative noise of ~0.1 %, far below a pixel's.
    """
    c = np.asarray(counts)
    if c.ndim != 3:
        raise ValueError(f"counts must be (n_energies, H, W), got shape {c.shape}")
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    mean = c.mean(axis=0, dtype=np.float64)
    blank = mean >= fraction * float(np.percentile(mean, 99.0))
    i0 = np.median(c[:, blank], axis=1).astype(np.float64)
    return i0, blank


def stxm_documents(
    npz_path: str | os.PathLike[str], *, md: dict[str, Any] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The documents of one run replaying a measured STXM stack.

    Parameters
    ----------
    npz_path : path
        npz file with ``counts`` (n_energies, H, W), ``energy_ev`` (eV) and ``pixel_size_nm``.
    md : dict, optional
        Extra start-document metadata (may not contain ``txm_live``).

    Yields
    ------
    (name, doc)
        ``start``, descriptors, one ``primary`` then one ``flat`` event per energy, ``stop``.

    Notes
    -----
    Images are float32 counts (``dtype_numpy "<f4"``, inline numpy arrays, as a RunEngine emits
    them); energies in eV (``mono_energy``), pixel size 80 nm for the ALS stack. The start document
    carries the stream-contract keys (stream and data-key names, the planned energies) but neither
    the element nor the edges, which the consumer is told or detects. Memory: the stack is read
    once (11 MB for the ALS stack); the flat images are built one at a time.
    """
    if md is not None and "txm_live" in md:
        raise ValueError("md must not contain the key 'txm_live' (it is written by stxm_documents)")
    from event_model import compose_run

    counts, energies, pixel = load_stxm_stack(npz_path)
    i0, blank = blank_beam_level(counts)
    n, h, w = counts.shape
    contract = {
        "contract_version": 1,
        "energy_key": _ENERGY_KEY,
        "image_key": STXM_IMAGE_KEY,
        "pixel_size_key": _PIXEL_KEY,
        "primary_stream": "primary",
        "flat_stream": "flat",
        "dark_stream": "dark",
        "energies": [float(x) for x in energies],
        "image_shape": [h, w],
        "pixel_size_nm": pixel,
    }
    start_md = {
        "plan_name": "stxm_stack_replay",
        "source_file": Path(npz_path).name,
        "instrument": "STXM",
        "flat_definition": f"blank-beam level: median of the {int(blank.sum())} pixels whose stack-mean "
                           f"counts reach {BLANK_FRACTION} x the 99th percentile",
        "num_points": int(n),
        **(md or {}),
        "txm_live": contract,
    }
    bundle = compose_run(metadata=start_md)
    yield "start", bundle.start_doc
    data_keys = {
        _ENERGY_KEY: {"source": "file:energy_ev", "dtype": "number", "shape": [], "units": "eV",
                      "dtype_numpy": "<f8"},
        STXM_IMAGE_KEY: {"source": "file:counts", "dtype": "array", "shape": [h, w], "dtype_numpy": "<f4"},
        _PIXEL_KEY: {"source": "file:pixel_size_nm", "dtype": "number", "shape": [], "units": "nm",
                     "dtype_numpy": "<f8"},
    }
    streams = {}
    for name in ("primary", "flat"):
        desc = bundle.compose_descriptor(name=name, data_keys=data_keys)
        streams[name] = desc
        yield "descriptor", desc.descriptor_doc
    for i in range(n):
        for name, image in (("primary", counts[i]), ("flat", np.full((h, w), i0[i], dtype=np.float32))):
            data = {_ENERGY_KEY: float(energies[i]), STXM_IMAGE_KEY: image, _PIXEL_KEY: pixel}
            ts = dict.fromkeys(data, 0.0)
            yield "event", streams[name].compose_event(data=data, timestamps=ts, seq_num=i + 1)
    yield "stop", bundle.compose_stop(exit_status="success")
