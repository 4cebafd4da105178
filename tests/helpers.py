"""Helpers shared by the tests: the real data in ``../shared``, and small runs as Bluesky documents.

The test folder is not a package and pytest imports test modules with ``--import-mode=importlib``:
``tests/conftest.py`` loads this file once, by path, as the module ``txm_live_test_helpers``, and
test modules ``import txm_live_test_helpers as helpers``. A subprocess started by a test can
``sys.path.insert(0, "tests"); import helpers``.

* Real data: :data:`SHARED` is ``../shared`` beside the repository root (the CI clone), or the
  nearest ``shared/`` above it (a git worktree one level deeper); :func:`need` skips a test,
  saying which path is absent; :func:`read_xdi` reads a measured XDI spectrum.
* Small runs (reliability and fuzz tests): frames are 10x12 pixels, 14 energies across a made-up
  edge at 6208 eV; flats and darks are identical at every energy, so a dropped or repeated
  flat/dark cannot change a map. :func:`step_analysis` is a deterministic stand-in analysis.
* File-backed variants of a run: :func:`to_resource_datum` (AD_HDF5 resource/datum documents)
  and :func:`to_stream_datum` (stream_resource/stream_datum documents).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import event_model
import numpy as np
import pytest

import txm_live.errors as errors_module
from txm_live.edges import EdgeWindow
from txm_live.results import EdgeResult, RunResult

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- real data
def _shared() -> Path:
    """``../shared`` beside the repository root, or the nearest ``shared/`` above it (worktrees)."""
    for parent in REPO.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared"
    return REPO.parent / "shared"


SHARED = _shared()
#: Measured reference spectra (XDI files, the Fe K library, Ni K standards, a real Ni K energy list).
REFERENCE = SHARED / "data" / "xas-reference"
#: The real ALS STXM Fe L3/L2 stack.
STXM_FE_STACK = SHARED / "data" / "real-stxm-fe" / "als_stxm_fe_l23_71214098.npz"


def need(*paths: Path) -> Path:
    """Skip the calling test, naming the path, unless every path exists; returns the first."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared data absent: {path}")
    return paths[0]


def read_xdi(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Energy and mu = ln(i0/itrans) of an XDI file, columns found from the ``Column.N`` header
    (their order differs per file)."""
    cols: dict[str, int] = {}
    with open(path) as fh:
        for line in fh:
            m = re.match(r"#\s*Column\.(\d+):\s*(\w+)", line)
            if m:
                cols[m.group(2).lower()] = int(m.group(1)) - 1
    data = np.loadtxt(path, comments="#")
    return data[:, cols["energy"]], np.log(data[:, cols["i0"]] / data[:, cols["itrans"]])


def reference_xdi(name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_xdi` of ``REFERENCE / name``; skips the calling test when it is absent."""
    return read_xdi(need(REFERENCE / name))


# ------------------------------------------------------------------------------- small runs
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


def small_callback(**options):  # noqa: ANN201 - a XanesLiveCallback (imported lazily)
    """A live callback for the small runs: :func:`step_analysis` in process, no EXAFS, no registration.

    ``options`` override these or add others (keyword arguments of ``XanesLiveCallback``).
    """
    from txm_live.callbacks.live import XanesLiveCallback

    opts = dict(windows=(WINDOW,), analysis=step_analysis, exafs=False, register=False, analysis_process=False)
    opts.update(options)
    return XanesLiveCallback(**opts)


def feed(cb, docs: list[tuple[str, dict]], *, timeout: float = 60.0) -> list:  # noqa: ANN001 - a live callback
    """Send ``docs`` to the live callback ``cb``, wait for the results and close it.

    Returns what ``cb.wait()`` returns (the finished runs' results); both steps are bounded by ``timeout``.
    """
    for name, doc in docs:
        cb(name, doc)
    results = cb.wait(timeout=timeout)
    cb.close(timeout=timeout)
    return results


def big_result(uid: str) -> RunResult:
    """A result with two 700x700 maps of random values (incompressible): too large for a 2 MiB disk."""
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 5, (700, 700)).astype(np.int32)  # incompressible: ~1 MB in the file
    edge = EdgeResult(edge="L3", e0=6208.0, energies=np.arange(10.0), labels=labels, phase_names=("a",),
                      mean_spectra=np.zeros((1, 10), np.float32), spread=np.zeros((1, 10), np.float32),
                      counts=np.array([1]), snr=rng.random((700, 700), dtype=np.float32),
                      mask=labels >= 0, eps=0.1, min_samples=5, n_components=2)
    return RunResult(run_uid=uid, edges={"L3": edge})


# ------------------------------------------------------------------------------- file-backed runs
HDF5_DATASET = "/entry/data/data"  # where the frames are in each file (as the area detector writes them)


def _frames_to_hdf5(docs: list[tuple[str, dict]], directory: Path) -> tuple[dict, dict[str, str], dict[str, Path]]:
    """Write each stream's event images (``camera_image``) to ``<directory>/<stream>.h5``.

    Returns the start document, the stream name of each descriptor uid and each stream's file.
    """
    import h5py

    start = docs[0][1]
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    images: dict[str, list[np.ndarray]] = {}
    for n, d in docs:
        if n == "event":
            images.setdefault(names[d["descriptor"]], []).append(d["data"]["camera_image"])
    paths = {}
    for stream, frames in images.items():
        paths[stream] = path = directory / f"{stream}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset(HDF5_DATASET, data=np.stack(frames))
    return start, names, paths


def to_resource_datum(docs: list[tuple[str, dict]], directory: Path) -> list[tuple[str, dict]]:
    """The same run with images in AD_HDF5 files referenced by old-style resource/datum documents."""
    start, names, paths = _frames_to_hdf5(docs, directory)
    resources = {stream: event_model.ComposeResource(start=start)("AD_HDF5", str(directory), path.name,
                                                                   {"frame_per_point": 1})
                 for stream, path in paths.items()}
    out: list[tuple[str, dict]] = []
    counters: dict[str, int] = {}
    for n, d in docs:
        if n == "descriptor":
            d = dict(d)
            d["data_keys"] = {k: dict(v) for k, v in d["data_keys"].items()}
            d["data_keys"]["camera_image"]["external"] = "FILESTORE:"
            out.append((n, d))
            out.append(("resource", resources[d["name"]].resource_doc))
        elif n == "event":
            stream = names[d["descriptor"]]
            i = counters.get(stream, 0)
            counters[stream] = i + 1
            datum = resources[stream].compose_datum(datum_kwargs={"point_number": i})
            out.append(("datum", datum))
            ev = dict(d)
            ev["data"] = dict(d["data"], camera_image=datum["datum_id"])
            ev["filled"] = {"camera_image": False}
            out.append((n, ev))
        else:
            out.append((n, d))
    return out


def to_stream_datum(docs: list[tuple[str, dict]], directory: Path, *, constant_seq: bool = False,
                    negative: int | None = None) -> list[tuple[str, dict]]:
    """The run with file-backed images (stream_resource/stream_datum, one per event, HDF5 files).

    ``constant_seq``: every event gets ``seq_num`` 1; ``negative``: that event's stream_datum
    index is -1.
    """
    start, names, paths = _frames_to_hdf5(docs, directory)
    bundles = {stream: event_model.compose_stream_resource(
        mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key="camera_image",
        parameters={"dataset": HDF5_DATASET}, start=start) for stream, path in paths.items()}
    out, counters, descs = [], {}, {}
    for n, d in docs:
        if n == "descriptor":
            d = dict(d, data_keys={k: dict(v) for k, v in d["data_keys"].items()})
            d["data_keys"]["camera_image"]["external"] = "STREAM:"
            descs[d["uid"]] = d
            out += [(n, d), ("stream_resource", bundles[d["name"]].stream_resource_doc)]
        elif n == "event":
            stream = names[d["descriptor"]]
            i = counters.get(stream, 0)
            counters[stream] = i + 1
            lo = i if negative is None or i != negative else -1
            datum = bundles[stream].compose_stream_datum(
                indices={"start": lo, "stop": lo + 1}, seq_nums={"start": i + 1, "stop": i + 2},
                descriptor=descs[d["descriptor"]], validate=False)
            ev = dict(d, data={k: v for k, v in d["data"].items() if k != "camera_image"},
                      timestamps={k: v for k, v in d["timestamps"].items() if k != "camera_image"},
                      seq_num=1 if constant_seq else i + 1)
            out += [("stream_datum", datum), (n, ev)]
        else:
            out.append((n, d))
    return out


@contextmanager
def local_client(n_workers: int = 2) -> Iterator:
    """A real Dask ``LocalCluster`` (worker processes on 127.0.0.1) and its ``Client``, closed after."""
    from dask.distributed import Client

    from txm_live.distributed import local_cluster

    cluster = local_cluster(n_workers)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def blobs(n: int, d: int, seed: int) -> np.ndarray:
    """Five Gaussian blobs of different widths in uniform noise, shuffled."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(5, d)) * 3
    parts = [rng.normal(c[i], 0.6 + 0.2 * i, (n // 6, d)) for i in range(5)]
    parts.append(rng.uniform(-8, 8, (n - 5 * (n // 6), d)))
    X = np.concatenate(parts)
    return X[rng.permutation(len(X))]
