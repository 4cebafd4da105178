"""Sub-pixel registration, shifting, magnification and the running-reference registration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from txm_live.registration import (
    RunningRegistration,
    edge_features,
    phase_cross_correlation,
    rescale_image,
    shift_image,
    transform_image,
)

BIG = 260
CROP = (slice(40, 200), slice(30, 210))  # 160 x 180 field of view


def _scene(seed: int = 0) -> np.ndarray:
    """A particle-like OD map: smooth blobs with texture, zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:BIG, 0:BIG]
    particle = ((yy - 130) ** 2 / 70**2 + (xx - 125) ** 2 / 80**2) < 1
    texture = ndi.gaussian_filter(rng.random((BIG, BIG)), 2.5)
    texture = (texture - texture.min()) / np.ptp(texture)
    return (particle * (0.5 + texture)).astype(np.float32)


def _view(scene: np.ndarray, shift=(0.0, 0.0), *, contrast: float = 1.0, noise: float = 0.0, seed: int = 0):
    moved = ndi.shift(scene, shift, order=3, mode="constant")[CROP] * contrast
    if noise:
        moved = moved + np.random.default_rng(seed).normal(0, noise, moved.shape)
    return moved.astype(np.float32)


def test_matches_scikit_image_reference():
    from skimage.registration import phase_cross_correlation as sk_pcc

    scene = _scene(1)
    ref = edge_features(_view(scene))
    for shift in [(3.3, -7.6), (-12.25, 4.5), (0.4, 0.0)]:
        mov = edge_features(_view(scene, shift))
        ours = phase_cross_correlation(ref, mov, upsample_factor=20)
        theirs = sk_pcc(ref, mov, upsample_factor=20, normalization="phase")[0]
        np.testing.assert_allclose(ours, theirs, atol=0.051)


@pytest.mark.parametrize("shift", [(2.3, -1.7), (-15.6, 11.2), (0.25, 0.75)])
def test_recovers_subpixel_shift(shift):
    scene = _scene(2)
    ref = edge_features(_view(scene))
    mov = edge_features(_view(scene, shift, noise=0.02, seed=3))
    est = phase_cross_correlation(ref, mov, upsample_factor=20)
    np.testing.assert_allclose(est, -np.asarray(shift), atol=0.12)


def test_robust_to_contrast_change_across_an_edge():
    scene = _scene(3)
    ref = edge_features(_view(scene))
    # the particle absorbs 2.7x more above the edge
    mov = edge_features(_view(scene, (4.4, -2.2), contrast=2.7, noise=0.03, seed=4))
    est = phase_cross_correlation(ref, mov, upsample_factor=20)
    np.testing.assert_allclose(est, [-4.4, 2.2], atol=0.12)


def test_fourier_space_input_and_integer_precision():
    scene = _scene(4)
    a, b = edge_features(_view(scene)), edge_features(_view(scene, (5.0, -3.0)))
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    np.testing.assert_allclose(phase_cross_correlation(fa, fb, space="fourier", upsample_factor=1), [-5, 3])


def test_shift_and_transform_conventions():
    img = np.zeros((41, 41), np.float32)
    img[20, 20] = 1.0
    out = shift_image(img, (3.0, -2.0))
    assert np.unravel_index(np.argmax(out), out.shape) == (23, 18)
    # magnification about the centre: a point at distance d moves to s*d
    img = np.zeros((101, 101), np.float32)
    img[50 + 10, 50 - 20] = 1.0
    out = rescale_image(img, 1.5, order=1)
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert (y, x) == (50 + 15, 50 - 30)
    # about another centre, then shifted, in one interpolation
    out = transform_image(img, scale=2.0, shift=(1.0, 2.0), center=(60.0, 30.0))
    assert np.unravel_index(np.argmax(out), out.shape) == (61, 32)
    assert transform_image(img).dtype == np.float32


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: phase_cross_correlation(np.zeros((8, 8)), np.zeros((8, 9))), "moving"),
        (lambda: phase_cross_correlation(np.zeros(8), np.zeros(8)), "reference"),
        (lambda: phase_cross_correlation(np.zeros((8, 8)), np.zeros((8, 8)), upsample_factor=0), "upsample_factor"),
        (lambda: transform_image(np.zeros((8, 8)), scale=0.0), "scale"),
        (lambda: transform_image(np.zeros((8, 8)), shift=(np.nan, 0)), "shift"),
        (lambda: RunningRegistration((4, 4)), "shape"),
    ],
)
def test_invalid_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_running_registration_follows_drift_jumps_and_an_edge():
    """120 frames: 25 px drift, two 12 px jumps, 1.5 px jitter, contrast x2.7 across an edge."""
    scene = _scene(5)
    rng = np.random.default_rng(6)
    n = 120
    t = np.linspace(0, 1, n)
    true = np.stack([25 * t * 0.6, 25 * t * 0.8], axis=1)
    true[40:] += (12.0, -3.0)
    true[90:] += (-4.0, 12.5)
    true += rng.normal(0, 1.5, true.shape)
    reg = RunningRegistration(_view(scene).shape, upsample_factor=10)
    est = []
    for i in range(n):
        contrast = 1.0 + 1.7 / (1 + np.exp(-(i - 60) / 2.0))  # the edge at frame 60
        est.append(reg.update(_view(scene, tuple(true[i]), contrast=contrast, noise=0.03, seed=i)))
    est = np.asarray(est)
    # registering frame i must undo its displacement relative to frame 0
    err = est + (true - true[0])
    rms = float(np.sqrt(np.mean(err**2)))
    assert rms < 0.2, rms  # measured 0.06 px
    assert np.max(np.abs(err)) < 0.5
    assert reg.n_jumps >= 2  # the jumps were noticed


def test_running_registration_rejects_wrong_shape():
    reg = RunningRegistration((32, 32))
    with pytest.raises(ValueError, match="image"):
        reg.update(np.zeros((32, 31)))
