"""Write txm-live results to disk (HDF5) and back into the Tiled catalog.

File layout of ``OUT/<raw run uid>/phases.h5`` (h5py, one file per run), format
``"txm-live phases v2"``::

    /                         attrs: format, txm_live_version, raw_run_uid, created (ISO 8601 UTC),
                                     n_frames, element, edges (JSON list, acquisition order),
                                     requested_edges (JSON list), errors (JSON list of str),
                                     notes (JSON list of str), parameters (JSON), pixel_size_nm
                                     (absent when unknown), incomplete (bool: interrupted run,
                                     results of what was measured)
    /edges/<edge>             one group per analysed edge, named by the edge (K, L3, L2, M5...)
        attrs: edge, element, e0 [eV], eps, min_samples, n_components, phase_names, outlier_phases,
               timings (JSON, seconds), notes (JSON list of str)
        labels        (H, W) int32     phase index per pixel, -1 = masked
        mean_spectra  (n_phases, n_e)  edge-step normalized mean spectrum per phase
        energies      (n_e,)           eV
        spread        (n_phases, n_e)  standard deviation per phase
        counts        (n_phases,)      pixels per phase
        snr           (H, W) float32   edge-step signal-to-noise ratio
        mask          (H, W) bool      pixels that entered the clustering
    /previews/<edge>          the streaming previews, same layout
    /comparisons/<ref>_<other>  one group per pair of edges of the same element
        attrs: reference, other (edge names)
        agreement     scalar, fraction of pixels whose <other> phase matches their <ref> phase
        mapping       (n_other_phases,) int  <ref> phase matched to each <other> phase (-1: none)
    /exafs/<edge>/phase_<i>   attrs: phase, kweight, first_shell_r [Angstrom]
        k [1/Angstrom], chi, r [Angstrom], chir_mag

Every dataset has a ``units`` attribute (``""`` when dimensionless) and a ``long_name``.
Files of the previous format ``"txm-live phases v1"`` (groups ``/l3``, ``/l2``, ``/l3_preview``,
``/comparison/agreement``, ``/exafs/phase_<i>`` of the L3 edge) are still read by
:func:`read_results`.
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
from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult, RunResult

__all__ = ["FORMAT", "OLD_FORMATS", "collect_documents", "publish_results", "read_results", "write_results"]

logger = logging.getLogger(__name__)

FORMAT = "txm-live phases v2"
#: Older formats :func:`read_results` still reads.
OLD_FORMATS = ("txm-live phases v1",)

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
_V1_EDGE_GROUPS = ("l3", "l2", "l3_preview")


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
    group.attrs["element"] = edge.element
    group.attrs["notes"] = json.dumps(list(edge.notes))
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
        element=str(group.attrs.get("element", "")),
        notes=tuple(json.loads(group.attrs["notes"])) if "notes" in group.attrs else (),
        **arrays,
    )


def _write_exafs(group: Any, items: tuple[ExafsResult, ...]) -> None:
    for item in items:
        g = group.create_group(f"phase_{int(item.phase)}")
        g.attrs["phase"] = int(item.phase)
        g.attrs["kweight"] = int(item.kweight)
        g.attrs["first_shell_r"] = float(item.first_shell_r)
        g.attrs["first_shell_r_units"] = "angstrom"
        for name, (units, long_name) in _EXAFS_DATASETS.items():
            _put(g, name, getattr(item, name), units, long_name)


def _read_exafs(group: Any) -> tuple[ExafsResult, ...]:
    out = []
    for name in sorted(group, key=lambda n: int(group[n].attrs["phase"])):
        g = group[name]
        out.append(ExafsResult(
            phase=int(g.attrs["phase"]), kweight=int(g.attrs["kweight"]),
            first_shell_r=float(g.attrs["first_shell_r"]),
            **{k: g[k][()] for k in _EXAFS_DATASETS}))
    return tuple(out)


def _write_layout(f: Any, result: RunResult, parameters: dict[str, Any] | None) -> None:
    """Write the whole layout of one run into the open (empty) HDF5 file or group ``f``."""
    f.attrs["format"] = FORMAT
    f.attrs["txm_live_version"] = _version()
    f.attrs["raw_run_uid"] = str(result.run_uid)
    f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    f.attrs["n_frames"] = int(result.n_frames)
    f.attrs["element"] = result.element
    f.attrs["edges"] = json.dumps(list(result.edges))
    f.attrs["requested_edges"] = json.dumps(list(result.requested_edges))
    f.attrs["errors"] = json.dumps(list(result.errors))
    f.attrs["notes"] = json.dumps(list(result.notes))
    f.attrs["incomplete"] = bool(result.incomplete)
    f.attrs["parameters"] = json.dumps(parameters or {}, default=str)
    if result.pixel_size_nm is not None:
        f.attrs["pixel_size_nm"] = float(result.pixel_size_nm)
    for group_name, mapping in (("edges", result.edges), ("previews", result.previews)):
        g = f.create_group(group_name)
        g.attrs["order"] = json.dumps(list(mapping))
        for key, edge in mapping.items():
            _write_edge(g.create_group(key), edge)
    comps = f.create_group("comparisons")
    for c in result.comparisons:
        g = comps.create_group(f"{c.reference}_{c.other}")
        g.attrs["reference"] = c.reference
        g.attrs["other"] = c.other
        ds = g.create_dataset("agreement", data=float(c.agreement))
        ds.attrs["units"] = ""
        ds.attrs["long_name"] = f"fraction of pixels whose {c.other} phase matches their {c.reference} phase"
        _put(g, "mapping", np.asarray(c.mapping, dtype=np.int64), "",
             f"{c.reference} phase matched to each {c.other} phase (-1: unmatched)")
    ex = f.create_group("exafs")
    ex.attrs["order"] = json.dumps(list(result.exafs))
    for key, items in result.exafs.items():
        _write_exafs(ex.create_group(key), items)


def _ordered(group: Any) -> list[str]:
    order = json.loads(group.attrs["order"]) if "order" in group.attrs else []
    return [k for k in order if k in group] + sorted(k for k in group if k not in order)


def _read_layout(f: Any) -> RunResult:
    """Read a format-v2 file (see the module docstring)."""
    edges = {k: _read_edge(f["edges"][k]) for k in _ordered(f["edges"])}
    previews = {k: _read_edge(f["previews"][k]) for k in _ordered(f["previews"])}
    comparisons = []
    for name in f["comparisons"]:
        g = f["comparisons"][name]
        comparisons.append(EdgePairComparison(
            reference=str(g.attrs["reference"]), other=str(g.attrs["other"]),
            agreement=float(g["agreement"][()]), mapping=tuple(int(m) for m in g["mapping"][()])))
    order = list(edges)
    comparisons.sort(key=lambda c: (order.index(c.reference) if c.reference in order else len(order),
                                    order.index(c.other) if c.other in order else len(order)))
    exafs = {k: _read_exafs(f["exafs"][k]) for k in _ordered(f["exafs"])}
    px = f.attrs.get("pixel_size_nm")
    return RunResult(
        run_uid=str(f.attrs["raw_run_uid"]), element=str(f.attrs.get("element", "")),
        edges=edges, previews=previews, comparisons=tuple(comparisons), exafs=exafs,
        errors=tuple(json.loads(f.attrs["errors"])), notes=tuple(json.loads(f.attrs.get("notes", "[]"))),
        n_frames=int(f.attrs["n_frames"]), pixel_size_nm=float(px) if px is not None else None,
        requested_edges=tuple(json.loads(f.attrs.get("requested_edges", "[]"))),
        incomplete=bool(f.attrs.get("incomplete", False)))


def _read_v1(f: Any) -> RunResult:
    """Read a format-v1 file (Nd L3/L2 groups ``/l3``, ``/l2``, ``/l3_preview``)."""
    groups = {name: _read_edge(f[name]) for name in _V1_EDGE_GROUPS if name in f}
    edges = {g.edge: g for name, g in groups.items() if name in ("l3", "l2")}
    previews = {g.edge: g for name, g in groups.items() if name == "l3_preview"}
    comparisons: tuple[EdgePairComparison, ...] = ()
    if "comparison/agreement" in f and "L3" in edges and "L2" in edges:
        comparisons = (EdgePairComparison("L3", "L2", float(f["comparison/agreement"][()])),)
    exafs = _read_exafs(f["exafs"]) if "exafs" in f else ()
    return RunResult(
        run_uid=str(f.attrs["raw_run_uid"]), element="", edges=edges, previews=previews,
        comparisons=comparisons, exafs={"L3": exafs} if exafs else {},
        errors=tuple(json.loads(f.attrs["errors"])), n_frames=int(f.attrs["n_frames"]),
        requested_edges=("L3", "L2"))


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
        fmt = f.attrs.get("format")
        if fmt == FORMAT:
            return _read_layout(f)
        if fmt in OLD_FORMATS:
            return _read_v1(f)
        raise ValueError(f"{path} is not a txm-live results file "
                         f"(format={fmt!r}, expected {FORMAT!r} or one of {OLD_FORMATS})")


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
