"""Tests of the simulated TXM devices and the instrument effects (sim/effects.py, sim/devices.py).

Frames are rendered through the real ophyd devices (move the positioners, ``trigger()`` the
camera, ``read()`` it); numbers are checked against the phantom ground truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from txm_live.sim.devices import CLOSED, OPEN, SimTXM, make_txm
from txm_live.sim.effects import (
    SWITCHES,
    EffectsConfig,
    InstrumentModel,
    beam_intensity,
    detector_counts,
    flat_field_pattern,
    optical_image,
    place_sample,
)
from txm_live.sim.phantom import make_phantom

SHAPE = (64, 64)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=SHAPE, seed=0)


class FrozenEnergy:
    """Phantom wrapper whose optical density does not depend on energy (isolates geometry)."""

    def __init__(self, phantom, energy: float = 6100.0):
        self.shape = phantom.shape
        self.pixel_size_nm = phantom.pixel_size_nm
        self._od = phantom.optical_density(energy)

    def optical_density(self, energy: float) -> np.ndarray:
        return self._od


def snap(txm: SimTXM, energy: float, kind: str) -> np.ndarray:
    """Take one frame of ``kind`` ("sample", "flat", "dark") at ``energy`` through the devices."""
    txm.mono.move(energy)
    txm.shutter.set(CLOSED if kind == "dark" else OPEN).wait(timeout=30)  # set() completes on a thread
    txm.stage.move(txm.sample_out if kind == "flat" else txm.sample_in)
    status = txm.camera.trigger()
    assert status.done and status.success
    reading = txm.camera.read()
    return reading["camera_image"]["value"]


def measured_od(txm: SimTXM, energy: float) -> np.ndarray:
    dark = snap(txm, energy, "dark").astype(np.float64)
    sample = snap(txm, energy, "sample").astype(np.float64)
    flat = snap(txm, energy, "flat").astype(np.float64)
    return -np.log((sample - dark) / (flat - dark))


def embed(od: np.ndarray, margin: int) -> np.ndarray:
    out = np.zeros((od.shape[0] + 2 * margin, od.shape[1] + 2 * margin))
    out[margin:-margin, margin:-margin] = od
    return out


def centroid(img: np.ndarray) -> np.ndarray:
    w = np.clip(img, 0, None)
    y, x = np.indices(img.shape)
    return np.array([(w * y).sum(), (w * x).sum()]) / w.sum()


def gyration_radius(img: np.ndarray) -> float:
    w = np.clip(img, 0, None)
    c = centroid(img)
    y, x = np.indices(img.shape)
    return float(np.sqrt((w * ((y - c[0]) ** 2 + (x - c[1]) ** 2)).sum() / w.sum()))


# --- devices ---------------------------------------------------------------------------------

def test_describe_matches_read_and_sets_dtype_numpy(phantom):
    txm = make_txm(phantom, margin_px=8)
    desc = txm.camera.describe()
    assert desc["camera_image"]["shape"] == [80, 80]
    assert desc["camera_image"]["dtype"] == "array"
    assert desc["camera_image"]["dtype_numpy"] == "<u2"
    assert desc["camera_pixel_size"]["units"] == "nm"
    txm.camera.trigger()
    reading = txm.camera.read()
    assert set(reading) == set(desc) == {"camera_image", "camera_pixel_size"}
    img = reading["camera_image"]["value"]
    assert img.dtype == np.uint16 and img.shape == (80, 80)
    for obj in (txm.mono, txm.stage, txm.shutter, txm.camera):
        for key in {**obj.describe(), **obj.describe_configuration()}.values():
            assert "dtype_numpy" in key
    assert txm.mono.describe()["mono_energy"]["units"] == "eV"


def test_make_txm_validates_arguments(phantom):
    with pytest.raises(TypeError, match="nosie"):
        make_txm(phantom, nosie=False)
    with pytest.raises(ValueError, match="flux"):
        make_txm(phantom, flux=-1.0)
    with pytest.raises(ValueError, match="write_path"):
        make_txm(phantom, file_backed=True)
    with pytest.raises(ValueError, match="phantom"):
        make_txm(object())
    with pytest.raises(ValueError, match="shutter"):
        make_txm(phantom).shutter.put(3)


def test_frame_kinds_follow_shutter_and_stage(phantom):
    txm = make_txm(phantom, margin_px=8)
    dark = snap(txm, 6500.0, "dark")
    flat = snap(txm, 6500.0, "flat")
    sample = snap(txm, 6500.0, "sample")
    c = txm.model.config
    # dark: bias + read noise only
    assert abs(dark.mean() - c.bias) < 1.0
    assert 2.0 < dark.std() < 4.0
    # flat: ~flux photons * gain + bias
    assert abs(flat.mean() - (c.gain * c.flux + c.bias)) / (c.gain * c.flux) < 0.1
    # the sample absorbs
    assert sample.mean() < flat.mean()
    assert txm.camera.get_index() == 3


def test_same_seed_same_frames_other_seed_differs(phantom):
    frames = []
    for seed in (3, 3, 4):
        txm = make_txm(phantom, seed=seed, margin_px=16, drift_px=5.0, jump_px=4.0)
        frames.append([snap(txm, e, k) for e in (6000.0, 6500.0) for k in ("dark", "sample", "flat")])
    for a, b in zip(frames[0], frames[1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(frames[0], frames[2]))


def test_ideal_instrument_reproduces_phantom_od(phantom):
    """All effects off: -ln((I-D)/(F-D)) equals the phantom OD up to 16-bit rounding."""
    margin = 8
    txm = make_txm(phantom, effects=EffectsConfig.all_off(margin_px=margin))
    for energy in (6000.0, 6215.0, 6900.0):
        od = measured_od(txm, energy)
        truth = embed(phantom.optical_density(energy), margin)
        # rounding of counts ~ 0.5 ADU out of gain * flux * T
        tol = 0.5 / (2.5 * 5000 * np.exp(-truth)) + 1e-6
        assert np.all(np.abs(od - truth) <= tol)


def test_noise_only_reproduces_od_within_poisson_noise(phantom):
    margin = 8
    txm = make_txm(phantom, effects=EffectsConfig.all_off(margin_px=margin, noise=True))
    energy = 6300.0
    od = measured_od(txm, energy)
    truth = embed(phantom.optical_density(energy), margin)
    t = np.exp(-truth)
    # Poisson: var(OD) ~ 1/(N T) + 1/N per pixel; read noise negligible at 5000 photons
    sigma = np.sqrt(1.0 / (5000 * t) + 1.0 / 5000)
    z = (od - truth) / sigma
    assert abs(z.mean()) < 0.1
    assert 0.85 < z.std() < 1.15


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_effect_switches(phantom, switch):
    """Each switch alone changes the frames; with it off they equal the ideal instrument."""
    base = EffectsConfig.all_off(margin_px=16)
    # energy at a glitch so that the glitch switch matters
    glitch_energy = InstrumentModel(SHAPE, dataclasses.replace(base, glitches=True)).glitch_list[0].energy

    def frames(cfg):
        txm = make_txm(phantom, effects=cfg)
        out = []
        for e in (6000.0, glitch_energy, 7023.0):
            for k in ("sample", "flat"):
                out.append(snap(txm, e, k))
        return out

    off = frames(base)
    off_again = frames(base)
    on = frames(dataclasses.replace(base, **{switch: True}))
    for a, b in zip(off, off_again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(off, on)), switch


def test_magnification_pixel_size_and_image_scale(phantom):
    frozen = FrozenEnergy(phantom)
    txm = make_txm(frozen, effects=EffectsConfig.all_off(margin_px=16, magnification=True))
    sizes, radii = [], []
    for energy in (6000.0, 6500.0, 7023.0):
        od = measured_od(txm, energy)
        sizes.append(txm.camera.read()["camera_pixel_size"]["value"])
        radii.append(gyration_radius(od))
    assert sizes[0] == pytest.approx(phantom.pixel_size_nm)
    assert sizes[-1] / sizes[0] == pytest.approx(7023.0 / 6000.0, rel=1e-9)
    assert 1.16 < sizes[-1] / sizes[0] < 1.18
    # the sample shrinks on the detector by the same factor
    assert radii[0] / radii[-1] == pytest.approx(7023.0 / 6000.0, rel=0.02)
    assert radii[0] > radii[1] > radii[2]


def test_drift_and_jumps_move_the_sample(phantom):
    frozen = FrozenEnergy(phantom)
    cfg = EffectsConfig.all_off(margin_px=40, drift=True, drift_px=25.0)
    txm = make_txm(frozen, effects=cfg)
    c0 = centroid(measured_od(txm, 6000.0))
    c1 = centroid(measured_od(txm, 7023.0))
    moved = np.linalg.norm(c1 - c0)
    assert 20.0 < moved < 30.0
    expected = txm.model.sample_offset(7023.0, 0) - txm.model.sample_offset(6000.0, 0)
    np.testing.assert_allclose(c1 - c0, expected, atol=0.3)

    model = InstrumentModel(SHAPE, EffectsConfig.all_off(jumps=True, n_jumps=2, jump_px=10.0), seed=5)
    jumps = np.linalg.norm(model.jump_vectors, axis=1)
    assert np.all(jumps >= 10.0)
    f = model.jump_positions[0]
    lo, hi = model.config.energy_range
    before = model.sample_offset(lo + (f - 0.01) * (hi - lo), 0)
    after = model.sample_offset(lo + (f + 0.01) * (hi - lo), 0)
    assert np.linalg.norm(after - before) >= 10.0


def test_jitter_statistics():
    model = InstrumentModel(SHAPE, EffectsConfig.all_off(jitter=True, jitter_px=1.5), seed=2)
    offsets = np.array([model.sample_offset(6500.0, n) for n in range(2000)])
    assert offsets.std(axis=0) == pytest.approx([1.5, 1.5], rel=0.08)
    np.testing.assert_array_equal(model.sample_offset(6500.0, 7), model.sample_offset(6500.0, 7))


def test_flat_structure_beam_and_glitch_effects():
    flat = flat_field_pattern((200, 220), seed=1, vignetting=0.2, pattern_amplitude=0.03, n_dust=6)
    assert flat.dtype == np.float32
    assert flat.mean() == pytest.approx(1.0, abs=1e-5)
    assert flat[100, 110] > flat[0, 0]  # vignetting
    assert 0.02 < flat.std() < 0.15
    assert flat.min() < 0.9  # dust spots
    t = np.arange(0.0, 1200.0, 1.0)
    b = beam_intensity(t, period_s=300.0, decay=0.004)
    assert b.max() <= 1.0 and b.min() >= 0.996 - 1e-12
    assert np.sum(np.diff(b) > 0) == 3  # three top-ups in 20 minutes
    cfg = EffectsConfig.all_off(glitches=True, leak=True)
    model = InstrumentModel(SHAPE, cfg, seed=0)
    g = model.glitch_list[0]
    assert len(model.glitch_list) == 2
    assert all(abs(x.energy - edge) >= 25 for x in model.glitch_list for edge in (6208, 6722))
    flat_at_glitch = model.render(None, g.energy, 0).mean()
    flat_away = model.render(None, g.energy + 10.0, 0).mean()
    assert flat_at_glitch < 0.8 * flat_away


def test_leak_and_psf_physics(phantom):
    margin = 8
    energy = 6215.0
    truth = embed(phantom.optical_density(energy), margin)
    leaky = make_txm(phantom, effects=EffectsConfig.all_off(margin_px=margin, leak=True, leak_fraction=0.005))
    od = measured_od(leaky, energy)
    # leak: OD saturates, -ln((T + l)/(1 + l))
    expected = -np.log((np.exp(-truth) + 0.005) / 1.005)
    np.testing.assert_allclose(od, expected, atol=2e-3)
    assert od.max() < truth.max() or truth.max() < 1.0
    blurred = make_txm(phantom, effects=EffectsConfig.all_off(margin_px=margin, psf=True))
    od_psf = measured_od(blurred, energy)
    assert np.sum(np.diff(od_psf, axis=1) ** 2) < 0.9 * np.sum(np.diff(truth, axis=1) ** 2)
    assert od_psf.sum() == pytest.approx(truth.sum(), rel=0.01)


@pytest.mark.parametrize("gaussian_above", [1000.0, float("inf")])
@pytest.mark.parametrize("lam", [30.0, 5000.0])
def test_detector_counts_statistics(lam, gaussian_above):
    """Mean gain*N + bias and variance gain^2 N + read^2, exact Poisson or Gaussian shortcut."""
    counts = detector_counts(np.full((300, 300), lam), rng=np.random.default_rng(1),
                             gain=2.5, bias=100.0, read_noise=3.0, gaussian_above=gaussian_above)
    c = counts.astype(np.float64)
    assert c.mean() == pytest.approx(2.5 * lam + 100.0, rel=2e-3)
    assert c.var() == pytest.approx(2.5**2 * lam + 9.0, rel=0.03)
    if lam < 1000:  # below the threshold the draw is exact Poisson: its skewness is present
        skew = ((c - c.mean()) ** 3).mean() / c.std() ** 3
        assert skew == pytest.approx(2.5**3 * lam / (2.5**2 * lam + 9.0) ** 1.5, abs=0.03)


def test_place_sample_and_counts_helpers():
    od = np.zeros((10, 12), dtype=np.float32)
    od[4, 5] = 1.0
    out = place_sample(od, (20, 22), scale=1.0, shift=(2.0, -3.0))
    assert out.dtype == np.float32 and out.shape == (20, 22)
    assert np.unravel_index(np.argmax(out), out.shape) == (4 + 5 + 2, 5 + 5 - 3)
    with pytest.raises(ValueError, match="scale"):
        place_sample(od, (20, 22), scale=0.0)
    counts = detector_counts(np.full((3, 3), 1e6), rng=None)
    assert counts.dtype == np.uint16 and np.all(counts == 65535)
    with pytest.raises(ValueError, match="glitch_depth"):
        EffectsConfig(glitch_depth=1.5)
    with pytest.raises(ValueError, match="noise"):
        EffectsConfig(noise="yes")


# --- placement of the moving sample (sim/effects.py optical_image, place_sample) -------------------

PSF = 0.45  # the default EffectsConfig.psf_sigma_px


def _blobs(shape: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A band-limited OD map: Gaussian blobs (sigma 2.5-4 px) evaluated at positions moved by ``shift``."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    od = np.zeros(shape)
    for cy, cx, sigma, amp in [(20.3, 25.1, 3.0, 1.2), (34.7, 18.4, 2.5, 0.8), (30.2, 38.9, 4.0, 1.5)]:
        od += amp * np.exp(-((yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2) / (2 * sigma**2))
    return od.astype(np.float32)


@pytest.mark.parametrize("shift", [(0.5, 0.5), (0.3, -0.7), (-2.25, 1.6)])
def test_a_displaced_band_limited_sample_is_imaged_as_its_translate(shift):
    """Rendering a smooth sample at a sub-pixel displacement equals rendering, in place, the same
    sample whose continuous OD was evaluated at the displaced positions: the image is translated,
    neither blurred nor sharpened. Measured max error (transmission): 0.6 % / 0.45 % / 0.13 %, set by
    the clamp flattening the blobs' peaks between samples (the cubic alone: < 0.1 %); bilinear
    placement of the OD (the earlier model) blurs by 1.2-1.4 %."""
    shape, det = (56, 60), (70, 74)
    od = _blobs(shape)
    moved = optical_image(od, det, shift=shift, psf_sigma_px=PSF)
    truth = optical_image(_blobs(shape, shift), det, psf_sigma_px=PSF)
    error = float(np.abs(moved - truth).max())
    bilinear = ndimage.gaussian_filter(np.exp(-place_sample(od, det, shift=shift)), PSF, truncate=3.5,
                                       mode="constant", cval=1.0)
    assert error < 7e-3, error
    assert error < 0.5 * float(np.abs(bilinear - truth).max()), error


def test_a_still_sample_is_imaged_as_before_and_integer_displacements_exactly():
    """Scale 1 and a whole-pixel displacement: the image is the PSF-blurred transmission on the
    pixel grid, the still-sample frame model of every earlier version (no interpolation at all)."""
    od = make_phantom((48, 52), mode="mixed", seed=1).optical_density(6300.0)
    det = (64, 70)
    for shift in [(0.0, 0.0), (3.0, -2.0), (-5.0, 4.0)]:
        expected = ndimage.gaussian_filter(np.exp(-place_sample(od, det, shift=shift, axis_offset=(4.0, -6.0))),
                                           PSF, truncate=3.5, mode="constant", cval=1.0)
        img = optical_image(od, det, shift=shift, axis_offset=(4.0, -6.0), psf_sigma_px=PSF)
        assert img.dtype == np.float32 and img.shape == det
        np.testing.assert_allclose(img, expected, rtol=0, atol=1e-6, err_msg=str(shift))  # float32 rounding


def test_vacuum_surrounds_the_sample_map():
    """Beyond the sample map is vacuum (transmission 1): an empty map images as 1 everywhere, the
    image does not depend on how much vacuum the map includes, and far from the map it is exactly 1."""
    det = (60, 64)
    for geometry in [{}, {"shift": (0.3, -0.7)}, {"shift": (-2.0, 1.5), "scale": 1.08, "axis_offset": (4.0, -6.0)}]:
        assert np.all(optical_image(np.zeros((40, 40), np.float32), det, psf_sigma_px=PSF, **geometry) == 1.0)
        od = make_phantom((40, 40), mode="pure", seed=0).optical_density(6300.0)
        assert od[0].max() > 0.05 and od[:, 0].max() > 0.05  # the particle touches the map's border
        img = optical_image(od, det, psf_sigma_px=PSF, **geometry)
        padded = optical_image(np.pad(od, 6), det, psf_sigma_px=PSF, **geometry)
        np.testing.assert_allclose(img, padded, rtol=0, atol=1e-5, err_msg=str(geometry))
        assert np.all(img[:5] == 1.0) and np.all(img[:, -5:] == 1.0), geometry
        assert img.min() < 0.9, geometry


@pytest.mark.parametrize("scale", [1.0, 1.12])
def test_absorbed_photons_are_conserved_under_displacement(scale):
    """The photons the sample removes from the beam do not depend on where it sits: the absorbed
    fraction summed over the detector, times the detector-pixel area ``scale**2`` in nominal
    pixels, is the same at every sub-pixel displacement and equals the map's own total."""
    od = make_phantom((48, 48), mode="mixed", seed=2).optical_density(6300.0)
    det = (72, 72)
    absorbed = float(np.sum(1.0 - np.exp(-od.astype(np.float64))))
    for shift in [(0.0, 0.0), (0.5, 0.5), (0.27, -0.81), (3.4, -2.6)]:
        img = optical_image(od, det, scale=scale, shift=shift, psf_sigma_px=PSF)
        total = float(np.sum(1.0 - img.astype(np.float64))) * scale**2
        # the clamp at the sharpest edges and the cubic's magnification error: measured < 0.2 %
        assert abs(total - absorbed) < 5e-3 * absorbed, (shift, total, absorbed)


def test_no_ringing_at_a_sharp_absorbing_edge():
    """A sharp edge of a strongly absorbing particle (OD 3, transmission 0.05) stays monotone and
    within [0.05, 1] at any displacement: no Gibbs overshoot (an interpolating cubic spline or a
    sinc rings there by several % of the step, tenths of OD at the dark side)."""
    od = np.zeros((30, 60), np.float32)
    od[:, 30:] = 3.0  # the map reaches 5 px beyond the detector on both sides
    for dx in [0.5, 0.25, -0.4]:
        img = optical_image(od, (30, 50), shift=(0.0, dx), psf_sigma_px=PSF)[15]
        assert np.all(np.diff(img.astype(np.float64)) <= 1e-7), dx
        assert img.min() >= np.exp(-3.0) - 1e-6 and img.max() <= 1.0, dx  # float32 rounding
    spline = ndimage.shift(ndimage.gaussian_filter(np.exp(-od), PSF), (0.0, 0.5), order=3, mode="nearest")[15, 5:-5]
    assert np.any(np.diff(spline) > 1e-3)  # what the clamp prevents


def test_place_sample_integrates_each_detector_pixel():
    """``place_sample`` averages a pixel-wise constant map over each detector pixel: bilinear weights
    for a translation, every map pixel counted by its area when magnified, ``outside`` beyond it."""
    rng = np.random.default_rng(0)
    m = rng.random((30, 34)).astype(np.float32)
    det = (50, 56)
    shift = (2.3, -1.7)
    dc = np.array([(det[0] - 1) / 2, (det[1] - 1) / 2])
    offset = np.array([(30 - 1) / 2, (34 - 1) / 2]) - dc - shift  # scale 1: the axis drops out
    # "grid-constant": the map's border pixels cover half a pixel beyond their centres too
    bilinear = ndimage.affine_transform(m, [1.0, 1.0], offset=offset, output_shape=det, order=1,
                                        mode="grid-constant", cval=0.0, prefilter=False)
    out = place_sample(m, det, shift=shift, axis_offset=(4.0, -6.0))
    np.testing.assert_allclose(out, bilinear, rtol=0, atol=1e-6)
    for scale in [1.13, 0.9]:
        out = place_sample(m, det, scale=scale, shift=(0.4, -0.3))
        assert abs(float(out.sum()) * scale**2 - float(m.sum())) < 1e-4 * float(m.sum()), scale
    assert np.all(place_sample(m, det, shift=(40.0, 0.0), outside=1.0) == 1.0)
    with pytest.raises(ValueError, match="outside"):
        place_sample(m, det, outside=float("nan"))
    with pytest.raises(ValueError, match="psf_sigma_px"):
        optical_image(m, det, psf_sigma_px=-1.0)
    with pytest.raises(ValueError, match="shift"):
        optical_image(m, det, shift=(np.nan, 0.0))
