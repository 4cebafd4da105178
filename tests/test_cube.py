"""IncrementalCube (energy-major storage) and XanesSession (online correction + completeness)."""

from __future__ import annotations

import numpy as np
import pytest

from txm_live.cube import IncrementalCube
from txm_live.edges import EdgeWindow
from txm_live.errors import FrameError
from txm_live.session import XanesSession

SHAPE = (6, 10)


def frame(value: float) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


# --------------------------------------------------------------------------- IncrementalCube
def test_planned_energies_in_any_order_give_sorted_view_blocks():
    plan = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    cube = IncrementalCube(SHAPE, expected_energies=plan[::-1])
    for e in (12.0, 10.0, 14.0, 11.0, 13.0):
        cube.update(e, frame(e))
    np.testing.assert_array_equal(cube.energies, plan)
    energies, block = cube.block(11.0, 13.0)
    np.testing.assert_array_equal(energies, [11.0, 12.0, 13.0])
    np.testing.assert_array_equal(block[:, 0, 0], [11.0, 12.0, 13.0])
    assert block.dtype == np.float32
    assert np.shares_memory(block, cube._data)  # a view, no copy
    assert cube.nbytes >= 5 * SHAPE[0] * SHAPE[1] * 4


def test_covers_with_a_plan_and_without():
    planned = IncrementalCube(SHAPE, expected_energies=[1.0, 2.0, 3.0, 4.0])
    planned.update(1.0, frame(1)).update(3.0, frame(3))
    assert not planned.covers(1.0, 3.0)
    np.testing.assert_array_equal(planned.missing(1.0, 3.0), [2.0])
    planned.update(2.0, frame(2))
    assert planned.covers(1.0, 3.0) and not planned.covers(1.0, 4.0)
    assert not planned.covers(10.0, 20.0)  # no planned energy inside

    free = IncrementalCube(SHAPE)
    free.update(1.0, frame(1)).update(2.0, frame(2))
    assert not free.covers(1.5, 3.0)
    free.update(3.5, frame(3.5))  # passed the end
    assert free.covers(1.5, 3.0)
    assert not free.covers(5.0, 6.0)
    with pytest.raises(ValueError, match="emin"):
        free.covers(3.0, 1.0)


def test_duplicates_are_averaged_and_counted():
    cube = IncrementalCube(SHAPE, expected_energies=[1.0, 2.0])
    cube.update(1.0, frame(2.0)).update(1.0 + 1e-3, frame(4.0)).update(1.0, frame(9.0))
    _, block = cube.block(1.0, 1.0)
    assert block[0, 0, 0] == pytest.approx(5.0)
    assert cube.n_duplicates == 2 and cube.n_frames == 3
    energies, counts = cube.repeats()
    np.testing.assert_array_equal(energies, [1.0])
    np.testing.assert_array_equal(counts, [3])


def test_duplicate_with_masked_pixels_keeps_the_valid_value():
    cube = IncrementalCube(SHAPE)
    bad = np.ones(SHAPE, bool)
    bad[0, 0] = False
    cube.update(1.0, frame(2.0), bad)  # pixel (0,0) invalid in the first frame
    cube.update(1.0, frame(4.0))
    _, block = cube.block(0, 2)
    assert block[0, 0, 0] == 4.0  # only the valid repeat
    assert block[0, 1, 1] == 3.0  # mean of both
    assert cube.valid_mask()[0, 0]  # valid in a repeat


def test_valid_mask_is_the_and_over_the_window():
    cube = IncrementalCube(SHAPE)
    for e in range(5):
        v = np.ones(SHAPE, bool)
        v[e, e] = False
        cube.update(float(e), frame(e), v)
    m = cube.valid_mask(0.0, 2.0)
    assert not m[0, 0] and not m[1, 1] and not m[2, 2] and m[3, 3]
    assert cube.valid_mask(3.0, 3.0).sum() == SHAPE[0] * SHAPE[1] - 1


def test_growth_beyond_the_plan_and_unordered_unplanned_blocks():
    cube = IncrementalCube(SHAPE, expected_energies=[1.0, 2.0], initial_capacity=1)
    for e in (1.0, 2.0, 5.0, 3.0, 4.0):
        cube.update(e, frame(e))
    np.testing.assert_array_equal(cube.energies, [1, 2, 3, 4, 5])
    energies, block = cube.block(2.0, 5.0)
    np.testing.assert_array_equal(energies, [2, 3, 4, 5])
    np.testing.assert_array_equal(block[:, 0, 0], [2, 3, 4, 5])  # gathered in energy order
    mono = IncrementalCube(SHAPE, initial_capacity=2)
    for e in np.arange(10.0):
        mono.update(e, frame(e))
    assert np.shares_memory(mono.block(2, 6)[1], mono._data)  # monotonic scan: still a view


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda c: c.update(float("nan"), frame(1)), "energy"),
        (lambda c: c.update(1.0, np.zeros((2, 2))), "frame"),
        (lambda c: c.update(1.0, np.array([["a"] * 10] * 6)), "frame"),
        (lambda c: c.update(1.0, frame(1), np.ones((2, 2), bool)), "valid"),
    ],
)
def test_cube_rejects_bad_frames(call, name):
    with pytest.raises(ValueError, match=name):
        call(IncrementalCube(SHAPE))


def test_release_frees_storage():
    cube = IncrementalCube(SHAPE, expected_energies=np.arange(100.0))
    cube.update(1.0, frame(1))
    cube.release()
    assert cube.nbytes == 0 and len(cube) == 0


# --------------------------------------------------------------------------- XanesSession
WIN = EdgeWindow("Nd", "L3", 100.0, (-50.0, -10.0), (10.0, 50.0))  # [50, 150]


def counts(od: float, flat: float = 4000.0, dark: float = 100.0) -> np.ndarray:
    return np.full(SHAPE, dark + flat * np.exp(-od), np.float64).round().astype(np.uint16)


def flat_img(flat: float = 4000.0, dark: float = 100.0) -> np.ndarray:
    return np.full(SHAPE, dark + flat, np.uint16)


def test_session_interleaved_flats_and_window_completion():
    energies = np.arange(40.0, 171.0, 10.0)
    s = XanesSession(windows=[WIN], expected_energies=energies, register=False)
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    done_at = None
    for e in energies:
        assert s.add_sample(e, counts(0.5)) == ()  # waits for its flat
        assert s.n_pending == 1
        done = s.add_flat(e, flat_img())
        if done:
            done_at = e
    assert done_at == 150.0  # complete exactly when the last planned energy of [50, 150] arrived
    data = s.window_data(WIN)
    np.testing.assert_array_equal(data.energies, np.arange(50.0, 151.0, 10.0))
    np.testing.assert_allclose(data.block, 0.5, atol=2e-3)
    assert data.valid.all() and data.missing.size == 0
    assert s.warnings == []


def test_session_without_plan_completes_when_energy_passes_the_end():
    s = XanesSession(windows=[WIN], register=False)
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    for e in (60.0, 100.0, 149.0):
        s.add_sample(e, counts(0.3))
        assert s.add_flat(e, flat_img()) == ()
    s.add_sample(151.0, counts(0.3))
    assert s.add_flat(151.0, flat_img()) == (WIN,)


def test_session_flats_taken_before_the_scan_are_interpolated():
    s = XanesSession(windows=[WIN], register=False, flat_mode="interpolate")
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    s.add_flat(0.0, flat_img(3000.0))
    s.add_flat(200.0, flat_img(5000.0))
    s.add_sample(100.0, counts(0.7, flat=4000.0))  # processed at once with the interpolated flat
    assert s.n_pending == 0 and s.n_frames == 1
    np.testing.assert_allclose(s.window_data(WIN).block[0], 0.7, atol=2e-3)


def test_session_single_flat_taken_before_the_scan_is_used_at_once():
    s = XanesSession(windows=[WIN], register=False)
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    s.add_flat(10.0, flat_img())  # one flat before any sample, outside the scan range
    for e in (60.0, 100.0, 160.0):
        s.add_sample(e, counts(0.25))
        assert s.n_pending == 0
    np.testing.assert_allclose(s.window_data(WIN).block, 0.25, atol=2e-3)
    assert s.completed == (WIN,)


def test_session_page_delivery_all_samples_then_all_flats():
    energies = np.arange(40.0, 171.0, 10.0)
    s = XanesSession(windows=[WIN], expected_energies=energies, register=False)
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    for e in energies:
        s.add_sample(e, counts(0.2 + e / 1000))
    assert s.n_pending == len(energies)
    for e in energies:
        s.add_flat(e, flat_img())
    assert s.n_pending == 0
    d = s.window_data(WIN)
    np.testing.assert_allclose(d.block[:, 0, 0], 0.2 + d.energies / 1000, atol=2e-3)


def test_session_scalar_i0_and_missing_flats():
    s = XanesSession(windows=[WIN], register=False, max_pending=1)
    s.add_dark(np.full(SHAPE, 100, np.uint16))
    s.add_sample(60.0, counts(0.4), i0=4000.0)
    s.add_sample(70.0, counts(0.4), i0=4000.0)  # overflow: oldest corrected with I0
    s.flush()
    assert s.n_frames == 2
    np.testing.assert_allclose(s.window_data(WIN).block, 0.4, atol=2e-3)
    lost = XanesSession(windows=[WIN], register=False, max_pending=1)
    lost.add_sample(60.0, counts(0.4))
    lost.add_sample(70.0, counts(0.4))
    lost.flush()
    assert lost.n_frames == 0 and lost.n_dropped == 2
    assert all(e.startswith("MissingFlatError") for e in lost.errors)
    assert any("dark" in w for w in lost.warnings) or lost.n_frames == 0


def test_session_rejects_corrupt_frames_with_frame_errors():
    s = XanesSession(windows=[WIN], register=False, frame_shape=SHAPE)
    with pytest.raises(FrameError, match="shape"):
        s.add_sample(60.0, np.zeros((3, 3), np.uint16))
    with pytest.raises(FrameError, match="dtype"):
        s.add_sample(60.0, np.array([["a"] * 10] * 6))
    with pytest.raises(FrameError, match="nan"):
        s.add_sample(float("nan"), counts(0.1))
    with pytest.raises(FrameError, match="not a number"):
        s.add_flat(None, flat_img())  # type: ignore[arg-type]


def test_session_magnification_and_registration_restore_the_first_frame():
    """Frames magnified by pixel_size/pixel_size_ref and shifted are mapped back onto frame 0."""
    from scipy import ndimage as ndi

    from txm_live.registration import transform_image

    rng = np.random.default_rng(0)
    shape = (96, 104)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    particle = ((yy - 48) ** 2 / 30**2 + (xx - 50) ** 2 / 34**2) < 1
    texture = ndi.gaussian_filter(rng.random(shape), 2.0)
    od0 = (particle * (0.4 + texture)).astype(np.float32)
    win = EdgeWindow("Nd", "L3", 100.0, (-50.0, -10.0), (10.0, 50.0))
    s = XanesSession(windows=[win], register=True, correct_magnification=True)
    s.add_dark(np.full(shape, 100, np.uint16))
    flat = np.full(shape, 4100, np.uint16)
    energies = np.arange(50.0, 151.0, 5.0)
    for i, e in enumerate(energies):
        px = 30.0 * (1 + 0.0015 * (e - 50))  # +15 % over the scan
        scale = px / 30.0
        shift = (0.05 * i, -0.08 * i) if i < 12 else (0.05 * i + 9.0, -0.08 * i - 4.0)  # drift + jump
        # the detector sees the object smaller by 1/scale and displaced
        od = transform_image(od0, scale=1 / scale, shift=shift)
        img = (100 + 4000 * np.exp(-od)).round().astype(np.uint16)
        s.add_sample(e, img, pixel_size=px)
        s.add_flat(e, flat)
    d = s.window_data(win)
    inner = d.valid.copy()
    inner[:8] = inner[-8:] = False
    inner[:, :8] = inner[:, -8:] = False
    err = np.abs(d.block[-1] - od0)[inner]
    assert np.median(err) < 0.02 and np.percentile(err, 95) < 0.08
    scales = [f.scale for f in s.frames]
    assert scales[0] == 1.0 and scales[-1] == pytest.approx(1.15)
    # pixels that came from outside the detector are masked
    assert not d.valid.all()
