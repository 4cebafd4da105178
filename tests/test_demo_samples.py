"""``txm-live demo --sample``: the registry of simulated samples and the Fe K battery beamtime end to end."""

from __future__ import annotations

import h5py
import pytest

from txm_live.callbacks.cli import build_parser
from txm_live.callbacks.demo import DEMO_SAMPLES, run_demo


def test_cli_offers_every_registered_sample() -> None:
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # the "demo" subparser
    action = next(a for a in demo._actions if a.dest == "sample")
    assert tuple(action.choices) == tuple(DEMO_SAMPLES) and action.default == "nd"
    with pytest.raises(ValueError, match="sample"):
        run_demo("small", sample="granite")


@pytest.mark.parametrize("name", sorted(DEMO_SAMPLES))
def test_registry_builds_each_sample(name: str) -> None:
    spec = DEMO_SAMPLES[name]
    phantom = spec.make_phantom((64, 64), 0)
    energies = spec.energies("small")
    assert phantom.shape == (64, 64) and phantom.labels.max() >= 2
    assert energies.ndim == 1 and energies.size >= 100
    import xraydb

    for edge in spec.edges:  # every edge of the sample inside its scan
        e0 = xraydb.xray_edge(spec.element, edge).energy
        assert energies[0] < e0 - 50 < e0 + 50 < energies[-1]


def test_lfp_demo_end_to_end(tmp_path) -> None:
    s = run_demo("small", tmp_path, sample="lfp", progress=False, print_summary=False)
    r = s.result
    assert r.element == "Fe" and tuple(r.edges) == ("K",), (r.errors, r.notes)
    assert r.edges["K"].element == "Fe" and r.comparisons == ()
    assert r.exafs == {} or all(not v for v in r.exafs.values())  # standards end at 7200 eV: no EXAFS
    from txm_live.callbacks.demo import format_summary

    text = format_summary(s)  # one line says why there is no EXAFS section
    assert sum(line.startswith("  EXAFS: off for the lfp sample") for line in text.splitlines()) == 1, text
    assert "K" in s.ari  # scored against the phantom's ground truth (accuracy: tests/test_battery.py)
    h5 = s.output / "phases.h5"
    assert h5 in s.files and any(p.suffix == ".png" for p in s.files)
    with h5py.File(h5, "r") as f:
        assert "demo_sample" in f.attrs["parameters"] and "lfp" in f.attrs["parameters"]
