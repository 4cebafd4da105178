"""Small noise-free TXM runs as Bluesky documents and a deterministic stand-in analysis.

Shared by the reliability and fuzz tests. The test folder is not a package: test modules load
this file with ``importlib`` (see :func:`load_helpers` in each). Frames are 10x12 pixels, 14
energies across a made-up edge at 6208 eV; flats and darks are identical at every energy, so a
dropped or repeated flat/dark cannot change a map.
"""

from __future__ import annotations

import event_model
import numpy as np

import txm_live.errors as errors_module
from txm_live.edges import EdgeWindow
from txm_live.results import EdgeResult

H, W = 10, 12
ENERGIES = np.arange(6178.0, 6248.0, 5.0)  # 14 energies across a made-up edge at 6208 eV
WINDOW = EdgeWindow("Nd", "L3", 6208.0, pre=(-30.0, -10.0), post=(20.0, 39.0))
PIXEL_NM = 30.0


def step_analysis(energies: np.ndarray, block: np.ndarray, *, window: EdgeWindow, valid=None) -> EdgeResult:
    """Deterministic stand-in for analyze_edge: phases = edge-step classes (any data change shows)."""
    n_e, h, w = block.shape
    y = block.reshape(n_e, -1).astype(np.float64)
    pre = energies <= window.e0 + window.pre[1]
    post = energies >= window.e0 + window.post[0]
    if not (pre.any() and post.any()):
        raise errors_module.InsufficientDataError(f"{window.name}: no pre- or post-edge energy")
    step = y[post].mean(axis=0) - y[pre].mean(axis=0)
    labels = np.digitize(step, [0.15, 0.45, 0.75]) - 1
    if valid is not None:
        labels[~valid.ravel()] = -1
    labels = labels.reshape(h, w)
    means = np.stack([y[:, labels.ravel() == k].mean(axis=1) if np.any(labels == k) else np.zeros(n_e)
                      for k in range(3)]).astype(np.float32)
    return EdgeResult(
        edge=window.edge, e0=window.e0, energies=np.array(energies), labels=labels, phase_names=("a", "b", "c"),
        mean_spectra=means, spread=np.zeros_like(means), counts=np.array([(labels == k).sum() for k in range(3)]),
        snr=step.reshape(h, w).astype(np.float32), mask=labels >= 0, eps=0.0, min_samples=0, n_components=n_e,
    )


def make_run(seed: int = 0, *, pages: bool = False) -> list[tuple[str, dict]]:
    """A small noise-free run (flats identical at every energy, darks identical)."""
    rng = np.random.default_rng(seed)
    jump = rng.uniform(0.0, 1.0, (H, W))
    jump[:, :3] = 0.0  # no sample there
    flat = np.full((H, W), 4000, np.uint16)
    dark = np.full((H, W), 100, np.uint16)
    bundle = event_model.compose_run(metadata={"plan_name": "fuzz", "scan_id": 7, "txm_live": {
        "energy_key": "mono_energy", "image_key": "camera_image", "pixel_size_key": "camera_pixel_size",
        "energies": [float(e) for e in ENERGIES], "image_shape": [H, W], "pixel_size_nm": PIXEL_NM}})
    img = {"source": "sim", "dtype": "array", "shape": [H, W], "dtype_numpy": "<u2"}
    num = {"source": "sim", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}
    prim = bundle.compose_descriptor(name="primary", data_keys={"mono_energy": num, "camera_image": img,
                                                                "camera_pixel_size": dict(num)})
    flats = bundle.compose_descriptor(name="flat", data_keys={"mono_energy": num, "camera_image": img})
    darks = bundle.compose_descriptor(name="dark", data_keys={"camera_image": img})
    docs = [("start", bundle.start_doc), ("descriptor", darks.descriptor_doc)]
    docs += [("event", darks.compose_event(data={"camera_image": dark}, timestamps={"camera_image": 0.0}))
             for _ in range(2)]
    docs += [("descriptor", prim.descriptor_doc), ("descriptor", flats.descriptor_doc)]
    prim_events, flat_events = [], []
    for e in ENERGIES:
        od = 0.2 + jump * (e > WINDOW.e0)
        sample = (100 + 3900 * np.exp(-od)).round().astype(np.uint16)
        prim_events.append(prim.compose_event(
            data={"mono_energy": float(e), "camera_image": sample, "camera_pixel_size": PIXEL_NM},
            timestamps={"mono_energy": 0.0, "camera_image": 0.0, "camera_pixel_size": 0.0}))
        flat_events.append(flats.compose_event(data={"mono_energy": float(e), "camera_image": flat},
                                               timestamps={"mono_energy": 0.0, "camera_image": 0.0}))
    if pages:
        docs.append(("event_page", event_model.pack_event_page(*prim_events)))
        docs.append(("event_page", event_model.pack_event_page(*flat_events)))
    else:
        for pe, fe in zip(prim_events, flat_events):
            docs += [("event", pe), ("event", fe)]
    docs.append(("stop", bundle.compose_stop()))
    return docs
