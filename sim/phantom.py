"""Seeded phantom of a corroded Nd2Fe14B particle (pure numpy; the ground truth of the simulator).

:func:`make_phantom` builds a :class:`Phantom`: per pixel the projected path lengths (um) of the
two chemical species, metallic Nd2Fe14B and the Nd(OH)3 corrosion product, plus the ground-truth
phase labels. :meth:`Phantom.optical_density` gives the noise-free optical density at one energy,
which the ophyd camera of :mod:`txm_live.sim.devices` turns into counts.

Phases (labels) follow Duan et al., Sci. Rep. 6, 34406 (2016):

===== ====================================================================================
label meaning
===== ====================================================================================
0     background (no material)
1     mixed: metal and oxide below the resolution (the corroded zone, paper phase 1)
2     metallic Nd2Fe14B core (paper phase 2)
3     oxide/hydroxide pockets and bands (the minority "outlier" phase, paper phase 3)
===== ====================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from txm_live.sim.fields import LabelledFrame, cached_per_energy, check_energies, check_open_range, check_seed
from txm_live.sim.fields import check_shape, elliptic_gaussian, frame_coordinates, particle_outline, rotated
from txm_live.sim.fields import smooth_field, undulating_thickness
from txm_live.sim.spectra import (
    METAL,
    OXIDE,
    PhaseSpectrum,
    absolute_mu,
    ground_truth_normalized,
    nd_number_density,
)

__all__ = ["Phantom", "make_phantom", "FULL_SHAPE", "PIXEL_SIZE_NM", "LABEL_NAMES"]

#: Detector frame of the seed experiment after registration and cropping (H, W).
FULL_SHAPE: tuple[int, int] = (602, 643)
#: Pixel size of the seed experiment (nm).
PIXEL_SIZE_NM: float = 31.2
#: Names of the ground-truth labels.
LABEL_NAMES: dict[int, str] = {0: "background", 1: "mixed", 2: "metal", 3: "oxide"}

# Particle area / frame area of the seed experiment: 18.7 um equivalent diameter in a
# 602 x 643 frame of 31.2 nm pixels.
_DEFAULT_AREA_FRACTION: float = float(
    np.pi * (18.7e3 / PIXEL_SIZE_NM / 2.0) ** 2 / (FULL_SHAPE[0] * FULL_SHAPE[1])
)
# Outline-relative radius beyond which the particle always belongs to the corroded zone.
_RIM_RHO: float = 0.88
# Share of a column's Nd that a pocket must hold for the pixel to count as phase 3 ("mixed").
_POCKET_ND_SHARE: float = 0.6


@dataclass(frozen=True, eq=False)
class Phantom(LabelledFrame):
    """Ground truth of a simulated corroded Nd2Fe14B particle.

    All arrays are read-only, shape ``(H, W)``.

    Attributes
    ----------
    labels : ndarray of int8
        0 background, 1 mixed, 2 metal, 3 oxide (see module docstring). In ``"mixed"`` mode the
        label is the dominant material along the beam, weighted by its Nd atoms (i.e. by its
        weight in the normalized pixel spectrum): 3 where a pocket holds >= 60 % of the column's
        Nd, else 1 where oxide-bearing material (skin, mixed layer, pocket rim) holds >= 50 %
        (a sub-resolution mixture, like the paper's phase 1), else 2.
    oxidized_fraction : ndarray of float32
        Fraction of the Nd atoms along the beam that sit in the oxide (0 metal, 1 oxide; 0 in the
        background). This is the weight of the oxide in the edge-step-normalized pixel spectrum,
        i.e. what a linear-combination fit of the normalized spectrum measures.
    thickness_um : ndarray of float32
        Projected thickness (um) = ``metal_path_um + oxide_path_um``.
    metal_path_um : ndarray of float32
        Projected path length (um) through Nd2Fe14B.
    oxide_path_um : ndarray of float32
        Projected path length (um) through Nd(OH)3.
    pixel_size_nm : float
        Pixel size (nm) at the first energy.
    mode : {"mixed", "pure"}
        ``"pure"``: every particle pixel is exactly one phase; ``"mixed"``: the projection mixes
        the layers and the oxidized fraction is continuous.
    seed : int
        Seed of the geometry.
    mixed_oxide_fraction : float
        Nd oxide fraction of the phase-1 material (exact value of every phase-1 pixel in
        ``"pure"`` mode).
    metal, oxide : PhaseSpectrum
        Spectral models of the two species.

    Notes
    -----
    Optical density (noise free) at energy E: ``OD = metal_path_um mu_metal(E) + oxide_path_um
    mu_oxide(E)`` with ``mu`` from :func:`txm_live.sim.spectra.absolute_mu` (1/um). The two
    coefficients are cached per energy, so an OD frame costs two fused multiply-adds over the
    frame (~1-3 ms at 602 x 643). Memory: five float32/int8 maps, ~7 MB at 602 x 643;
    :meth:`optical_density_stack` allocates ``n_energies * H * W * 4`` bytes (1.6 GB for the
    full 1024-energy scan at full size).
    """

    labels: NDArray[np.int8] = field(repr=False)
    oxidized_fraction: NDArray[np.float32] = field(repr=False)
    thickness_um: NDArray[np.float32] = field(repr=False)
    metal_path_um: NDArray[np.float32] = field(repr=False)
    oxide_path_um: NDArray[np.float32] = field(repr=False)
    pixel_size_nm: float
    mode: str
    seed: int
    mixed_oxide_fraction: float
    metal: PhaseSpectrum = METAL
    oxide: PhaseSpectrum = OXIDE
    _mu_cache: dict[float, tuple[np.float32, np.float32]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def phase_fractions(self) -> dict[int, float]:
        """Fraction of the particle pixels carrying each label 1, 2, 3."""
        return self._fractions((1, 2, 3))

    def mean_oxidized_fraction(self) -> NDArray[np.float64]:
        """Mean oxidized (Nd) fraction of the pixels of label 1, 2, 3 (shape (3,))."""
        out = np.zeros(3)
        for i, k in enumerate((1, 2, 3)):
            sel = self.labels == k
            out[i] = float(self.oxidized_fraction[sel].mean()) if sel.any() else np.nan
        return out

    def mu(self, energy: float) -> tuple[np.float32, np.float32]:
        """Linear attenuation coefficients (1/um) of metal and oxide at ``energy`` (eV), cached."""

        def compute(key: float) -> tuple[np.float32, np.float32]:
            e = np.array([key])
            return np.float32(absolute_mu(e, self.metal)[0]), np.float32(absolute_mu(e, self.oxide)[0])

        return cached_per_energy(self._mu_cache, energy, compute)

    def optical_density(self, energy: float) -> NDArray[np.float32]:
        """Noise-free optical density ``-ln(I/I0)`` of every pixel at one energy.

        Parameters
        ----------
        energy : float
            Photon energy (eV).

        Returns
        -------
        ndarray of float32, shape (H, W)
            A new array (the caller may modify it).
        """
        mu_m, mu_o = self.mu(energy)
        od = np.multiply(self.metal_path_um, mu_m)
        od += self.oxide_path_um * mu_o
        return od

    def optical_density_stack(self, energies: ArrayLike) -> NDArray[np.float32]:
        """Noise-free optical density at several energies, energy-major.

        Parameters
        ----------
        energies : array_like, shape (n_energies,)
            Photon energies (eV).

        Returns
        -------
        ndarray of float32, shape (n_energies, H, W)

        Notes
        -----
        Memory: ``4 n_energies H W`` bytes.
        """
        e = check_energies(energies)
        mu_m = absolute_mu(e, self.metal).astype(np.float32)
        mu_o = absolute_mu(e, self.oxide).astype(np.float32)
        out = np.empty((e.size, *self.shape), dtype=np.float32)
        for i in range(e.size):  # one frame at a time keeps temporaries small
            np.multiply(self.metal_path_um, mu_m[i], out=out[i])
            out[i] += self.oxide_path_um * mu_o[i]
        return out

    def ground_truth_spectra(
        self, energies: ArrayLike, *, edge: Literal["L3", "L2"] = "L3"
    ) -> NDArray[np.float64]:
        """Edge-step-normalized mean spectrum of the pixels of label 1, 2, 3.

        Parameters
        ----------
        energies : array_like, shape (n_energies,)
        edge : {"L3", "L2"}, optional

        Returns
        -------
        ndarray of float64, shape (3, n_energies)
            Row ``i`` is phase ``i + 1`` (mixed, metal, oxide): the metal/oxide mixture at the
            mean oxidized fraction of that label (exact for ``"pure"`` mode, the Nd-weighted
            mean for ``"mixed"``).

        Notes
        -----
        These are the model shapes ``s(E)`` of :func:`txm_live.sim.spectra.normalized_mu`.
        The absolute Nd cross section also declines as ~E^-2.6 above the edge, so an
        Athena-style normalization (pre line [E0-200, E0-60], post quadratic [E0+90, E0+440])
        of the noise-free optical density gives white lines 2-3 % higher and differs from
        ``s(E)`` by up to ~0.1 (0.06-0.12 with flattening) on 6180-6650 eV. To compare an
        analysis with the truth at the level of its own normalization, normalize
        :meth:`label_mean_optical_density` with the same function.
        """
        f = self.mean_oxidized_fraction()
        f = np.where(np.isfinite(f), f, 0.0)
        return ground_truth_normalized(energies, f, edge=edge, metal=self.metal, oxide=self.oxide)

    def label_mean_optical_density(self, energies: ArrayLike) -> NDArray[np.float64]:
        """Noise-free mean optical density spectrum of the pixels of label 1, 2, 3.

        Parameters
        ----------
        energies : array_like, shape (n_energies,)
            Photon energies (eV).

        Returns
        -------
        ndarray of float64, shape (3, n_energies)
            Row ``i`` is the mean over the pixels of label ``i + 1`` (NaN if there are none).
        """
        e = check_energies(energies)
        mu_m = absolute_mu(e, self.metal)
        mu_o = absolute_mu(e, self.oxide)
        out = np.full((3, e.size), np.nan)
        for i, k in enumerate((1, 2, 3)):
            sel = self.labels == k
            if sel.any():
                lm = float(self.metal_path_um[sel].mean(dtype=np.float64))
                lo = float(self.oxide_path_um[sel].mean(dtype=np.float64))
                out[i] = lm * mu_m + lo * mu_o
        return out


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def _soft_weight(
    value: NDArray[np.float64], threshold: float, width_px: float
) -> NDArray[np.float64]:
    """Logistic weight of ``value > threshold`` with a transition ``width_px`` pixels wide."""
    gy, gx = np.gradient(value)
    grad = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        distance = (value - threshold) / np.maximum(grad, 1e-12)  # signed distance (px)
        weight = 1.0 / (1.0 + np.exp(-4.0 * distance / width_px))
    return np.nan_to_num(weight, nan=0.0)


def make_phantom(
    shape: tuple[int, int] = FULL_SHAPE,
    *,
    mode: Literal["mixed", "pure"] = "mixed",
    seed: int = 0,
    area_fraction: float = _DEFAULT_AREA_FRACTION,
    max_thickness_um: float = 7.0,
    mixed_zone_fraction: float = 0.40,
    oxide_pocket_fraction: float = 0.03,
    mixed_oxide_fraction: float = 0.5,
    skin_um: float = 0.08,
    mixed_layer_um: float = 0.6,
    pocket_depth_fraction: float = 0.85,
    corroded_depth_fraction: float = 0.9,
    interface_width_px: float = 0.5,
    pixel_size_nm: float = PIXEL_SIZE_NM,
    metal: PhaseSpectrum = METAL,
    oxide: PhaseSpectrum = OXIDE,
) -> Phantom:
    """Build a seeded phantom of a corroded Nd2Fe14B particle.

    Parameters
    ----------
    shape : (int, int), optional
        Frame shape ``(H, W)``, each >= 16. Default 602 x 643, the seed experiment.
    mode : {"mixed", "pure"}, optional
        ``"pure"``: each particle pixel is one phase (metal, oxide, or the phase-1 mixture of
        fixed composition ``mixed_oxide_fraction``), oxidized fraction takes only the values
        0, ``mixed_oxide_fraction`` and 1. ``"mixed"``: the beam crosses an oxide skin, a mixed
        layer and the metallic core (and pockets), so the oxidized fraction is continuous and
        the label is the dominant layer.
    seed : int, optional
        Seed of the geometry; the same arguments give bit-identical phantoms.
    area_fraction : float, optional
        Particle area / frame area (default 0.73: an 18.7 um equivalent-diameter particle in the
        602 x 643 frame of 31.2 nm pixels). The particle may be cut by the frame edges.
    max_thickness_um : float, optional
        Thickness at the thickest point (um); 7 um by default.
    mixed_zone_fraction : float, optional
        Fraction of the particle pixels in the corroded zone (phase 1), default 0.40; in
        (0.25, 0.9) because the whole rim is corroded.
    oxide_pocket_fraction : float, optional
        Fraction of the particle pixels in oxide pockets and bands (phase 3), default 0.03.
        Pockets sit where the particle is at least half as thick as its maximum, so their
        spectra have a usable SNR.
    mixed_oxide_fraction : float, optional
        Nd oxide fraction of the phase-1 material (0.5: half of its Nd atoms are oxidized).
    skin_um : float, optional
        Oxide skin thickness on each face (um), ``"mixed"`` mode only.
    mixed_layer_um : float, optional
        Mixed (partly corroded) layer under the skin on each face of the uncorroded zone (um),
        ``"mixed"`` mode only.
    pocket_depth_fraction : float, optional
        Fraction of the column (below the skin) occupied by a pocket, ``"mixed"`` mode only.
    corroded_depth_fraction : float, optional
        Mean fraction of the column (below the skin) that is mixed-layer material inside the
        corroded zone, ``"mixed"`` mode only (varies smoothly by +-0.06 around it).
    interface_width_px : float, optional
        Width (px) of the lateral transitions between zones, ``"mixed"`` mode only.
    pixel_size_nm : float, optional
        Pixel size (nm) reported by the phantom.
    metal, oxide : PhaseSpectrum, optional
        Spectral models of the two species.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).

    Notes
    -----
    Geometry is defined in frame units, so a 64 x 64 phantom is a scaled-down copy of the full
    one with the same phase fractions; thicknesses are physical (um), so optical densities and
    photon statistics do not depend on ``shape``. The outline is ``r(theta) = R0 (1 + sum_k
    a_k cos(k theta + phi_k))`` (k = 2..7), thickness ``t = t_max sqrt(1 - rho^2)`` (rho = r /
    outline radius) with a +-5 % undulation. The corroded zone is the top
    ``mixed_zone_fraction`` of ``rho + 0.3 g(x, y)`` (``g`` a smooth random field) and always
    includes the rim ``rho > 0.88`` (~23 % of the particle): a rim of varying width with lobes
    reaching inwards. Pockets are Gaussian blobs and bands (>= ~30 px each, fewer on small
    frames) thresholded to cover exactly ``oxide_pocket_fraction`` of the particle.

    Transmission ``exp(-OD)`` through 7 um of metal: 0.57 at 6150 eV, 0.19 on the L3 white line,
    0.39 at 6350 eV; through 7 um of Nd(OH)3: 0.61, 0.04 and 0.30. Over the particle pixels of
    the default phantoms the minimum transmission is ~0.57 below the L3 edge, ~0.33 at 6350 eV
    and ~0.05 on the white line (oxide pockets, up to ~6 um thick). Nd edge steps: 0.063 /um
    (Nd2Fe14B), 0.112 /um (Nd(OH)3), i.e. 0.44 in OD at 7 um of metal: with 5000 photons per
    pixel the per-energy OD noise is ~0.025 there, an edge-step SNR of ~11-17 per energy point
    in the thick part.

    Cost (2 shared cores, noisy): ~0.35-0.65 s to build at 602 x 643, ~1 ms per
    :meth:`Phantom.optical_density` frame (0.4 ms when the energy is cached).
    """
    check_shape(shape, min_size=16)
    if mode not in ("mixed", "pure"):
        raise ValueError(f"mode must be 'mixed' or 'pure', got {mode!r}")
    check_seed(seed)
    area_fraction = check_open_range("area_fraction", area_fraction, 0.05, 0.95)
    max_thickness_um = _check_positive("max_thickness_um", max_thickness_um)
    # the always-corroded rim is ~23 % of the particle
    mixed_zone_fraction = check_open_range("mixed_zone_fraction", mixed_zone_fraction, 0.25, 0.9)
    oxide_pocket_fraction = check_open_range("oxide_pocket_fraction", oxide_pocket_fraction, 0.0, 0.3)
    if mixed_zone_fraction + oxide_pocket_fraction >= 0.95:
        raise ValueError("mixed_zone_fraction + oxide_pocket_fraction must be < 0.95")
    mixed_oxide_fraction = check_open_range("mixed_oxide_fraction", mixed_oxide_fraction)
    skin_um = _check_positive("skin_um", skin_um)
    mixed_layer_um = _check_positive("mixed_layer_um", mixed_layer_um)
    pocket_depth_fraction = check_open_range("pocket_depth_fraction", pocket_depth_fraction, 0.5, 1.0)
    corroded_depth_fraction = check_open_range(
        "corroded_depth_fraction", corroded_depth_fraction, 0.5, 0.94
    )
    interface_width_px = _check_positive("interface_width_px", interface_width_px)
    pixel_size_nm = _check_positive("pixel_size_nm", pixel_size_nm)
    if not isinstance(metal, PhaseSpectrum):
        raise ValueError("metal must be a PhaseSpectrum")
    if not isinstance(oxide, PhaseSpectrum):
        raise ValueError("oxide must be a PhaseSpectrum")

    rng = np.random.default_rng(int(seed))
    u, v, scale = frame_coordinates(shape, rng)
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)

    # Irregular outline, scaled so that the particle covers exactly area_fraction.
    rho, particle, n_particle = particle_outline(
        rng, r, theta, harmonics=[(k, 0.10 / k**0.8) for k in range(2, 8)], floor=0.4,
        area_fraction=area_fraction, min_pixels=50, shape=shape)
    thickness = undulating_thickness(rng, u, v, rho, particle, max_thickness_um=max_thickness_um, power=2)

    # Corroded zone (phase 1): outer rim of varying width with lobes reaching inwards.
    # The whole surface is corroded (rho > _RIM_RHO, where the particle is thinner than ~half its
    # maximum thickness), so uncorroded metal is never seen through a thin column.
    corrosion = rho + 0.3 * smooth_field(rng, u, v, n_waves=8, k_min=2.0, k_max=7.0)
    corrosion += 5.0 * np.clip((rho - _RIM_RHO) / 0.02, 0.0, 1.0)
    zone_threshold = float(np.quantile(corrosion[particle], 1.0 - mixed_zone_fraction))

    # Pockets and bands (phase 3), only where the particle is thick.
    eligible = np.clip((thickness / max_thickness_um - 0.5) / 0.1, 0.0, 1.0)
    candidates = np.flatnonzero(eligible.ravel() >= 1.0)
    if candidates.size < 10:
        raise ValueError(f"shape {shape!r} is too small for oxide pockets")
    n_pocket = max(int(round(oxide_pocket_fraction * n_particle)), 1)
    # About >= 30 pixels per feature, so small frames get fewer, not thinner, pockets.
    n_features = int(np.clip(n_pocket // 30, 3, 8))
    n_bands = 2 if n_features >= 6 else 1
    pockets = np.zeros_like(r)
    min_sigma = 1.5 / scale  # >= 1.5 px so pockets survive small frames
    for _ in range(n_features - n_bands):  # compact pockets
        c = candidates[rng.integers(candidates.size)]
        sa = max(rng.uniform(0.03, 0.07), min_sigma)
        sb = max(sa * rng.uniform(0.5, 1.0), min_sigma)
        ang = rng.uniform(0.0, np.pi)
        pockets = np.maximum(pockets, elliptic_gaussian(u, v, c, ang, sa, sb))
    for _ in range(n_bands):  # corrosion bands along cracks
        c = candidates[rng.integers(candidates.size)]
        ang = rng.uniform(0.0, np.pi)
        half_length = rng.uniform(0.15, 0.3)
        width = max(0.012, min_sigma)
        along, across = rotated(u, v, c, ang)
        band = np.exp(-0.5 * (across / width) ** 2) * np.exp(
            -0.5 * (np.maximum(np.abs(along) - half_length, 0.0) / width) ** 2
        )
        pockets = np.maximum(pockets, band)
    pockets *= eligible
    pocket_threshold = float(np.partition(pockets[particle], -n_pocket)[-n_pocket])

    # Nd atoms per volume: oxide / metal (edge step ratio 0.112 / 0.063).
    nd_ratio = nd_number_density(oxide) / nd_number_density(metal)
    # Volume fraction of oxide in the phase-1 material with Nd oxide fraction f.
    phi_vol = mixed_oxide_fraction / (mixed_oxide_fraction + nd_ratio * (1.0 - mixed_oxide_fraction))

    if mode == "pure":
        is_pocket = particle & (pockets >= pocket_threshold) & (pockets > 0)
        is_mixed = particle & ~is_pocket & (corrosion >= zone_threshold)
        labels = np.where(particle, 2, 0).astype(np.int8)
        labels[is_mixed] = 1
        labels[is_pocket] = 3
        oxide_path = np.where(is_pocket, thickness, np.where(is_mixed, phi_vol * thickness, 0.0))
        metal_path = thickness - oxide_path
    else:
        w_zone = _soft_weight(corrosion, zone_threshold, interface_width_px)
        w_pocket = np.where(pockets > 0, _soft_weight(pockets, pocket_threshold, interface_width_px), 0.0)
        depth_var = 0.06 * np.tanh(smooth_field(rng, u, v, n_waves=6, k_min=3.0, k_max=9.0))
        skin = np.minimum(thickness, 2.0 * skin_um)
        rest = thickness - skin
        pocket = w_pocket * pocket_depth_fraction * rest
        rest2 = rest - pocket
        shell = np.minimum(rest2, 2.0 * mixed_layer_um)
        corroded = (corroded_depth_fraction + depth_var) * rest2
        mixed = (1.0 - w_zone) * shell + w_zone * np.maximum(corroded, shell)
        core = rest2 - mixed
        oxide_path = skin + pocket + phi_vol * mixed
        metal_path = core + (1.0 - phi_vol) * mixed
        # Labels by Nd content (the weight of each material in the normalized spectrum): a
        # pocket is phase 3 where it holds >= 60 % of the column's Nd; otherwise the column is
        # phase 1 where the oxide-bearing materials (skin, mixed layer, pocket rim) hold at
        # least half of the Nd (a sub-resolution mixture), else phase 2 (metallic core).
        nd_mixed = phi_vol * nd_ratio + (1.0 - phi_vol)  # Nd density of the mixed material
        nd_pocket = nd_ratio * pocket
        nd_surface = nd_ratio * skin + nd_mixed * mixed
        nd_column = np.maximum(nd_pocket + nd_surface + core, 1e-12)
        dominant = np.where(
            nd_pocket >= _POCKET_ND_SHARE * nd_column,
            2,
            np.where(nd_pocket + nd_surface >= core, 0, 1),
        )
        labels = np.where(particle, dominant + 1, 0).astype(np.int8)

    oxide_path = np.where(particle, oxide_path, 0.0)
    metal_path = np.where(particle, metal_path, 0.0)
    nd_oxide = nd_ratio * oxide_path
    nd_total = nd_oxide + metal_path
    with np.errstate(divide="ignore", invalid="ignore"):
        oxidized = np.where(nd_total > 0, nd_oxide / np.where(nd_total > 0, nd_total, 1.0), 0.0)
    if mode == "pure":  # exact discrete values, free of rounding
        oxidized = np.select([labels == 3, labels == 1], [1.0, mixed_oxide_fraction], 0.0)

    arrays = {
        "labels": labels,
        "oxidized_fraction": oxidized.astype(np.float32),
        "thickness_um": (metal_path + oxide_path).astype(np.float32),
        "metal_path_um": metal_path.astype(np.float32),
        "oxide_path_um": oxide_path.astype(np.float32),
    }
    for arr in arrays.values():
        arr.setflags(write=False)
    return Phantom(
        **arrays,
        pixel_size_nm=pixel_size_nm,
        mode=mode,
        seed=int(seed),
        mixed_oxide_fraction=mixed_oxide_fraction,
        metal=metal,
        oxide=oxide,
    )
