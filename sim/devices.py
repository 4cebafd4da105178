"""Simulated TXM as real ophyd devices, driven by a seeded phantom.

:func:`make_txm` builds a :class:`SimTXM` holding four ophyd devices:

============  ==========================  ===========================================================
attribute     ophyd name / data key       what it is
============  ==========================  ===========================================================
``mono``      ``mono_energy`` (eV)        monochromator, a soft positioner (``bps.mv(txm.mono, E)``)
``stage``     ``sample_x`` (um)           sample stage; ``txm.sample_in`` / ``txm.sample_out`` positions
``shutter``   ``shutter_open`` (0/1)      photon shutter (``txm.OPEN`` / ``txm.CLOSED``), closed = dark
``camera``    ``camera_image``,           the detector: ``trigger()`` renders the uint16 frame from the
              ``camera_pixel_size`` (nm)  phantom at the current energy / stage / shutter state
============  ==========================  ===========================================================

The camera's ``describe()`` gives ``camera_image`` with ``shape [H, W]``, ``dtype "array"`` and
``dtype_numpy "<u2"``; ``camera_pixel_size`` is a float (``"<f8"``, units nm), the pixel size of
the frame in the sample plane (proportional to the energy when magnification is on).

File-backed images (``file_backed=True``)
-----------------------------------------
The camera writes every frame into HDF5 files and emits ``stream_resource`` / ``stream_datum``
documents (event-model >= 1.21, the way ophyd-async area detectors do) through the bluesky
``WritesStreamAssets`` protocol (``collect_asset_docs(index)``, ``get_index()``), which the
RunEngine calls after each ``read``. The descriptor data key ``camera_image`` then carries
``"external": "STREAM:"`` and events hold no ``camera_image`` value (only ``camera_pixel_size``).

One file and one StreamResource per *frame kind* and staging (= run): kinds are ``"dark"``
(shutter closed), ``"flat"`` (sample out of the field of view) and ``"sample"``; in
:func:`txm_live.sim.plans.xanes_scan` they map one-to-one onto the streams ``dark``, ``flat``
and ``primary``, so each StreamResource is referenced by exactly one descriptor (as the Tiled
writer expects). StreamResource fields::

    mimetype    "application/x-hdf5"
    uri         "file://localhost/<abs path>/<acquisition id>_<kind>.h5"
    data_key    "camera_image"
    parameters  {"dataset": "/entry/data/data",     # uint16 dataset of shape (n_frames, H, W)
                 "chunk_shape": [1, H, W],          # one chunk per frame
                 "swmr": True,                      # file is written in SWMR mode: readers may
                                                    # open it while the scan runs
                 "frame_kind": "dark"|"flat"|"sample"}

Each StreamDatum has ``indices = {"start": i, "stop": i + 1}``: frame ``i`` of that dataset is
``h5py.File(path, "r", swmr=True)["/entry/data/data"][i]``; ``seq_nums`` are filled in by the
RunEngine (the event's ``seq_num``). Frames are flushed before the datum is emitted. Files are
closed at ``unstage`` (the plan stages the camera); a new acquisition id is drawn at every
``stage``.

Pause / resume: the plan checkpoints after every energy. After a hard pause the RunEngine
retakes the interrupted energy, so an event (and its stream_datum, pointing at a NEW row of
the file) can repeat the ``seq_num`` and energy of one emitted before the pause: consumers
should let the later frame replace the earlier one. Rows are never rewritten.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from event_model import StreamRange, compose_stream_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.positioner import SoftPositioner
from ophyd.status import DeviceStatus

from txm_live.sim.effects import EffectsConfig, InstrumentModel

__all__ = [
    "CLOSED",
    "OPEN",
    "HDF5_DATASET",
    "PhantomLike",
    "SimCamera",
    "SimTXM",
    "make_txm",
]

OPEN = 1
CLOSED = 0
#: Dataset path of the frames in every HDF5 file written by the camera.
HDF5_DATASET = "/entry/data/data"
HDF5_MIMETYPE = "application/x-hdf5"


class PhantomLike(Protocol):
    """What the simulator needs from a phantom (see :mod:`txm_live.sim.phantom`)."""

    shape: tuple[int, int]
    pixel_size_nm: float

    def optical_density(self, energy: float) -> np.ndarray: ...


def _scalar_dtype(dtype_numpy: str) -> str:
    kind = np.dtype(dtype_numpy).kind
    return "integer" if kind in "iub" else "number"


class DescribedSignal(Signal):
    """A soft signal whose ``describe()`` states shape, ``dtype_numpy`` and units explicitly."""

    def __init__(self, *args: Any, dtype_numpy: str = "<f8", shape: tuple[int, ...] = (),
                 units: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dtype_numpy = np.dtype(dtype_numpy).str
        self.data_shape = tuple(int(s) for s in shape)
        self.units = units
        self.external: str | None = None

    def describe(self) -> dict[str, dict[str, Any]]:
        key: dict[str, Any] = {
            "source": f"SIM:{self.name}",
            "dtype": "array" if self.data_shape else _scalar_dtype(self.dtype_numpy),
            "shape": list(self.data_shape),
            "dtype_numpy": self.dtype_numpy,
        }
        if self.units is not None:
            key["units"] = self.units
        if self.external is not None:
            key["external"] = self.external
        return {self.name: key}


class SimPositioner(SoftPositioner):
    """Soft positioner (moves instantly) whose descriptor carries units and ``dtype_numpy``."""

    def describe(self) -> dict[str, dict[str, Any]]:
        desc = super().describe()
        desc[self.name]["dtype"] = "number"
        desc[self.name]["shape"] = []
        desc[self.name]["dtype_numpy"] = "<f8"
        desc[self.name]["source"] = f"SIM:{self.name}"
        return desc


class Shutter(DescribedSignal):
    """Photon shutter: 1 = open, 0 = closed (darks). Any other value raises ``ValueError``."""

    def put(self, value: Any, **kwargs: Any) -> None:
        if value not in (OPEN, CLOSED):
            raise ValueError(f"shutter value must be {OPEN} (open) or {CLOSED} (closed), got {value!r}")
        super().put(int(value), **kwargs)


class _Hdf5FrameWriter:
    """Appends frames to one SWMR HDF5 file per frame kind and queues stream asset documents."""

    def __init__(self, directory: Path, shape: tuple[int, int], data_key: str):
        self.directory = directory
        self.shape = shape
        self.data_key = data_key
        self.acquisition_id = uuid.uuid4().hex[:12]
        self._files: dict[str, Any] = {}
        self._composers: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()
        self.paths: dict[str, Path] = {}

    def write(self, kind: str, frame: np.ndarray) -> None:
        import h5py  # lazily: only file-backed cameras need it

        if kind not in self._files:
            path = self.directory / f"{self.acquisition_id}_{kind}.h5"
            f = h5py.File(path, "w", libver="latest")
            f.create_dataset(HDF5_DATASET, shape=(0, *self.shape), maxshape=(None, *self.shape),
                             dtype="<u2", chunks=(1, *self.shape))
            f.swmr_mode = True
            bundle = compose_stream_resource(
                mimetype=HDF5_MIMETYPE,
                uri="file://localhost" + str(path.resolve()),
                data_key=self.data_key,
                parameters={"dataset": HDF5_DATASET, "chunk_shape": [1, *self.shape], "swmr": True,
                            "frame_kind": kind},
            )
            self._files[kind], self._composers[kind], self._counts[kind] = f, bundle.compose_stream_datum, 0
            self.paths[kind] = path
            self.pending.append(("stream_resource", bundle.stream_resource_doc))
        f = self._files[kind]
        ds = f[HDF5_DATASET]
        i = self._counts[kind]
        ds.resize(i + 1, axis=0)
        ds[i] = frame
        ds.flush()
        self._counts[kind] = i + 1
        self.pending.append(("stream_datum", self._composers[kind](indices=StreamRange(start=i, stop=i + 1))))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class StagedFileWriter:
    """Mixin of the simulated cameras: a fresh frame file per staging when file-backed.

    The camera provides ``file_backed``, ``_writer`` (an object with ``close()``, or None) and
    ``_open_writer()``; staging closes any previous file and opens a new one, unstaging closes it.
    """

    file_backed: bool
    _writer: Any

    def _open_writer(self) -> None:
        raise NotImplementedError

    def stage(self) -> list[Any]:
        staged = super().stage()
        if self.file_backed:
            self._close_writer()
            self._open_writer()
        return staged

    def unstage(self) -> list[Any]:
        self._close_writer()
        return super().unstage()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SimCamera(StagedFileWriter, Device):
    """TXM camera: ``trigger()`` renders a frame of the phantom in the current beamline state.

    The frame kind follows the state of the other devices: shutter closed -> dark (bias and read
    noise only); sample stage far from the beam -> flat; otherwise a sample image with the stage
    offset added to the simulated drift. Frames are numbered by trigger count (noise seed and
    virtual clock of the top-up sawtooth). Rendering is synchronous (tens of ms at full size) and
    the returned status is already finished.
    """

    image = Cpt(DescribedSignal, value=np.zeros((1, 1), dtype=np.uint16), dtype_numpy="<u2", kind="normal")
    pixel_size = Cpt(DescribedSignal, value=0.0, dtype_numpy="<f8", units="nm", kind="normal")
    flux = Cpt(DescribedSignal, value=0.0, dtype_numpy="<f8", units="photons/pixel", kind="config")
    gain = Cpt(DescribedSignal, value=0.0, dtype_numpy="<f8", units="ADU/photon", kind="config")
    bias = Cpt(DescribedSignal, value=0.0, dtype_numpy="<f8", units="ADU", kind="config")
    read_noise = Cpt(DescribedSignal, value=0.0, dtype_numpy="<f8", units="ADU", kind="config")

    def __init__(self, *args: Any, txm: SimTXM | None = None, file_backed: bool = False,
                 write_path: Path | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if txm is None:
            raise ValueError("txm must be given (build cameras with make_txm)")
        self._txm = txm
        self.file_backed = bool(file_backed)
        self.write_path = write_path
        self.frame_index = 0
        self._od_cache: tuple[float, np.ndarray] | None = None
        self._writer: _Hdf5FrameWriter | None = None
        self._lock = threading.Lock()
        model = txm.model
        self.image.data_shape = model.detector_shape
        self.image.put(np.zeros(model.detector_shape, dtype=np.uint16))
        if self.file_backed:
            self.image.external = "STREAM:"
        c = model.config
        self.flux.put(float(c.flux))
        self.gain.put(float(c.gain))
        self.bias.put(float(c.bias))
        self.read_noise.put(float(c.read_noise) if c.noise else 0.0)
        self.pixel_size.put(txm.pixel_size_at(float(txm.mono.position)))

    # --- acquisition -----------------------------------------------------------------------
    def frame_kind(self) -> str:
        """``"dark"``, ``"flat"`` or ``"sample"`` from the shutter and sample-stage state."""
        if self._txm.shutter.get() != OPEN:
            return "dark"
        return "sample" if self._txm.sample_in_field() else "flat"

    def _optical_density(self, energy: float) -> np.ndarray:
        if self._od_cache is None or self._od_cache[0] != energy:
            od = np.asarray(self._txm.phantom.optical_density(energy), dtype=np.float32)
            self._od_cache = (energy, od)
        return self._od_cache[1]

    def render(self) -> tuple[str, np.ndarray, float]:
        """Render the next frame (advances the frame counter): ``(kind, uint16 image, pixel nm)``."""
        txm = self._txm
        energy = float(txm.mono.position)
        kind = self.frame_kind()
        od = self._optical_density(energy) if kind == "sample" else None
        frame = txm.model.render(od, energy, self.frame_index, shutter_open=(kind != "dark"),
                                 stage_offset_px=txm.stage_offset_px())
        self.frame_index += 1
        return kind, frame, txm.pixel_size_at(energy)

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        with self._lock:
            kind, frame, pixel_nm = self.render()
            self.pixel_size.put(pixel_nm)
            if self.file_backed:
                if self._writer is None:
                    self._open_writer()
                assert self._writer is not None
                self._writer.write(kind, frame)
            self.image.put(frame)
        status.set_finished()
        return status

    def read(self) -> dict[str, dict[str, Any]]:
        reading = super().read()
        if self.file_backed:
            reading.pop(self.image.name, None)
        return reading

    # --- file writing (bluesky WritesStreamAssets) -----------------------------------------
    def _open_writer(self) -> None:
        if self.write_path is None:
            raise ValueError("write_path must be set for a file-backed camera")
        directory = Path(self.write_path)
        directory.mkdir(parents=True, exist_ok=True)
        self._writer = _Hdf5FrameWriter(directory, self._txm.model.detector_shape, self.image.name)

    def set_write_path(self, path: str | Path) -> None:
        """Write the following frame files into ``path`` (created), e.g. a folder per run uid.

        Called from a start-document subscriber, it puts a run's files under that run's uid:
        files already open (frames written before the call) stay where they are.
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.write_path = directory
        if self._writer is not None and not self._writer.paths:
            self._writer.directory = directory

    @property
    def written_files(self) -> dict[str, Path]:
        """Paths of the HDF5 files of the current acquisition, by frame kind."""
        return dict(self._writer.paths) if self._writer is not None else {}

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield the queued ``stream_resource`` / ``stream_datum`` documents (file-backed only)."""
        writer = self._writer
        while writer is not None and writer.pending:
            yield writer.pending.popleft()

    def get_index(self) -> int:
        """Number of frames triggered so far."""
        return self.frame_index


@dataclass(eq=False)
class SimTXM:
    """The simulated microscope: ophyd devices plus the phantom and instrument model.

    Attributes
    ----------
    mono, stage, shutter, camera
        The ophyd devices (see module docstring).
    phantom
        The sample (ground truth).
    model : InstrumentModel
        Seeded instrument effects; ``model.config`` holds the switches.
    sample_in, sample_out : float
        Stage positions (um) with the sample in the field of view / far out of it.
    """

    phantom: PhantomLike
    model: InstrumentModel
    mono: SimPositioner
    stage: SimPositioner
    shutter: Shutter
    sample_in: float = 0.0
    sample_out: float = 100.0
    camera: SimCamera | None = None

    OPEN = OPEN
    CLOSED = CLOSED

    @property
    def pixel_size_nm(self) -> float:
        """Nominal pixel size (nm) at ``model.config.reference_energy``."""
        return float(self.phantom.pixel_size_nm)

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.model.detector_shape

    def pixel_size_at(self, energy: float) -> float:
        """Pixel size (nm, sample plane) of a frame taken at ``energy`` (eV)."""
        return self.model.pixel_size_nm(energy, self.pixel_size_nm)

    def stage_offset_px(self) -> tuple[float, float]:
        """Displacement of the sample (nominal pixels) caused by the stage (x = columns)."""
        dx_um = float(self.stage.position) - self.sample_in
        return (0.0, dx_um * 1000.0 / self.pixel_size_nm)

    def sample_in_field(self) -> bool:
        """True if any part of the sample can reach the detector at the current stage position."""
        return abs(self.stage_offset_px()[1]) < self.detector_shape[1] + self.phantom.shape[1] / 2

    @property
    def devices(self) -> tuple[Any, ...]:
        return (self.mono, self.stage, self.shutter, self.camera)


def make_txm(
    phantom: PhantomLike,
    *,
    seed: int = 0,
    file_backed: bool = False,
    write_path: str | Path | None = None,
    effects: EffectsConfig | None = None,
    **overrides: Any,
) -> SimTXM:
    """Build the simulated TXM around ``phantom``.

    Parameters
    ----------
    phantom : PhantomLike
        Object with ``shape`` (H, W), ``pixel_size_nm`` and ``optical_density(energy)`` returning a
        (H, W) float map, e.g. :func:`txm_live.sim.phantom.make_phantom`.
    seed : int
        Seed of every instrument effect and of the noise (frames are reproducible).
    file_backed : bool
        Write frames to HDF5 and emit ``stream_resource``/``stream_datum`` instead of inline arrays.
    write_path : str or Path, optional
        Directory of the HDF5 files (created if missing); required when ``file_backed``.
    effects : EffectsConfig, optional
        Instrument effects; defaults to ``EffectsConfig()`` (everything on, physics.md values).
    **overrides
        Fields of :class:`~txm_live.sim.effects.EffectsConfig` to replace, e.g. ``noise=False``,
        ``flux=2000``, ``drift_px=10``. Unknown names raise ``TypeError``.

    Returns
    -------
    SimTXM

    Notes
    -----
    The detector frame is the phantom shape plus ``margin_px`` on each side (730 x 771 for the
    602 x 643 phantom). Devices move instantly; a full-size frame renders in ~20-40 ms.
    """
    shape = tuple(getattr(phantom, "shape", ()))
    if len(shape) != 2 or not callable(getattr(phantom, "optical_density", None)):
        raise ValueError("phantom must have a 2-D .shape and an optical_density(energy) method")
    pixel = float(getattr(phantom, "pixel_size_nm", float("nan")))
    if not (math.isfinite(pixel) and pixel > 0):
        raise ValueError(f"phantom.pixel_size_nm must be a positive number, got {pixel!r}")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if file_backed and write_path is None:
        raise ValueError("write_path must be given when file_backed=True")
    config = (effects if effects is not None else EffectsConfig()).with_overrides(**overrides)
    model = InstrumentModel(shape, config, seed=int(seed))
    lo, hi = config.energy_range
    mono = SimPositioner(name="mono_energy", init_pos=float(lo), limits=(1000.0, 30000.0), egu="eV")
    stage = SimPositioner(name="sample_x", init_pos=0.0, limits=(-1000.0, 1000.0), egu="um")
    shutter = Shutter(name="shutter_open", value=OPEN, dtype_numpy="<i8")
    txm = SimTXM(phantom=phantom, model=model, mono=mono, stage=stage, shutter=shutter)
    txm.camera = SimCamera(name="camera", txm=txm, file_backed=file_backed,
                           write_path=Path(write_path) if write_path is not None else None)
    return txm
