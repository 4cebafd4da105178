"""phases.h5: exact round trip, layout, units and provenance (publishing: test_catalog.py)."""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace

import h5py
import numpy as np
import pytest

from txm_live.callbacks.results_file import (
    FORMAT,
    read_results,
    write_results,
)
from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult, RunResult


def _edge(name: str, e0: float, rng: np.random.Generator, *, shape=(23, 31)) -> EdgeResult:
    n_e = 40
    labels = rng.integers(-1, 3, shape).astype(np.int32)
    return EdgeResult(
        edge=name, e0=e0, energies=np.linspace(e0 - 30, e0 + 60, n_e),
        labels=labels, phase_names=("majority (low white line)", "majority (high white line)",
                                    "minority"),
        mean_spectra=rng.random((3, n_e)), spread=rng.random((3, n_e)) * 0.1,
        counts=np.array([(labels == i).sum() for i in range(3)]),
        snr=rng.random(shape).astype(np.float32) * 20, mask=labels >= 0,
        eps=0.173, min_samples=12, n_components=4, outlier_phases=(2,),
        timings={"pca": 0.5, "dbscan": 1.25})


def _exafs(rng: np.random.Generator, n_k: int = 201) -> tuple[ExafsResult, ...]:
    return tuple(ExafsResult(phase=i, k=np.linspace(0, 10, n_k), chi=rng.normal(size=n_k),
                             kweight=2, r=np.linspace(0, 6, 120), chir_mag=rng.random(120),
                             first_shell_r=2.1 + 0.3 * i) for i in range(3))


def _result(seed: int = 0) -> RunResult:
    rng = np.random.default_rng(seed)
    l3, l2 = _edge("L3", 6208.0, rng), _edge("L2", 6722.0, rng)
    l3 = replace(l3, element="Nd", notes=("post-edge: linear (short window)",))
    return RunResult(run_uid="3f1c2a9e-raw-run", element="Nd", edges={"L3": l3, "L2": l2},
                     previews={"L3": _edge("L3", 6208.0, rng)},
                     comparisons=(EdgePairComparison("L3", "L2", 0.934, (0, 2, -1)),),
                     exafs={"L3": _exafs(rng), "L2": _exafs(rng, 150)},
                     errors=("FrameError: frame 17 has NaN energy",),
                     notes=("element Nd, edges L3, L2 from the start document",),
                     n_frames=1024, pixel_size_nm=31.2, requested_edges=("L3", "L2"))


def _assert_edges_equal(a: EdgeResult, b: EdgeResult) -> None:
    for f in fields(EdgeResult):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert vb.dtype == va.dtype, f.name
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
        else:
            assert va == vb, f.name


def _assert_exafs_equal(a: tuple[ExafsResult, ...], b: tuple[ExafsResult, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.phase, x.kweight, x.first_shell_r) == (y.phase, y.kweight, y.first_shell_r)
        for k in ("k", "chi", "r", "chir_mag"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))


def test_round_trip_is_exact(tmp_path):
    res = _result()
    path = write_results(res, tmp_path, parameters={"source": "unit test", "register": True})
    assert path == tmp_path / res.run_uid / "phases.h5"
    back = read_results(path)
    assert back.run_uid == res.run_uid and back.n_frames == 1024 and back.element == "Nd"
    assert back.errors == res.errors and back.notes == res.notes and back.pixel_size_nm == 31.2
    assert back.requested_edges == ("L3", "L2")
    assert list(back.edges) == ["L3", "L2"] and list(back.previews) == ["L3"]
    for key in res.edges:
        _assert_edges_equal(res.edges[key], back.edges[key])
    _assert_edges_equal(res.previews["L3"], back.previews["L3"])
    assert back.comparisons == res.comparisons and back.l2_l3_agreement == pytest.approx(0.934)
    assert list(back.exafs) == ["L3", "L2"]
    for key in res.exafs:
        _assert_exafs_equal(res.exafs[key], back.exafs[key])
    # the shortcuts of the Nd scripts
    _assert_edges_equal(back.l3, res.edges["L3"])
    _assert_edges_equal(back.l3_preview, res.previews["L3"])
    # a folder is accepted too
    assert read_results(path.parent).run_uid == res.run_uid


def test_edge_order_is_kept_not_alphabetical(tmp_path):
    """M5 before M4, L3 before L2: acquisition order survives HDF5's alphabetical groups."""
    rng = np.random.default_rng(3)
    edges = {"M5": _edge("M5", 978.0, rng), "M4": _edge("M4", 1000.0, rng)}
    res = RunResult(run_uid="m-edges", element="Nd", edges=edges, requested_edges=("M5", "M4"))
    back = read_results(write_results(res, tmp_path))
    assert list(back.edges) == ["M5", "M4"] and back.ok


def test_k_only_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    k = replace(_edge("K", 7112.0, rng), element="Fe")
    res = RunResult(run_uid="fe-k", element="Fe", edges={"K": k}, requested_edges=("K",),
                    notes=("Fe K: EXAFS not available: the window ends at k = 4.1 1/Å",))
    back = read_results(write_results(res, tmp_path))
    assert back.ok and back.comparisons == () and back.l3 is None and back.l2_l3_agreement is None
    assert back.exafs == {} and back.notes == res.notes
    _assert_edges_equal(back.edges["K"], k)


def test_layout_units_and_provenance(tmp_path):
    path = write_results(_result(), tmp_path, parameters={"source": "unit test"})
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT == "txm-live phases v2"
        assert f.attrs["raw_run_uid"] == "3f1c2a9e-raw-run"
        assert f.attrs["txm_live_version"]
        assert f.attrs["created"].endswith("+00:00")
        assert json.loads(f.attrs["parameters"]) == {"source": "unit test"}
        assert json.loads(f.attrs["edges"]) == ["L3", "L2"] and f.attrs["element"] == "Nd"
        for edge in ("L3", "L2"):
            g = f["edges"][edge]
            assert set(g) == {"labels", "mean_spectra", "energies", "spread", "counts", "snr",
                              "mask"}
            assert g.attrs["eps"] == pytest.approx(0.173) and g.attrs["min_samples"] == 12
            assert g["energies"].attrs["units"] == "eV"
            assert all("units" in g[d].attrs for d in g)
        assert set(f["previews"]) == {"L3"}
        c = f["comparisons/L3_L2"]
        assert (c.attrs["reference"], c.attrs["other"]) == ("L3", "L2")
        assert c["agreement"][()] == pytest.approx(0.934) and list(c["mapping"][()]) == [0, 2, -1]
        ex = f["exafs/L3/phase_1"]
        assert set(ex) == {"k", "chi", "r", "chir_mag"}
        assert ex.attrs["first_shell_r"] == pytest.approx(2.4)
        assert ex["k"].attrs["units"] == "1/angstrom" and ex["r"].attrs["units"] == "angstrom"


def test_missing_edges_and_overwrite(tmp_path):
    full = _result()
    res = replace(full, edges={"L3": full.edges["L3"]}, comparisons=(), exafs={}, previews={})
    write_results(full, tmp_path)
    path = write_results(res, tmp_path)  # replaces the first file
    back = read_results(path)
    assert back.l2 is None and back.l2_l3_agreement is None and back.exafs == {}
    assert back.l3 is not None and not back.ok  # L2 was requested
    assert [p.name for p in path.parent.iterdir()] == ["phases.h5"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by the group as usual


def _write_v1(path, rng: np.random.Generator) -> dict:
    """A results file exactly as txm-live wrote it before format v2 (groups /l3, /l2, /l3_preview)."""
    made = {"l3": _edge("L3", 6208.0, rng), "l2": _edge("L2", 6722.0, rng), "l3_preview": _edge("L3", 6208.0, rng)}
    exafs = _exafs(rng)
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "txm-live phases v1", "txm_live_version": "0.4.0", "raw_run_uid": "old-run",
                        "created": "2026-11-30T10:00:00+00:00", "n_frames": 300,
                        "errors": json.dumps(["FrameError: x"]), "parameters": json.dumps({})})
        for name, e in made.items():
            g = f.create_group(name)
            g.attrs.update({"edge": e.edge, "e0": e.e0, "e0_units": "eV", "eps": e.eps, "min_samples": e.min_samples,
                            "n_components": e.n_components, "n_phases": e.n_phases,
                            "phase_names": json.dumps(list(e.phase_names)),
                            "outlier_phases": json.dumps(list(e.outlier_phases)),
                            "timings": json.dumps(e.timings)})
            for d in ("labels", "mean_spectra", "energies", "spread", "counts", "snr", "mask"):
                g[d] = getattr(e, d)
        f.create_group("comparison")["agreement"] = 0.91
        ex = f.create_group("exafs")
        for x in exafs:
            g = ex.create_group(f"phase_{x.phase}")
            g.attrs.update({"phase": x.phase, "kweight": x.kweight, "first_shell_r": x.first_shell_r})
            for d in ("k", "chi", "r", "chir_mag"):
                g[d] = getattr(x, d)
    return {**made, "exafs": exafs}


def test_old_format_v1_is_still_read(tmp_path):
    path = tmp_path / "phases.h5"
    made = _write_v1(path, np.random.default_rng(5))
    back = read_results(path)
    assert back.run_uid == "old-run" and back.n_frames == 300 and back.errors == ("FrameError: x",)
    assert list(back.edges) == ["L3", "L2"] and list(back.previews) == ["L3"]
    _assert_edges_equal(back.l3, made["l3"])
    _assert_edges_equal(back.l2, made["l2"])
    _assert_edges_equal(back.l3_preview, made["l3_preview"])
    assert back.l2_l3_agreement == pytest.approx(0.91) and back.comparisons[0].name == "L3/L2"
    _assert_exafs_equal(back.exafs["L3"], made["exafs"])
    assert not back.ok  # it recorded an error


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="result"):
        write_results({"run_uid": "x"}, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_uid"):
        write_results(replace(_result(), run_uid="../x"), tmp_path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a txm-live results file"):
        read_results(other)
