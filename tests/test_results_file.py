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
from txm_live.results import EdgeResult, ExafsResult, RunResult


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


def _result(seed: int = 0) -> RunResult:
    rng = np.random.default_rng(seed)
    exafs = tuple(ExafsResult(phase=i, k=np.linspace(0, 10, 201), chi=rng.normal(size=201),
                              kweight=2, r=np.linspace(0, 6, 120), chir_mag=rng.random(120),
                              first_shell_r=2.1 + 0.3 * i) for i in range(3))
    return RunResult(run_uid="3f1c2a9e-raw-run", l3=_edge("L3", 6208.0, rng),
                     l2=_edge("L2", 6722.0, rng), l2_l3_agreement=0.934, exafs=exafs,
                     errors=("FrameError: frame 17 has NaN energy",), n_frames=1024,
                     l3_preview=_edge("L3", 6208.0, rng))


def _assert_edges_equal(a: EdgeResult, b: EdgeResult) -> None:
    for f in fields(EdgeResult):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert vb.dtype == va.dtype, f.name
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
        else:
            assert va == vb, f.name


def test_round_trip_is_exact(tmp_path):
    res = _result()
    path = write_results(res, tmp_path, parameters={"source": "unit test", "register": True})
    assert path == tmp_path / res.run_uid / "phases.h5"
    back = read_results(path)
    assert back.run_uid == res.run_uid and back.n_frames == 1024
    assert back.errors == res.errors and back.l2_l3_agreement == pytest.approx(0.934)
    for name in ("l3", "l2", "l3_preview"):
        _assert_edges_equal(getattr(res, name), getattr(back, name))
    assert len(back.exafs) == 3
    for a, b in zip(res.exafs, back.exafs):
        assert (a.phase, a.kweight, a.first_shell_r) == (b.phase, b.kweight, b.first_shell_r)
        for k in ("k", "chi", "r", "chir_mag"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    # a folder is accepted too
    assert read_results(path.parent).run_uid == res.run_uid


def test_layout_units_and_provenance(tmp_path):
    path = write_results(_result(), tmp_path, parameters={"source": "unit test"})
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        assert f.attrs["raw_run_uid"] == "3f1c2a9e-raw-run"
        assert f.attrs["txm_live_version"]
        assert f.attrs["created"].endswith("+00:00")
        assert json.loads(f.attrs["parameters"]) == {"source": "unit test"}
        for edge in ("l3", "l2"):
            g = f[edge]
            assert set(g) == {"labels", "mean_spectra", "energies", "spread", "counts", "snr",
                              "mask"}
            assert g.attrs["eps"] == pytest.approx(0.173) and g.attrs["min_samples"] == 12
            assert g["energies"].attrs["units"] == "eV"
            assert all("units" in g[d].attrs for d in g)
        assert f["comparison/agreement"][()] == pytest.approx(0.934)
        ex = f["exafs/phase_1"]
        assert set(ex) == {"k", "chi", "r", "chir_mag"}
        assert ex.attrs["first_shell_r"] == pytest.approx(2.4)
        assert ex["k"].attrs["units"] == "1/angstrom" and ex["r"].attrs["units"] == "angstrom"


def test_missing_edges_and_overwrite(tmp_path):
    res = replace(_result(), l2=None, l2_l3_agreement=None, exafs=(), l3_preview=None)
    write_results(_result(), tmp_path)
    path = write_results(res, tmp_path)  # replaces the first file
    back = read_results(path)
    assert back.l2 is None and back.l2_l3_agreement is None and back.exafs == ()
    assert back.l3 is not None and not back.ok
    assert [p.name for p in path.parent.iterdir()] == ["phases.h5"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by the group as usual


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
