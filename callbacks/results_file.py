"""Write txm-live results to disk (HDF5) and back into the Tiled catalog.

File layout of ``OUT/<raw run uid>/phases.h5`` (h5py, one file per run)::

    /                         attrs: format, txm_live_version, raw_run_uid, created (ISO 8601 UTC),
                                     n_frames, errors (list of str), parameters (JSON),
                                     incomplete (bool: interrupted run, partial results)
    /l3, /l2, /l3_preview     one group per analysed edge (absent when the edge was not analysed)
        attrs: edge, e0 [eV], eps, min_samples, n_components, phase_names, outlier_phases,
               timings (JSON, seconds)
        labels        (H, W) int32     phase index per pixel, -1 = masked
        mean_spectra  (n_phases, n_e)  edge-step normalized mean spectrum per phase
        energies      (n_e,)           eV
        spread        (n_phases, n_e)  standard deviation per phase
        counts        (n_phases,)      pixels per phase
        snr           (H, W) float32   edge-step signal-to-noise ratio
        mask          (H, W) bool      pixels that entered the clustering
    /comparison/agreement     scalar, fraction of pixels whose L2 phase matches L3 (absent if None)
    /exafs/phase_<i>          attrs: phase, kweight, first_shell_r [Angstrom]
        k [1/Angstrom], chi, r [Angstrom], chir_mag

Every dataset has a ``units`` attribute (``""`` when dimensionless) and a ``long_name``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from txm_live.errors import DocumentError, ResultsWriteError
from txm_live.results import EdgeResult, ExafsResult, RunResult

__all__ = ["FORMAT", "collect_documents", "publish_results", "read_results", "write_results"]

logger = logging.getLogger(__name__)

FORMAT = "txm-live phases v1"

_EDGE_DATASETS: dict[str, tuple[str, str]] = {
    # name: (units, long name)
    "labels": ("", "phase index per pixel (-1: masked)"),
    "mean_spectra": ("", "edge-step normalized mean spectrum per phase"),
    "energies": ("eV", "photon energy"),
    "spread": ("", "standard deviation of the normalized spectra per phase"),
    "counts": ("pixel", "number of pixels per phase"),
    "snr": ("", "edge-step signal-to-noise ratio per pixel"),
    "mask": ("", "pixel entered the clustering"),
}
_EXAFS_DATASETS: dict[str, tuple[str, str]] = {
    "k": ("1/angstrom", "photo-electron wavenumber"),
    "chi": ("", "chi(k), unweighted"),
    "r": ("angstrom", "radial distance (not phase-corrected)"),
    "chir_mag": ("angstrom^(-1-kweight)", "|chi(R)| of the k-weighted chi(k)"),
}
_EDGE_GROUPS = ("l3", "l2", "l3_preview")


def _version() -> str:
    try:
        from txm_live import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the package is always importable here
        return "unknown"


def _put(group: Any, name: str, data: np.ndarray, units: str, long_name: str) -> None:
    data = np.asarray(data)
    kwargs: dict[str, Any] = {}
    if data.ndim >= 2 and data.size >= 4096:
        kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    ds = group.create_dataset(name, data=data, **kwargs)
    ds.attrs["units"] = units
    ds.attrs["long_name"] = long_name


def _write_edge(group: Any, edge: EdgeResult) -> None:
    group.attrs["edge"] = edge.edge
    group.attrs["e0"] = float(edge.e0)
    group.attrs["e0_units"] = "eV"
    group.attrs["eps"] = float(edge.eps)
    group.attrs["min_samples"] = int(edge.min_samples)
    group.attrs["n_components"] = int(edge.n_components)
    group.attrs["n_phases"] = int(edge.n_phases)
    group.attrs["phase_names"] = json.dumps(list(edge.phase_names))
    group.attrs["outlier_phases"] = json.dumps([int(i) for i in edge.outlier_phases])
    group.attrs["timings"] = json.dumps({str(k): float(v) for k, v in edge.timings.items()})
    for name, (units, long_name) in _EDGE_DATASETS.items():
        _put(group, name, getattr(edge, name), units, long_name)


def _read_edge(group: Any) -> EdgeResult:
    arrays = {name: group[name][()] for name in _EDGE_DATASETS}
    return EdgeResult(
        edge=str(group.attrs["edge"]),
        e0=float(group.attrs["e0"]),
        phase_names=tuple(json.loads(group.attrs["phase_names"])),
        eps=float(group.attrs["eps"]),
        min_samples=int(group.attrs["min_samples"]),
        n_components=int(group.attrs["n_components"]),
        outlier_phases=tuple(int(i) for i in json.loads(group.attrs["outlier_phases"])),
        timings={str(k): float(v) for k, v in json.loads(group.attrs["timings"]).items()},
        **arrays,
    )


def write_results(result: RunResult, directory: str | os.PathLike[str], *,
                  parameters: dict[str, Any] | None = None) -> Path:
    """Write one run's results to ``directory/<run uid>/phases.h5``.

    Parameters
    ----------
    result : RunResult
        Results of one run (``result.run_uid`` names the folder).
    directory : path
        Output folder ``OUT`` (created if needed).
    parameters : dict, optional
        Extra provenance (analysis options, source catalog...), stored as JSON in the root
        attribute ``parameters``. The DBSCAN ``eps``/``min_samples`` of each edge are always
        stored on the edge group.

    Returns
    -------
    Path
        The file written. An existing file is replaced atomically (written to a temporary file
        in the same folder, then renamed), so a reader never sees a half-written file.

    Raises
    ------
    ResultsWriteError
        The file could not be written (full disk, no permission...); nothing is left behind and
        an older file of the run stays intact.

    Notes
    -----
    The whole file is built in memory first (:func:`_hdf5_image`), then its bytes are written:
    HDF5 never touches a disk that may fill up (h5py can crash the interpreter on ``ENOSPC``).
    Size: two ``(H, W)`` maps per edge (int32 labels, float32 SNR) plus a bool mask, gzip
    compressed; ~3 MB per edge for a 602 x 643 frame.
    """
    if not isinstance(result, RunResult):
        raise ValueError(f"result must be a RunResult, got {type(result).__name__}")
    uid = str(result.run_uid)
    if not uid or "/" in uid or uid in (".", ".."):
        raise ValueError(f"result.run_uid is not usable as a folder name: {uid!r}")
    image = _hdf5_image(result, parameters)
    folder = Path(directory) / uid
    path = folder / "phases.h5"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, image)
    except OSError as exc:
        raise ResultsWriteError(f"cannot write the results of run {uid} to {path}: {exc}") from exc
    logger.info("results of run %s written to %s", uid, path)
    return path


def _hdf5_image(result: RunResult, parameters: dict[str, Any] | None) -> bytes:
    """The complete ``phases.h5`` file as bytes, built in memory (no file system involved).

    h5py (the HDF5 C library) can bring the interpreter down when a write fails half-way on a
    full disk; building the file image in memory keeps HDF5 away from the disk altogether.
    """
    import h5py

    # HDF5's in-memory "core" driver without backing store: the name only identifies the image
    # (a file-like BytesIO target was measured to keep ~35 kB per file alive in long sessions)
    name = f"txm-live-results-{uuid.uuid4().hex}.h5"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        _write_layout(f, result, parameters)
        f.flush()
        return f.id.get_file_image()


def _write_layout(f: Any, result: RunResult, parameters: dict[str, Any] | None) -> None:
    """Groups, datasets and attributes of ``phases.h5`` (see the module docstring) into ``f``."""
    f.attrs["format"] = FORMAT
    f.attrs["txm_live_version"] = _version()
    f.attrs["raw_run_uid"] = str(result.run_uid)
    f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    f.attrs["n_frames"] = int(result.n_frames)
    f.attrs["errors"] = json.dumps(list(result.errors))
    f.attrs["incomplete"] = bool(getattr(result, "incomplete", False))
    f.attrs["parameters"] = json.dumps(parameters or {}, default=str)
    for name in _EDGE_GROUPS:
        edge = getattr(result, name)
        if edge is not None:
            _write_edge(f.create_group(name), edge)
    comp = f.create_group("comparison")
    if result.l2_l3_agreement is not None:
        ds = comp.create_dataset("agreement", data=float(result.l2_l3_agreement))
        ds.attrs["units"] = ""
        ds.attrs["long_name"] = "fraction of pixels whose L2 phase matches their L3 phase"
    ex = f.create_group("exafs")
    for item in result.exafs:
        g = ex.create_group(f"phase_{int(item.phase)}")
        g.attrs["phase"] = int(item.phase)
        g.attrs["kweight"] = int(item.kweight)
        g.attrs["first_shell_r"] = float(item.first_shell_r)
        g.attrs["first_shell_r_units"] = "angstrom"
        for name, (units, long_name) in _EXAFS_DATASETS.items():
            _put(g, name, getattr(item, name), units, long_name)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it, rename it onto ``path``.

    A failure (``ENOSPC``, ``EDQUOT``, ``EACCES``...) raises :class:`OSError` and removes the
    temporary file; ``path`` is either the old file or the complete new one, never a partial one.
    """
    tmp = path.parent / f".{path.stem}-{uuid.uuid4().hex}{path.suffix}"
    # usual permissions (umask applies), unlike tempfile.mkstemp's 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_results(path: str | os.PathLike[str]) -> RunResult:
    """Read a file written by :func:`write_results` back into a :class:`RunResult`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a txm-live results file.
    """
    import h5py

    path = Path(path)
    if path.is_dir():
        path = path / "phases.h5"
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a txm-live results file "
                             f"(format={f.attrs.get('format')!r}, expected {FORMAT!r})")
        edges = {name: _read_edge(f[name]) if name in f else None for name in _EDGE_GROUPS}
        agreement = (float(f["comparison/agreement"][()])
                     if "comparison/agreement" in f else None)
        exafs = []
        for name in sorted(f["exafs"], key=lambda n: int(f["exafs"][n].attrs["phase"])):
            g = f["exafs"][name]
            exafs.append(ExafsResult(
                phase=int(g.attrs["phase"]), kweight=int(g.attrs["kweight"]),
                first_shell_r=float(g.attrs["first_shell_r"]),
                **{k: g[k][()] for k in _EXAFS_DATASETS}))
        return RunResult(
            run_uid=str(f.attrs["raw_run_uid"]),
            l3=edges["l3"], l2=edges["l2"], l3_preview=edges["l3_preview"],
            l2_l3_agreement=agreement, exafs=tuple(exafs),
            errors=tuple(json.loads(f.attrs["errors"])), n_frames=int(f.attrs["n_frames"]),
            incomplete=bool(f.attrs.get("incomplete", False)))


class collect_documents(list):  # noqa: N801 - used like a function: ``docs = collect_documents()``
    """A callback that keeps every ``(name, doc)`` it receives, in order.

    ``cb.subscribe(docs := collect_documents())`` then ``publish_results(client, docs)``.
    """

    def __call__(self, name: str, doc: dict) -> None:
        self.append((name, doc))


def publish_results(client: Any, derived_docs: Iterable[tuple[str, dict]], *,
                    batch_size: int = 64) -> list[str]:
    """Write derived runs (documents of ``XanesLiveCallback.subscribe``) into a Tiled catalog.

    The derived run was built with ``event_model.compose_run`` and names the raw run in its start
    document (``raw_run_uid``), so it is found next to the data:
    ``client.search(Key("start.raw_run_uid") == raw_uid)``.

    Parameters
    ----------
    client : tiled client container
        Writable catalog (embedded or facility).
    derived_docs : iterable of (name, doc)
        Complete runs (start ... stop), in emission order.
    batch_size : int
        Events per write.

    Returns
    -------
    list of str
        The uids of the runs written (``client[uid]`` reads one back).

    Raises
    ------
    DocumentError
        The documents do not form complete runs (a document before its start, no stop).
    """
    from txm_live.callbacks.catalog import make_writer

    docs = list(derived_docs)
    if not docs:
        raise DocumentError("publish_results: no documents to publish")
    starts = [doc["uid"] for name, doc in docs if name == "start"]
    stops = {doc.get("run_start") for name, doc in docs if name == "stop"}
    if not starts or docs[0][0] != "start":
        raise DocumentError("publish_results: the documents must begin with a start document")
    if missing := [uid for uid in starts if uid not in stops]:
        raise DocumentError(f"publish_results: run(s) without a stop document: {missing}")
    writer = make_writer(client, batch_size=int(batch_size))
    for name, doc in docs:
        writer(name, doc)
    return starts
