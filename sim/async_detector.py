"""An ophyd-async simulated TXM camera that writes HDF5 and emits StreamResource/StreamDatum.

Built the way ophyd-async builds its own :class:`ophyd_async.sim.SimBlobDetector`: a
:class:`~ophyd_async.core.StandardDetector` with trigger, acquire and data logics; the data
logic returns a :class:`~ophyd_async.core.StreamResourceDataProvider`, so the documents
(``stream_resource`` with ``mimetype "application/x-hdf5"``, ``parameters.dataset
"/entry/data/data"``, ``chunk_shape``; one ``stream_datum`` per event) and the descriptor
(``<name>`` of shape ``[1, H, W]``, ``external "STREAM:"``) are ophyd-async's. Only the frames
differ: instead of a Gaussian blob, each exposure is rendered from the seeded phantom and
instrument model of :mod:`txm_live.sim` at the state of the ophyd-async motors (energy in keV,
sample stage) and shutter.

:func:`make_async_txm` returns the devices (to be connected in the RunEngine's event loop, which
it does), :func:`xanes_scan_async` is an FXI-style plan over them (darks once at the start,
a background per energy with the sample moved out, energies in keV). An ophyd-async ion chamber
(a :class:`~ophyd_async.core.StandardReadable` over a soft signal, gated by the camera's
exposures) reads the beam of each exposure, so that this variant exercises the I0 path too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg

from txm_live.sim.devices import CLOSED, HDF5_DATASET, OPEN, SimTXM, make_txm
from txm_live.sim.fxi import incident_reading, render_chunk

__all__ = ["AsyncTXM", "make_async_txm", "xanes_scan_async"]

#: Gain of the simulated ion chamber (reading per incident photon and pixel), as FXI's ``ic3``.
ION_CHAMBER_GAIN = 1e-3


class _FrameFile:
    """One SWMR HDF5 file of uint16 frames (the detector's output file)."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        import h5py

        self.file = h5py.File(path, "w", libver="latest")
        self.data = self.file.create_dataset(HDF5_DATASET, shape=(0, *shape), dtype="<u2",
                                             maxshape=(None, *shape), chunks=(1, *shape))
        self.file.swmr_mode = True
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        self.data.resize(self.count + 1, axis=0)
        self.data[self.count] = frame
        self.data.flush()
        self.count += 1

    def close(self) -> None:
        self.file.close()


def _detector_classes() -> Any:
    """The ophyd-async logic classes (imported lazily: ophyd-async is needed only here)."""
    from ophyd_async.core import (
        DetectorAcquireLogic,
        DetectorDataLogic,
        DetectorTriggerLogic,
        StandardDetector,
        StreamResourceDataProvider,
        StreamResourceInfo,
        TriggerInfo,
        soft_signal_r_and_setter,
    )

    class FrameGenerator:
        """Renders frames of the beamline state into the open file (ophyd-async PatternGenerator's role)."""

        def __init__(self, beamline: AsyncTXM) -> None:
            self.beamline = beamline
            self.file: _FrameFile | None = None
            self.n_frames = 1
            self.frame_index = 0
            self.images_written, self._set_written = soft_signal_r_and_setter(int)

        def open_file(self, path: Path) -> None:
            self.file = _FrameFile(path, self.beamline.txm.detector_shape)
            self._set_written(0)

        async def write_frames(self) -> None:
            if self.file is None:
                raise RuntimeError("open_file not run")
            await self.beamline.sync()
            chunk = render_chunk(self.beamline.txm, self.n_frames, self.frame_index)
            chamber = self.beamline.ion_chamber
            if chamber is not None:  # gated by this exposure: the beam of the same trigger
                chamber.expose(self.beamline.txm, self.frame_index)
            self.frame_index += 1
            for frame in chunk:  # exposures of one trigger: same geometry, independent noise
                self.file.append(frame)
                self._set_written(self.file.count)
                await asyncio.sleep(0)

        def close_file(self) -> None:
            if self.file is not None:
                self.file.close()
                self.file = None

    @dataclass
    class TriggerLogic(DetectorTriggerLogic):
        generator: FrameGenerator
        frames_per_event: int = 1

        async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
            self.generator.n_frames = max(int(num), 1)

        async def default_trigger_info(self) -> TriggerInfo:
            # N collections per event: descriptor shape (N, H, W), one StreamDatum index per event
            return TriggerInfo(collections_per_event=self.frames_per_event)

    class AcquireLogic(DetectorAcquireLogic):
        def __init__(self, generator: FrameGenerator) -> None:
            self.generator = generator
            self.task: asyncio.Task | None = None

        async def start_acquiring(self) -> None:
            self.task = asyncio.create_task(self.generator.write_frames())

        async def wait_for_idle(self) -> None:
            if self.task:
                await self.task

        async def ensure_stopped(self) -> None:
            if self.task:
                self.task.cancel()
                try:
                    await self.task
                except asyncio.CancelledError:
                    pass
                self.task = None

    class DataLogic(DetectorDataLogic):
        def __init__(self, generator: FrameGenerator, directory: Path) -> None:
            self.generator = generator
            self.directory = directory
            self.n_files = 0

        async def prepare_unbounded(self, datakey_name: str):  # noqa: ANN202 - ophyd-async type
            import uuid

            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{datakey_name}_{uuid.uuid4().hex[:10]}.h5"
            self.generator.open_file(path)
            h, w = self.generator.beamline.txm.detector_shape
            info = StreamResourceInfo(data_key=datakey_name, shape=(h, w), chunk_shape=(1, h, w),
                                      dtype_numpy="<u2", parameters={"dataset": HDF5_DATASET})
            return StreamResourceDataProvider(uri=path.resolve().as_uri(), resources=[info],
                                              mimetype="application/x-hdf5",
                                              collections_written_signal=self.generator.images_written)

        async def stop(self) -> None:
            self.generator.close_file()

        def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
            return [datakey_name]

    class SimTxmDetector(StandardDetector):
        """ophyd-async TXM camera (see the module docstring)."""

        def __init__(self, beamline: AsyncTXM, directory: Path, name: str = "", frames_per_event: int = 1) -> None:
            self.generator = FrameGenerator(beamline)
            self.add_detector_logics(TriggerLogic(self.generator, int(frames_per_event)), AcquireLogic(self.generator),
                                     DataLogic(self.generator, directory))
            super().__init__(name=name)

    return SimTxmDetector


def _ion_chamber_class() -> Any:
    """The ophyd-async ion chamber class (imported lazily, as the detector classes)."""
    from ophyd_async.core import AsyncStatus, StandardReadable, soft_signal_r_and_setter
    from ophyd_async.core import StandardReadableFormat as Format

    class SimIonChamber(StandardReadable):
        """Ion chamber gated by the camera's exposures (as an electrometer gated by the camera's trigger).

        Its ``value`` (data key ``<name>-value``) is the beam integrated during the camera's last
        exposure (:func:`txm_live.sim.fxi.incident_reading`: upstream of the sample, or after it
        with ``downstream=True``); read it with the camera in the same ``trigger_and_read``.
        ``trigger()`` completes at once: the camera's exposure sets the reading.
        """

        def __init__(self, name: str = "", *, gain: float = ION_CHAMBER_GAIN, downstream: bool = False) -> None:
            with self.add_children_as_readables(Format.HINTED_SIGNAL):
                self.value, self._set_value = soft_signal_r_and_setter(float, 0.0)
            self.gain = float(gain)
            self.downstream = bool(downstream)
            super().__init__(name=name)

        def expose(self, txm: SimTXM, frame_index: int) -> None:
            """Set the reading for the exposure ``frame_index`` of ``txm`` in its current state."""
            self._set_value(incident_reading(txm, frame_index, gain=self.gain, downstream=self.downstream))

        @AsyncStatus.wrap
        async def trigger(self) -> None:
            return None

    return SimIonChamber


@dataclass(eq=False)
class AsyncTXM:
    """ophyd-async devices of the simulated TXM.

    Attributes
    ----------
    energy : ophyd_async.sim.SimMotor
        Monochromator, keV (data key = its name, descriptor ``units "keV"``).
    sample_x : ophyd_async.sim.SimMotor
        Sample stage (um).
    shutter : ophyd_async soft signal
        1 open, 0 closed.
    camera : StandardDetector
        The ophyd-async camera.
    ion_chamber : ophyd_async StandardReadable or None
        Ion chamber gated by the camera (data key ``<name>-value``), or None.
    frames_per_event : int
        Exposures per trigger, prepared by :func:`xanes_scan_async`.
    txm : SimTXM
        The model the frames are rendered from (eV).
    """

    txm: SimTXM
    energy: Any = None
    sample_x: Any = None
    shutter: Any = None
    camera: Any = None
    ion_chamber: Any = None
    frames_per_event: int = 1

    async def sync(self) -> None:
        """Put the model in the devices' state (energy keV -> eV, stage, shutter)."""
        e_kev = await self.energy.user_readback.get_value()
        x = await self.sample_x.user_readback.get_value()
        shutter = await self.shutter.get_value()
        self.txm.mono.set(float(e_kev) * 1000.0)
        self.txm.stage.set(float(x))
        self.txm.shutter.put(OPEN if int(shutter) == OPEN else CLOSED)


def make_async_txm(
    phantom: Any,
    write_path: str | Path,
    *,
    seed: int = 0,
    camera_name: str = "txmcam",
    energy_name: str = "dcm_energy",
    energy_range_ev: tuple[float, float] = (6000.0, 7023.0),
    frames_per_event: int = 1,
    ion_chamber: str | None = "ic3",
    ion_chamber_downstream: bool = False,
    **overrides: Any,
) -> AsyncTXM:
    """Build and connect the ophyd-async TXM (in bluesky's event loop: make the RunEngine first).

    Parameters
    ----------
    phantom
        See :func:`txm_live.sim.devices.make_txm`.
    write_path : str or Path
        Directory of the camera's HDF5 files.
    seed : int
    camera_name, energy_name : str
        Device names (data keys ``<camera_name>``, ``<energy_name>``).
    energy_range_ev : (float, float)
        Scan range (eV) of the instrument model.
    frames_per_event : int
        Exposures per trigger (ophyd-async ``collections_per_event``): the data key has shape
        ``(N, H, W)`` and each StreamDatum index covers N rows of the dataset.
    ion_chamber : str or None
        Name of the ion chamber read with the camera (data key ``<name>-value``; a name that
        does not say "I0", so txm-live decides from the data), None for none.
    ion_chamber_downstream : bool
        Place the chamber after the sample (it then follows the sample's absorption).
    **overrides
        :class:`~txm_live.sim.effects.EffectsConfig` fields; ``magnification`` defaults to False.
    """
    from bluesky.run_engine import call_in_bluesky_event_loop
    from ophyd_async.core import soft_signal_rw
    from ophyd_async.sim import SimMotor

    overrides.setdefault("magnification", False)
    overrides.setdefault("energy_range", tuple(float(x) for x in energy_range_ev))
    txm = make_txm(phantom, seed=seed, **overrides)
    bl = AsyncTXM(txm=txm)
    bl.energy = SimMotor(name=energy_name, units="keV", initial_value=energy_range_ev[0] / 1000.0)
    bl.sample_x = SimMotor(name="sample_x", units="um")
    bl.shutter = soft_signal_rw(int, OPEN, name="shutter_open")
    if not isinstance(frames_per_event, (int, np.integer)) or frames_per_event < 1:
        raise ValueError(f"frames_per_event must be an int >= 1, got {frames_per_event!r}")
    bl.frames_per_event = int(frames_per_event)
    bl.camera = _detector_classes()(bl, Path(write_path), name=camera_name, frames_per_event=int(frames_per_event))
    if ion_chamber is not None:
        bl.ion_chamber = _ion_chamber_class()(name=ion_chamber, downstream=ion_chamber_downstream)

    async def connect() -> None:
        for dev in (bl.energy, bl.sample_x, bl.shutter, bl.camera, bl.ion_chamber):
            if dev is not None:
                await dev.connect()

    call_in_bluesky_event_loop(connect())
    return bl


def xanes_scan_async(
    bl: AsyncTXM,
    eng_list: Sequence[float] | np.ndarray,
    *,
    out_x: float = 100.0,
    md: dict[str, Any] | None = None,
) -> Generator[Msg, Any, str]:
    """XANES scan over the ophyd-async devices: darks once, then sample and background per energy.

    Parameters
    ----------
    bl : AsyncTXM
    eng_list : sequence of float
        Energies in keV.
    out_x : float
        Sample displacement (um) for the background images.
    md : dict, optional
        Extra start metadata.
    """
    eng = np.asarray(eng_list, dtype=np.float64)
    if eng.ndim != 1 or eng.size == 0 or not np.all(np.isfinite(eng)):
        raise ValueError(f"eng_list must be a non-empty 1-D list of finite energies (keV), got shape {eng.shape}")
    values = [float(x) for x in eng]
    motors = [bl.energy, bl.sample_x]
    detectors = [bl.camera] + ([bl.ion_chamber] if bl.ion_chamber is not None else [])
    start_md = {"plan_name": "xanes_scan_async", "motors": [m.name for m in motors],
                "detectors": [d.name for d in detectors], "eng_list": values, "num_points": len(values), **(md or {})}

    @bpp.stage_decorator(detectors)
    @bpp.run_decorator(md=start_md)
    def inner() -> Generator[Msg, Any, None]:
        from ophyd_async.core import TriggerInfo

        # N exposures per trigger (ophyd-async collections per event), prepared once after staging
        yield from bps.prepare(bl.camera, TriggerInfo(collections_per_event=bl.frames_per_event), wait=True)
        yield from bps.mv(bl.shutter, CLOSED)
        yield from bps.trigger_and_read([*detectors, *motors], name="dark")
        yield from bps.mv(bl.shutter, OPEN)
        for e in values:
            yield from bps.mv(bl.energy, e)
            yield from bps.trigger_and_read([*detectors, *motors], name="primary")
            yield from bps.mv(bl.sample_x, out_x)
            yield from bps.trigger_and_read([*detectors, *motors], name="background")
            yield from bps.mv(bl.sample_x, 0.0)
            yield from bps.checkpoint()
        yield from bps.mv(bl.shutter, CLOSED)

    return (yield from inner())
