"""A simulated TXM in the style of NSLS-II FXI (18-ID) and its ``xanes_scan2`` plan.

The public FXI profile (repository NSLS2/fxi-profile-collection, ``startup/41-scans.py``
``xanes_scan2`` and ``startup/40-scan_pre_define.py``) writes what many facility plans write, and
not the txm-live stream contract:

* the energy is the monochromator motor ``XEng`` in **keV** (descriptor ``units`` ``keV``; the
  start document's ``eng_list`` in keV); it is one of five ``motors``
  (``XEng, zps_sx, zps_sy, zps_sz, zps_pi_r``) read in every event; ``hints`` is empty (the
  plan's ``motor.hints`` lookup fails on a list);
* every trigger of the camera returns a **chunk of N frames** (``chunk_size``, default 5): the
  image key ``KinetixU_image`` has shape ``(N, H, W)``; file-backed, the frames go to an HDF5 file
  referenced by ``AD_HDF5`` resource/datum documents with ``frame_per_point = N``;
* darks: one chunk at the start only (stream ``dark``), shutter closed; in the plan's dry-run
  mode (``simu=True``) the shutter is NOT closed, so the "darks" are illuminated;
* per energy: a ``primary`` chunk, then the sample is moved out (``zps.sx`` by ``out_x``) for a
  background chunk (stream ``flat``) and moved back;
* ion chambers ``ic3``, ``ic4`` (channels of one electrometer, scalar readings; FXI's scans
  name ``ic3`` their ion chamber) are read in every event; both upstream of the sample unless
  ``make_fxi(downstream=...)`` places one after it.

The frames come from the same seeded phantom and instrument model as :mod:`txm_live.sim.devices`
(noise, flat-field structure, drift, beam decay...), with magnification off: FXI moves the zone
plate and camera with the energy (``move_zp_ccd``) to keep the magnification constant. Each of the
N frames of a chunk is an independent exposure (independent noise) at the same sample position.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.positioner import SoftPositioner
from ophyd.status import DeviceStatus

from txm_live.sim.devices import CLOSED, HDF5_DATASET, OPEN, DescribedSignal, SimTXM, StagedFileWriter, make_txm
from txm_live.sim.effects import detector_counts

__all__ = ["FxiTXM", "KinetixCamera", "exposure_photons", "fxi_nd_energies", "incident_reading", "make_fxi",
           "ni_k_energies", "render_chunk", "xanes_scan2"]


def fxi_nd_energies() -> np.ndarray:
    """A keV energy list over the Nd L3 and L2 edges, as an FXI user would type it (225 energies).

    Same sampling as the ``tiny``/``small`` demo (1 eV over the L3 white line, 1.5 eV over L2's,
    3 eV over the L3 EXAFS, 5-10 eV elsewhere), 6.000-7.022 keV, rounded to 0.1 meV.
    """
    parts = [
        np.arange(6000.0, 6150.0, 10.0), np.arange(6150.0, 6190.0, 5.0), np.arange(6190.0, 6240.0, 1.0),
        np.arange(6240.0, 6400.0, 3.0), np.arange(6400.0, 6660.0, 10.0), np.arange(6660.0, 6710.0, 5.0),
        np.arange(6710.0, 6760.0, 1.5), np.arange(6760.0, 7023.0, 10.0), np.array([7022.0]),
    ]
    return np.round(np.unique(np.concatenate(parts)) / 1000.0, 7)


def ni_k_energies(path: str | Path) -> np.ndarray:
    """The real Ni K TXM energy list (keV, one per line), e.g. ``shared/data/xas-reference/NiK_TXM_energy_list.txt``."""
    arr = np.loadtxt(path, dtype=np.float64, ndmin=1)
    if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: expected one finite energy (keV) per line")
    return arr


def exposure_photons(txm: SimTXM, frame_index: int, *, sample: bool = True) -> np.ndarray:
    """Noise-free photons per detector pixel of trigger ``frame_index`` in ``txm``'s current state.

    ``sample=False``: the same exposure with the sample out of the beam.
    """
    model = txm.model
    energy = float(txm.mono.position)
    kind = txm.camera.frame_kind() if txm.camera is not None else "sample"
    od = np.asarray(txm.phantom.optical_density(energy), dtype=np.float32) if kind == "sample" and sample else None
    return model.expected_photons(od, energy, frame_index, shutter_open=(kind != "dark"),
                                  stage_offset_px=txm.stage_offset_px())


def render_chunk(txm: SimTXM, n: int, frame_index: int) -> np.ndarray:
    """``n`` independent exposures (uint16, (n, H, W)) of ``txm`` in its current state.

    The geometry (drift, jitter) and beam of trigger ``frame_index`` are shared by the ``n``
    exposures; the noise of each is drawn independently (seeded by model seed, trigger, exposure).
    """
    model = txm.model
    photons = exposure_photons(txm, frame_index)
    c = model.config
    chunk = np.empty((int(n), *photons.shape), dtype=np.uint16)
    for j in range(int(n)):
        rng = np.random.default_rng([model.seed, 11, int(frame_index), j]) if c.noise else None
        chunk[j] = detector_counts(photons, rng=rng, gain=c.gain, bias=c.bias, read_noise=c.read_noise,
                                   gaussian_above=c.poisson_gaussian_above)
    return chunk


class SoftMotor(SoftPositioner):
    """Soft positioner whose descriptor carries ``dtype_numpy`` (and units only if ``egu`` is set)."""

    def describe(self) -> dict[str, dict[str, Any]]:
        desc = super().describe()
        key = desc[self.name]
        key.update(dtype="number", shape=[], dtype_numpy="<f8", source=f"SIM:{self.name}")
        if not self.egu:
            key.pop("units", None)
        return desc


class Zps(Device):
    """Zone-plate sample stage: ``sx``, ``sy``, ``sz`` (um) and rotation ``pi_r`` (deg)."""

    sx = Cpt(SoftMotor, init_pos=0.0, egu="um")
    sy = Cpt(SoftMotor, init_pos=0.0, egu="um")
    sz = Cpt(SoftMotor, init_pos=0.0, egu="um")
    pi_r = Cpt(SoftMotor, init_pos=0.0, egu="deg")


class IonChamber(DescribedSignal):
    """Ion chamber: ``trigger()`` reads the beam of the camera's next exposure (arbitrary units).

    Upstream of the sample (``downstream=False``) it reads the incident intensity: flux, top-up
    decay, throughput and glitches. Downstream (an I1/It chamber) it reads that beam after the
    sample: times the sample's mean transmission over the field of view (1 with the sample out).
    """

    def __init__(self, *args: Any, fxi: FxiTXM | None = None, gain: float = 1e-3, downstream: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._fxi = fxi
        self._gain = float(gain)
        self.downstream = bool(downstream)

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        fxi = self._fxi
        if fxi is not None:
            fxi.sync()
            self.put(incident_reading(fxi.txm, fxi.camera.frame_index, gain=self._gain, downstream=self.downstream))
        status.set_finished()
        return status


def incident_reading(txm: SimTXM, frame_index: int, *, gain: float, downstream: bool = False) -> float:
    """An ion chamber's reading during trigger ``frame_index`` (0 with the shutter closed).

    Upstream: ``gain x flux x beam x glitch``; downstream: times the sample's mean transmission
    (the exposure's mean photons with the sample over those without it).
    """
    model = txm.model
    if txm.shutter.get() != OPEN:
        return 0.0
    e = float(txm.mono.position)
    value = gain * model.config.flux * model.beam_factor(e, frame_index) * model.glitch(e)
    if downstream:
        with_sample = float(np.mean(exposure_photons(txm, frame_index), dtype=np.float64))
        without = float(np.mean(exposure_photons(txm, frame_index, sample=False), dtype=np.float64))
        value *= with_sample / without if without > 0 else 0.0
    return value


class _AdHdf5Writer:
    """One HDF5 file per staging, AD_HDF5 resource with ``frame_per_point``, one datum per trigger."""

    def __init__(self, directory: Path, shape: tuple[int, int], chunk_size: int) -> None:
        import h5py  # lazily: only file-backed cameras need it
        from event_model import compose_resource

        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{uuid.uuid4().hex[:12]}.h5"
        self.file = h5py.File(self.path, "w", libver="latest")
        self.ds = self.file.create_dataset(HDF5_DATASET, shape=(0, *shape), maxshape=(None, *shape), dtype="<u2",
                                           chunks=(1, *shape))
        self.file.swmr_mode = True
        bundle = compose_resource(spec="AD_HDF5", root="/", resource_path=str(self.path.resolve())[1:],
                                  resource_kwargs={"frame_per_point": int(chunk_size)},
                                  start={"uid": "placeholder"})  # type: ignore[typeddict-item]
        resource = dict(bundle.resource_doc)
        resource.pop("run_start", None)  # as ophyd's file-store mixins do: the RunEngine owns the run
        self.compose_datum = bundle.compose_datum
        self.pending: deque[tuple[str, dict]] = deque([("resource", resource)])
        self.n_points = 0

    def write(self, chunk: np.ndarray) -> str:
        n = self.ds.shape[0]
        self.ds.resize(n + chunk.shape[0], axis=0)
        self.ds[n:] = chunk
        self.ds.flush()
        datum = self.compose_datum(datum_kwargs={"point_number": self.n_points})
        self.n_points += 1
        self.pending.append(("datum", datum))
        return datum["datum_id"]

    def close(self) -> None:
        self.file.close()


class KinetixCamera(StagedFileWriter, Device):
    """Area detector returning a chunk of ``chunk_size`` frames per trigger (key ``<name>_image``)."""

    image = Cpt(DescribedSignal, value=np.zeros((1, 1, 1), dtype=np.uint16), dtype_numpy="<u2", kind="normal")

    def __init__(self, *args: Any, fxi: FxiTXM | None = None, chunk_size: int = 5, file_backed: bool = False,
                 write_path: Path | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if fxi is None:
            raise ValueError("fxi must be given (build the camera with make_fxi)")
        self._fxi = fxi
        self.file_backed = bool(file_backed)
        self.write_path = write_path
        self.frame_index = 0
        self._writer: _AdHdf5Writer | None = None
        self.set_chunk_size(chunk_size)

    def set_chunk_size(self, chunk_size: int) -> None:
        """Frames per trigger (the plan's ``chunk_size``, AreaDetector ``cam.num_images``)."""
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        h, w = self._fxi.txm.detector_shape
        self.image.data_shape = (self.chunk_size, h, w)
        self.image.external = "FILESTORE:" if self.file_backed else None

    def render_chunk(self) -> np.ndarray:
        """``chunk_size`` independent exposures (uint16, (N, H, W)) of the current beamline state."""
        self._fxi.sync()
        chunk = render_chunk(self._fxi.txm, self.chunk_size, self.frame_index)
        self.frame_index += 1
        return chunk

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        chunk = self.render_chunk()
        if self.file_backed:
            if self._writer is None:
                self._open_writer()
            assert self._writer is not None
            self.image.put(self._writer.write(chunk))
        else:
            self.image.put(chunk)
        status.set_finished()
        return status

    def _open_writer(self) -> None:
        if self.write_path is None:
            raise ValueError("write_path must be set for a file-backed camera")
        self._writer = _AdHdf5Writer(Path(self.write_path), self._fxi.txm.detector_shape, self.chunk_size)

    def collect_asset_docs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield the queued ``resource`` / ``datum`` documents (file-backed only)."""
        writer = self._writer
        while writer is not None and writer.pending:
            yield writer.pending.popleft()


@dataclass(eq=False)
class FxiTXM:
    """The FXI-style beamline: ophyd devices named as at FXI around a :class:`SimTXM` model.

    Attributes
    ----------
    XEng : SoftMotor
        Monochromator energy in keV (data key ``XEng``).
    zps : Zps
        Sample stage (``zps_sx``, ``zps_sy``, ``zps_sz``, ``zps_pi_r``).
    shutter : Signal
        1 open, 0 closed.
    ic3, ic4 : IonChamber
        Incident-intensity monitors.
    KinetixU : KinetixCamera
        The camera (``KinetixU_image``, ``(chunk_size, H, W)``).
    txm : SimTXM
        The underlying simulated microscope (phantom and instrument model, energies in eV).
    """

    txm: SimTXM
    XEng: SoftMotor
    zps: Zps
    shutter: Signal
    ic3: IonChamber | None = None
    ic4: IonChamber | None = None
    KinetixU: KinetixCamera | None = None

    @property
    def camera(self) -> KinetixCamera:
        assert self.KinetixU is not None
        return self.KinetixU

    def sync(self) -> None:
        """Put the model in the devices' state (energy keV -> eV, stage, shutter)."""
        txm = self.txm
        scale = 1000.0 if self.XEng.egu.lower() == "kev" or not self.XEng.egu else 1.0
        txm.mono.set(float(self.XEng.position) * scale)
        txm.stage.set(float(self.zps.sx.position))
        txm.shutter.put(OPEN if self.shutter.get() == OPEN else CLOSED)

    @property
    def detectors(self) -> list[Any]:
        # the ion chambers first: triggered in this order, they read the beam of the exposure the
        # camera takes next in the same trigger_and_read (the camera advances its frame index)
        return [self.ic3, self.ic4, self.KinetixU]

    @property
    def motors(self) -> list[Any]:
        return [self.XEng, self.zps.sx, self.zps.sy, self.zps.sz, self.zps.pi_r]


def make_fxi(
    phantom: Any,
    *,
    seed: int = 0,
    chunk_size: int = 5,
    file_backed: bool = False,
    write_path: str | Path | None = None,
    energy_units: str | None = "keV",
    energy_range_ev: tuple[float, float] = (6000.0, 7023.0),
    ion_chamber_names: tuple[str, str] = ("ic3", "ic4"),
    downstream: Sequence[str] = (),
    **overrides: Any,
) -> FxiTXM:
    """Build the FXI-style beamline around ``phantom``.

    Parameters
    ----------
    phantom
        See :func:`txm_live.sim.devices.make_txm`.
    seed : int
        Seed of the instrument effects and noise.
    chunk_size : int
        Frames per trigger.
    file_backed : bool
        Write the chunks to HDF5 with ``AD_HDF5`` resource/datum documents (``frame_per_point``).
    write_path : str or Path, optional
        Directory of the HDF5 files (required when ``file_backed``).
    energy_units : {"keV", None}
        Units declared by ``XEng`` (``None``: no units in the descriptor, values still keV).
    energy_range_ev : (float, float)
        Range (eV) over which the instrument drifts and the throughput varies (the scan range).
    ion_chamber_names : (str, str)
        Data keys of the two ion chambers (``fxi.ic3``, ``fxi.ic4``); they read the incident beam
        of each exposure (top-up decay, throughput, glitches). ``("I0", "ic4")`` makes the first one
        an I0 monitor that txm-live finds by its name.
    downstream : sequence of str
        Names among ``ion_chamber_names`` placed after the sample (I1/It chambers: their reading
        follows the sample's absorption). Default: both upstream, as FXI reads them.
    **overrides
        :class:`~txm_live.sim.effects.EffectsConfig` fields (``flux``, ``noise``, ``margin_px``...).
        ``magnification`` defaults to False (FXI keeps it constant).
    """
    if energy_units not in ("keV", None):
        raise ValueError(f"energy_units must be 'keV' or None, got {energy_units!r}")
    if file_backed and write_path is None:
        raise ValueError("write_path must be given when file_backed=True")
    overrides.setdefault("magnification", False)
    overrides.setdefault("energy_range", tuple(float(x) for x in energy_range_ev))
    txm = make_txm(phantom, seed=seed, **overrides)
    xeng = SoftMotor(name="XEng", init_pos=energy_range_ev[0] / 1000.0, egu=energy_units or "")
    zps = Zps(name="zps")
    shutter = Signal(name="shutter_open", value=OPEN)
    fxi = FxiTXM(txm=txm, XEng=xeng, zps=zps, shutter=shutter)
    ic_a, ic_b = ion_chamber_names
    unknown = set(downstream) - {ic_a, ic_b}
    if unknown:
        raise ValueError(f"downstream: {sorted(unknown)} not among ion_chamber_names {ion_chamber_names}")
    fxi.ic3 = IonChamber(name=ic_a, value=0.0, dtype_numpy="<f8", fxi=fxi, downstream=ic_a in downstream)
    fxi.ic4 = IonChamber(name=ic_b, value=0.0, dtype_numpy="<f8", fxi=fxi, gain=2e-3, downstream=ic_b in downstream)
    fxi.KinetixU = KinetixCamera(name="KinetixU", fxi=fxi, chunk_size=chunk_size, file_backed=file_backed,
                                 write_path=Path(write_path) if write_path is not None else None)
    return fxi


def xanes_scan2(
    fxi: FxiTXM,
    eng_list: Sequence[float] | np.ndarray,
    *,
    exposure_time: float = 0.1,
    chunk_size: int = 5,
    out_x: float = 100.0,
    out_y: float = 0.0,
    simu: bool = False,
    stream_names: tuple[str, str, str] = ("primary", "flat", "dark"),
    note: str = "",
    md: dict[str, Any] | None = None,
) -> Generator[Msg, Any, str]:
    """FXI ``xanes_scan2``: darks once, then per energy a sample chunk and a background chunk.

    Parameters
    ----------
    fxi : FxiTXM
        From :func:`make_fxi`.
    eng_list : sequence of float
        Energies in keV, acquisition order.
    exposure_time : float
        Recorded in the metadata (the simulation is instantaneous).
    chunk_size : int
        Frames per trigger (also the number of dark and background frames per point).
    out_x, out_y : float
        Relative sample displacement (um) for the background images.
    simu : bool
        FXI's dry-run mode: the shutter is not operated, so the darks are taken with the beam on.
    stream_names : (str, str, str)
        Names of the sample, background and dark streams (FXI: ``primary``, ``flat``, ``dark``;
        other facilities call the background ``bkg`` or ``background``).
    note : str
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    str
        The run uid.
    """
    eng = np.asarray(eng_list, dtype=np.float64)
    if eng.ndim != 1 or eng.size == 0 or not np.all(np.isfinite(eng)):
        raise ValueError(f"eng_list must be a non-empty 1-D list of finite energies (keV), got shape {eng.shape}")
    primary, flat, dark = stream_names
    fxi.camera.set_chunk_size(chunk_size)
    detectors, motors = fxi.detectors, fxi.motors
    eng_values = [float(x) for x in eng]
    x_ini, y_ini = float(fxi.zps.sx.position), float(fxi.zps.sy.position)
    _md: dict[str, Any] = {
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motors],
        "num_eng": len(eng_values),
        "num_bkg_images": chunk_size,
        "num_dark_images": chunk_size,
        "chunk_size": chunk_size,
        "out_x": out_x,
        "out_y": out_y,
        "exposure_time": exposure_time,
        "eng_list": eng_values,
        "XEng": float(fxi.XEng.position),
        "plan_args": {"eng_list": "eng_list", "exposure_time": exposure_time, "chunk_size": chunk_size,
                      "out_x": out_x, "out_y": out_y, "note": note if note else "None"},
        "plan_name": "xanes_scan2",
        "hints": {},
        "operator": "FXI",
        "note": note if note else "None",
        **(md or {}),
    }

    def take(name: str) -> Generator[Msg, Any, Any]:
        return (yield from bps.trigger_and_read([*detectors, *motors], name=name))

    @bpp.stage_decorator([*detectors, *motors])
    @bpp.run_decorator(md=_md)
    def inner() -> Generator[Msg, Any, None]:
        if not simu:
            yield from bps.mv(fxi.shutter, CLOSED)
        yield from take(dark)
        if not simu:
            yield from bps.mv(fxi.shutter, OPEN)
        for e in eng_values:
            yield from bps.mv(fxi.XEng, e)
            yield from take(primary)
            yield from bps.mv(fxi.zps.sx, x_ini + out_x, fxi.zps.sy, y_ini + out_y)
            yield from take(flat)
            yield from bps.mv(fxi.zps.sx, x_ini, fxi.zps.sy, y_ini)
            yield from bps.checkpoint()
        if not simu:
            yield from bps.mv(fxi.shutter, CLOSED)

    return (yield from inner())
