"""Seeded phantom of a battery-electrode particle from measured K-edge standards (pure numpy/scipy).

:func:`make_battery_phantom` builds a :class:`BatteryPhantom`: per pixel the projected path lengths
(um) of two or three materials and the ground-truth phase labels. By default it is a partly
delithiated lithium iron phosphate particle imaged across the Fe K edge:

===== ============ ===========================================================================
label material     where
===== ============ ===========================================================================
0     background   no material
1     LiFePO4      the core (Fe2+, white line at ~7126 eV)
2     FePO4        a rim of varying width and halos along through-cracks (Fe3+, ~7133 eV)
3     magnetite    ~3 % of the particle, small inclusions (mixed valence)
===== ============ ===========================================================================

Every material is a :class:`txm_live.sim.standards.Material`: a MEASURED normalized spectrum put
on an absolute scale with xraydb (see :mod:`txm_live.sim.standards`), so optical densities, edge
steps and photon statistics are those of real LiFePO4, FePO4 and Fe3O4 of the given thickness.
With ``materials=(LINIO2, NIO)`` and no inclusion the same geometry is a LiNiO2 particle with a
NiO-like (rock-salt) rim and crack faces, imaged across the Ni K edge.

It is a drop-in for :func:`txm_live.sim.phantom.make_phantom` in the simulated TXM
(:func:`txm_live.sim.make_txm` needs ``shape``, ``pixel_size_nm`` and ``optical_density``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from txm_live.sim.fields import LabelledFrame, cached_per_energy, check_energies, check_open_range, check_seed
from txm_live.sim.fields import check_shape, elliptic_gaussian, frame_coordinates, particle_outline, rotated
from txm_live.sim.fields import smooth_field, undulating_thickness
from txm_live.sim.standards import FE3O4, FEPO4, LIFEPO4, Material

__all__ = ["BatteryPhantom", "make_battery_phantom"]


@dataclass(frozen=True, eq=False)
class BatteryPhantom(LabelledFrame):
    """Ground truth of a simulated battery particle.

    Attributes
    ----------
    labels : ndarray of int8, shape (H, W)
        0 background, ``k`` (1-based) the material ``materials[k - 1]`` that holds most of the
        absorber atoms (Fe or Ni) along the beam, i.e. the largest weight in the normalized
        pixel spectrum.
    path_um : ndarray of float32, shape (n_materials, H, W)
        Projected path length (um) through each material.
    materials : tuple of Material
        The materials, label order.
    pixel_size_nm : float
        Pixel size (nm).
    seed : int
        Seed of the geometry.

    Notes
    -----
    Noise-free optical density at energy E: ``OD = sum_k path_um[k] mu_k(E)`` with ``mu_k`` from
    :meth:`Material.mu` (1/um), cached per energy. Memory: ``4 (n_materials + 1) H W`` bytes.
    """

    labels: NDArray[np.int8] = field(repr=False)
    path_um: NDArray[np.float32] = field(repr=False)
    materials: tuple[Material, ...]
    pixel_size_nm: float
    seed: int
    _mu_cache: dict[float, NDArray[np.float32]] = field(default_factory=dict, init=False, repr=False)

    @property
    def element(self) -> str:
        """Absorbing element (``"Fe"``)."""
        return self.materials[0].element

    @property
    def edge(self) -> str:
        """Edge of the standards (``"K"``)."""
        return self.materials[0].edge

    @property
    def label_names(self) -> dict[int, str]:
        """Names of the labels, 0 = background."""
        return {0: "background", **{k + 1: m.name for k, m in enumerate(self.materials)}}

    @property
    def thickness_um(self) -> NDArray[np.float32]:
        """Total projected thickness (um)."""
        return self.path_um.sum(axis=0)

    def absorber_fraction(self) -> NDArray[np.float64]:
        """Share of the absorber atoms along the beam in each material, shape (n_materials, H, W).

        This is the weight of each material in the edge-step-normalized pixel spectrum (what a
        linear-combination fit with the standards measures); 0 in the background.
        """
        density = np.array([m.absorber_atoms_per_cm3() for m in self.materials])
        atoms = self.path_um.astype(np.float64) * density[:, None, None]
        total = atoms.sum(axis=0)
        return np.divide(atoms, total, out=np.zeros_like(atoms), where=total > 0)

    def phase_fractions(self) -> dict[int, float]:
        """Fraction of the particle pixels carrying each label 1..n_materials."""
        return self._fractions(range(1, len(self.materials) + 1))

    def mu(self, energy: float) -> NDArray[np.float32]:
        """Linear attenuation coefficients (1/um) of the materials at ``energy`` (eV), cached."""
        return cached_per_energy(
            self._mu_cache, energy, lambda key: np.array([m.mu(key) for m in self.materials], dtype=np.float32))

    def optical_density(self, energy: float) -> NDArray[np.float32]:
        """Noise-free optical density ``-ln(I/I0)`` of every pixel at one energy (eV).

        Returns
        -------
        ndarray of float32, shape (H, W)
            A new array (the caller may modify it).
        """
        mu = self.mu(energy)
        od = np.multiply(self.path_um[0], mu[0])
        for k in range(1, mu.size):
            od += self.path_um[k] * mu[k]
        return od

    def optical_density_stack(self, energies: ArrayLike) -> NDArray[np.float32]:
        """Noise-free optical density at several energies, shape (n_energies, H, W).

        Notes
        -----
        Memory: ``4 n_energies H W`` bytes.
        """
        e = check_energies(energies)
        return np.stack([self.optical_density(float(x)) for x in e])

    def ground_truth_spectra(self, energies: ArrayLike) -> NDArray[np.float64]:
        """Normalized spectrum of each material (the shipped standards), shape (n_materials, n_energies)."""
        from txm_live.sim.standards import load_standard

        e = np.asarray(energies, dtype=np.float64)
        if e.ndim != 1:
            raise ValueError(f"energies must be 1-D, got shape {e.shape}")
        return np.stack([load_standard(m.standard)(e) for m in self.materials])


def make_battery_phantom(
    shape: tuple[int, int] = (128, 128),
    *,
    seed: int = 0,
    materials: tuple[Material, ...] = (LIFEPO4, FEPO4, FE3O4),
    area_fraction: float = 0.4,
    aspect: float = 1.4,
    max_thickness_um: float = 5.0,
    rim_fraction: float = 0.35,
    n_cracks: int = 1,
    crack_halo_px: float = 2.0,
    inclusion_fraction: float = 0.03,
    inclusion_depth_fraction: float = 0.85,
    interface_width_px: float = 0.4,
    pixel_size_nm: float = 40.0,
) -> BatteryPhantom:
    """Build a seeded battery particle: core, rim and crack faces, and (optionally) inclusions.

    Parameters
    ----------
    shape : (int, int)
        Frame shape ``(H, W)``, each >= 32.
    seed : int
        Seed of the geometry (>= 0).
    materials : tuple of Material
        ``(core, rim)`` or ``(core, rim, inclusion)``, all with the same absorbing element and edge.
        Default LiFePO4, FePO4, magnetite.
    area_fraction : float
        Particle area / frame area, in (0.05, 0.8).
    aspect : float
        Length / width of the platelet outline, in [1, 3).
    max_thickness_um : float
        Thickness (um) of the flat top of the platelet, in (0, 50).
    rim_fraction : float
        Fraction of the particle pixels that belong to the rim material (rim and crack halos),
        in (0.05, 0.8).
    n_cracks : int
        Number of through-cracks (0-6); each is a chord of the particle with the rim material on
        both faces, ``crack_halo_px`` pixels deep.
    crack_halo_px : float
        Depth (pixels) of the rim material on each crack face, in (0, 10).
    inclusion_fraction : float
        Fraction of the particle pixels that are inclusions (third material), in (0, 0.2); ignored
        with two materials.
    inclusion_depth_fraction : float
        Share of the local thickness an inclusion fills, in (0.3, 1).
    interface_width_px : float
        Width (Gaussian sigma, pixels) of the phase boundaries, in (0, 5): boundary pixels mix
        the materials along the beam.
    pixel_size_nm : float
        Pixel size (nm), > 0.

    Returns
    -------
    BatteryPhantom

    Notes
    -----
    Geometry: an elongated outline ``r(theta)`` with random harmonics (k = 2..5), a platelet
    thickness ``t_max (1 - rho^6)^(1/2)`` (flat top, rounded edges, +-5 % undulation), the olivine
    b axis (the Li diffusion direction) along the beam. Delithiation therefore runs through the
    whole thickness (domino-cascade picture) and each column is mostly one phase; the rim is the
    top ``rim_fraction`` of ``rho + 0.15 g`` (``g`` a smooth random field) together with the crack
    halos. Cracks remove 80 % of the thickness over a ~1 px gap. Inclusions are compact blobs
    (>= 1.3 px sigma) placed away from the rim, thresholded to ``inclusion_fraction`` of the
    particle and filling ``inclusion_depth_fraction`` of the thickness. Labels go to the material
    holding most absorber atoms in the column.

    Fe K edge steps (xraydb): 0.045 /um LiFePO4, 0.048 /um FePO4, 0.133 /um Fe3O4, so the
    default 5 um particle has an edge step of ~0.23 in OD (~0.6 on a magnetite inclusion) over a
    pre-edge OD of ~0.09: with 5000 photons per pixel the per-energy OD noise is ~0.02, an
    edge-step SNR of ~13 per energy in the flat top.
    Sharp boundaries (``interface_width_px`` 0.4) follow the domino-cascade picture; the PSF and
    the resampling of the simulated TXM blur them further, so boundary pixels are real
    LiFePO4/FePO4 mixtures. A 62/38 % LiFePO4/FePO4 mixture is the closest to magnetite in
    normalized absorption (rms difference 0.056 over :func:`~txm_live.sim.standards.fe_k_energies`,
    against 0.29 between LiFePO4 and FePO4): the inclusions are a hard minority phase.
    Cost: ~10-40 ms to build at 128 x 128.
    """
    check_shape(shape, min_size=32)
    check_seed(seed)
    materials = tuple(materials)
    if len(materials) not in (2, 3) or not all(isinstance(m, Material) for m in materials):
        raise ValueError("materials must be a tuple of 2 or 3 Material")
    if len({(m.element, m.edge) for m in materials}) != 1:
        raise ValueError("materials must share the absorbing element and edge")
    area_fraction = check_open_range("area_fraction", area_fraction, 0.05, 0.8)
    aspect = check_open_range("aspect", aspect, 0.999, 3.0)
    max_thickness_um = check_open_range("max_thickness_um", max_thickness_um, 0.0, 50.0)
    rim_fraction = check_open_range("rim_fraction", rim_fraction, 0.05, 0.8)
    if not isinstance(n_cracks, (int, np.integer)) or not 0 <= n_cracks <= 6:
        raise ValueError(f"n_cracks must be an int in [0, 6], got {n_cracks!r}")
    crack_halo_px = check_open_range("crack_halo_px", crack_halo_px, 0.0, 10.0)
    inclusion_fraction = check_open_range("inclusion_fraction", inclusion_fraction, 0.0, 0.2)
    inclusion_depth_fraction = check_open_range("inclusion_depth_fraction", inclusion_depth_fraction, 0.3, 1.0001)
    interface_width_px = check_open_range("interface_width_px", interface_width_px, 0.0, 5.0)
    pixel_size_nm = check_open_range("pixel_size_nm", pixel_size_nm, 0.0, np.inf)
    from scipy import ndimage

    rng = np.random.default_rng(int(seed))
    u, v, scale = frame_coordinates(shape, rng)
    tilt = rng.uniform(0.0, np.pi)
    a = np.cos(tilt) * u + np.sin(tilt) * v
    b = (-np.sin(tilt) * u + np.cos(tilt) * v) * aspect
    r = np.hypot(a, b)
    theta = np.arctan2(b, a)
    rho, particle, n_particle = particle_outline(
        rng, r, theta, harmonics=[(k, 0.06 / k) for k in range(2, 6)], floor=0.5,
        area_fraction=area_fraction, min_pixels=200, shape=shape)
    thickness = undulating_thickness(rng, u, v, rho, particle, max_thickness_um=max_thickness_um, power=6)

    # Through-cracks: chords through a point of the inner particle, with a gap and rim-material faces.
    crack_distance = np.full(r.shape, np.inf)
    inner = np.flatnonzero((rho < 0.6).ravel())
    for _ in range(int(n_cracks)):
        c = inner[rng.integers(inner.size)]
        ang = rng.uniform(0.0, np.pi)
        bend = rng.normal(0.0, 0.3)
        along, across = rotated(u, v, c, ang)
        across = across - bend * along**2
        crack_distance = np.minimum(crack_distance, np.abs(across) * scale)  # pixels
    gap = np.exp(-0.5 * (crack_distance / 0.5) ** 2)
    thickness *= 1.0 - 0.8 * gap

    # Rim material: outer rim of varying width plus the crack halos, rim_fraction of the particle.
    rim_score = rho + 0.15 * smooth_field(rng, u, v, n_waves=8, k_min=2.0, k_max=7.0)
    halo = crack_distance <= crack_halo_px
    n_rim = int(round(rim_fraction * n_particle))
    scores = np.sort(rim_score[particle & ~halo])[::-1]
    n_from_rim = max(n_rim - int(np.count_nonzero(particle & halo)), 1)
    threshold = scores[min(n_from_rim, scores.size) - 1]
    rim = particle & ((rim_score >= threshold) | halo)

    # Inclusions: compact blobs in the thick inner part, exactly inclusion_fraction of the particle.
    inclusion = np.zeros(r.shape, dtype=bool)
    if len(materials) == 3:
        n_incl = max(int(round(inclusion_fraction * n_particle)), 1)
        candidates = np.flatnonzero((particle & (rho < 0.8) & ~halo).ravel())
        n_blobs = int(np.clip(n_incl // 30, 2, 10))
        blobs = np.zeros_like(r)
        min_sigma = 1.3 / scale
        for _ in range(n_blobs):
            c = candidates[rng.integers(candidates.size)]
            sa = max(rng.uniform(0.035, 0.06), min_sigma)
            sb = max(sa * rng.uniform(0.6, 1.0), min_sigma)
            ang = rng.uniform(0.0, np.pi)
            blobs = np.maximum(blobs, elliptic_gaussian(u, v, c, ang, sa, sb))
        blobs = np.where(particle & (rho < 0.85), blobs, 0.0)
        cut = np.partition(blobs.ravel(), -n_incl)[-n_incl]
        inclusion = (blobs >= cut) & (blobs > 0)

    # Soft boundaries: mix the materials over interface_width_px along the beam.
    def soften(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.clip(ndimage.gaussian_filter(mask.astype(np.float64), interface_width_px), 0.0, 1.0)

    w_incl = soften(inclusion) if len(materials) == 3 else np.zeros_like(r)
    w_rim = soften(rim)
    incl_path = w_incl * inclusion_depth_fraction * thickness
    rest = thickness - incl_path
    paths = [(1.0 - w_rim) * rest, w_rim * rest]
    if len(materials) == 3:
        paths.append(incl_path)
    path_um = np.where(particle[None], np.stack(paths), 0.0).astype(np.float32)
    density = np.array([m.absorber_atoms_per_cm3() for m in materials])
    atoms = path_um.astype(np.float64) * density[:, None, None]
    labels = np.where(particle, atoms.argmax(axis=0) + 1, 0).astype(np.int8)
    labels.setflags(write=False)
    path_um.setflags(write=False)
    return BatteryPhantom(labels=labels, path_um=path_um, materials=materials,
                          pixel_size_nm=float(pixel_size_nm), seed=int(seed))
