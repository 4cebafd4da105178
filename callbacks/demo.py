"""``txm-live demo``: a simulated beamtime, end to end.

A seeded corroded Nd2Fe14B particle (:mod:`txm_live.sim.phantom`) is imaged by the simulated TXM
(:mod:`txm_live.sim.devices`, ophyd) while a real :class:`bluesky.RunEngine` runs
:func:`txm_live.sim.plans.xanes_scan` across the Nd L3 and L2 edges. The run is recorded in an
embedded Tiled catalog and analysed live by :class:`~txm_live.callbacks.live.XanesLiveCallback`
(streaming preview, exact phase analysis of L3 as soon as its window is complete, then L2, the
L2/L3 comparison and EXAFS). The demo writes ``OUT/<run uid>/phases.h5`` and the figures, and,
since the sample is simulated, scores the phase maps against the ground truth.

Sizes: ``small`` (a 128 x 128 px sample in a 176 x 176 px detector frame, which is the size
of the phase maps; 225 energies; 10-15 s on an idle 2-core machine) and ``full`` (602 x 643
px in a 730 x 771 px frame, the 1024 energies of the seed experiment, HDF5 file-backed camera
writing 2.3 GB of raw frames under ``OUT/raw/<run uid>/``; about 66 s idle and 3.5 GB of
memory). A busy machine takes several times longer. The demo prints both shapes when it starts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from txm_live.config import TxmLiveConfig, load_config
from txm_live.results import EdgeResult, RunResult

__all__ = ["DEMO_SAMPLES", "DemoSample", "DemoSummary", "analysis_functions", "demo_energies", "demo_shape",
           "ground_truth_labels", "run_demo"]

_SHAPES = {"small": (128, 128), "full": (602, 643)}
_MARGIN = {"small": 24, "full": 64}


def demo_shape(size: str) -> tuple[int, int]:
    """Phantom shape (H, W) of a demo size."""
    if size not in _SHAPES:
        raise ValueError(f"size must be one of {tuple(_SHAPES)}, got {size!r}")
    return _SHAPES[size]


def demo_energies(size: str) -> np.ndarray:
    """Monochromator energies (eV) of a demo size.

    ``full`` is the seed experiment's 1 eV grid (1024 energies). ``small`` keeps both
    edge windows complete but sample them like a time-limited beamtime would (225 energies): 1 eV
    over the L3 white line, 1.5 eV over the L2 white line, 3 eV over the L3 EXAFS region
    (k up to 7.4 1/A), 5-10 eV elsewhere.
    """
    if size == "full":
        from txm_live.sim.plans import default_energies

        return np.asarray(default_energies(), dtype=float)
    if size not in _SHAPES:
        raise ValueError(f"size must be one of {tuple(_SHAPES)}, got {size!r}")
    parts = [
        np.arange(6000.0, 6150.0, 10.0),
        np.arange(6150.0, 6190.0, 5.0),
        np.arange(6190.0, 6240.0, 1.0),  # L3 white line
        np.arange(6240.0, 6400.0, 3.0),  # L3 EXAFS
        np.arange(6400.0, 6660.0, 10.0),
        np.arange(6660.0, 6710.0, 5.0),
        np.arange(6710.0, 6760.0, 1.5),  # L2 white line
        np.arange(6760.0, 7023.0, 10.0),
        np.array([7022.0]),
    ]
    return np.unique(np.concatenate(parts))


@dataclass(frozen=True)
class DemoSample:
    """A simulated sample of ``txm-live demo --sample NAME``.

    Attributes
    ----------
    description : str
        Recorded as ``sample`` in the start document.
    make_phantom : callable
        ``(shape, seed) -> phantom`` (:class:`txm_live.sim.devices.PhantomLike` with ``labels``).
    energies : callable
        ``size -> energies`` (eV) of the scan.
    element : str
        Absorbing element, recorded in the start document by the plan.
    edges : tuple of str
        Edges scanned, recorded likewise.
    follow_energy_range : bool
        The instrument effects (drift, throughput, glitches) follow the scanned range and the
        magnification is 1 at its first energy; False: the ``EffectsConfig`` defaults (the Nd
        seed experiment, 6000-7023 eV).
    exafs : bool
        Extract EXAFS of the phase means. False for ``lfp``: its measured standards end at
        7200 eV and are extended without EXAFS, so there is none to extract.
    """

    description: str
    make_phantom: Callable[[tuple[int, int], int], Any]
    energies: Callable[[str], np.ndarray]
    element: str
    edges: tuple[str, ...]
    follow_energy_range: bool = True
    exafs: bool = True


def _nd_phantom(shape: tuple[int, int], seed: int) -> Any:
    from txm_live.sim.phantom import make_phantom

    return make_phantom(shape, mode="mixed", seed=seed)


def _lfp_phantom(shape: tuple[int, int], seed: int) -> Any:
    from txm_live.sim.battery import make_battery_phantom

    return make_battery_phantom(shape, seed=seed)


def _lno_phantom(shape: tuple[int, int], seed: int) -> Any:
    from txm_live.sim.battery import make_battery_phantom
    from txm_live.sim.standards import LINIO2, NIO

    return make_battery_phantom(shape, seed=seed, materials=(LINIO2, NIO))


def _fe_k_energies(size: str) -> np.ndarray:
    from txm_live.sim.standards import fe_k_energies

    return fe_k_energies()


def _ni_k_energies(size: str) -> np.ndarray:
    from txm_live.sim.standards import ni_k_energies

    return ni_k_energies()


#: The samples of the demo: ``nd`` (default) the corroded Nd2Fe14B particle across Nd L3/L2
#: (:mod:`txm_live.sim.phantom`); ``lfp`` a LiFePO4 battery particle with a FePO4 rim and cracks and
#: ~3 % magnetite inclusions across the Fe K edge, and ``lno`` a LiNiO2 particle with a NiO rim across
#: the Ni K edge on the energy list of a real TXM scan (:mod:`txm_live.sim.battery`, measured standards).
DEMO_SAMPLES: dict[str, DemoSample] = {
    "nd": DemoSample("simulated corroded Nd2Fe14B particle", _nd_phantom, demo_energies, "Nd", ("L3", "L2"),
                     follow_energy_range=False),
    "lfp": DemoSample("simulated LiFePO4 battery particle (FePO4 rim and cracks, magnetite inclusions)",
                      _lfp_phantom, _fe_k_energies, "Fe", ("K",), exafs=False),
    "lno": DemoSample("simulated LiNiO2 battery particle (NiO rim and crack faces)", _lno_phantom, _ni_k_energies,
                      "Ni", ("K",)),
}


def ground_truth_labels(txm: Any, phantom: Any, first_energy: float, n_dark: int) -> np.ndarray:
    """The phantom's labels placed like the first sample frame (the frame of the phase maps).

    Each label is resampled as a one-hot channel with the simulator's own geometry (offset,
    magnification, axis) and every detector pixel takes the strongest channel; background
    (label 0) and pixels outside the sample are ``-1``.
    """
    from txm_live.sim.effects import place_sample

    model = txm.model
    offset = model.sample_offset(float(first_energy), int(n_dark))
    labels = np.asarray(phantom.labels)
    n = int(labels.max()) + 1
    channels = np.stack([
        place_sample((labels == k).astype(np.float32), model.detector_shape, scale=model.scale(float(first_energy)),
                     shift=tuple(offset), axis_offset=model.config.axis_offset_px)
        for k in range(n)])
    out = channels.argmax(axis=0)
    out[(channels.max(axis=0) < 0.5) | (out == 0)] = -1
    return out


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did and how well.

    Attributes
    ----------
    run_uid : str
    result : RunResult
    output : Path
        ``OUT/<run uid>``.
    files : tuple of Path
        ``phases.h5`` and the PNG figures.
    detector_shape : (int, int)
        Detector frame (H, W) in pixels: the size of the phase maps.
    sample_shape : (int, int)
        Simulated sample (phantom) area (H, W) in pixels, inside the frame.
    raw : Path or None
        ``OUT/raw/<run uid>`` with the raw HDF5 frames (file-backed ``full`` size), ``None`` when
        the images went inline into the catalog or were removed (``keep_raw=False``).
    raw_bytes : int
        Size of the raw frames written (0 for inline images).
    catalog_uri : str
        Tiled URI the run was recorded to (valid while the demo ran; the catalog stays on disk
        under ``OUT/catalog``).
    ari : dict of str to float
        Adjusted Rand index against the ground truth: one per edge (``"L3"``, ``"L2"``) and per preview (``"L3 preview"``...).
    timings : dict of str to float
        Wall-clock seconds: ``"scan"`` (RunEngine), ``"analysis after scan"``, ``"figures"``,
        ``"total"``, plus each analysis stage reported by the edge results.
    sample : str
        The demo sample (a key of :data:`DEMO_SAMPLES`).
    exafs : bool
        Whether EXAFS was extracted for this sample (:attr:`DemoSample.exafs`).
    """

    run_uid: str
    result: RunResult
    output: Path
    files: tuple[Path, ...]
    catalog_uri: str
    ari: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    detector_shape: tuple[int, int] = (0, 0)
    sample_shape: tuple[int, int] = (0, 0)
    raw: Path | None = None
    raw_bytes: int = 0
    sample: str = "nd"
    exafs: bool = True


class _Progress:
    """tqdm bar of frames plus one line per analysis stage (called from the worker threads)."""

    def __init__(self, enabled: bool, n_expected: int, live_plot: Any = None) -> None:
        self.bar: Any = None
        self.live_plot = live_plot
        self.lock = threading.Lock()
        self.enabled = enabled
        self.n_expected = n_expected

    def _ensure_bar(self) -> None:
        if self.enabled and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.n_expected, desc="frames acquired", unit="frame", file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5)

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def __call__(self, ev: Any) -> None:
        if self.live_plot is not None:
            self.live_plot.progress(f"{ev.stage} {ev.edge or ''} {ev.message} ({ev.n_frames} frames)")
            if ev.result is not None:
                self.live_plot.show_edge(ev.result)
        if ev.result is not None:
            res = ev.result
            self.write(f"    {ev.message} analysis {res.edge}: {res.n_phases} phases, "
                       f"{int(np.sum(res.counts)):,} pixels in {ev.seconds:.1f} s")
        with self.lock:
            self._ensure_bar()
            if self.bar is not None and ev.n_frames > self.bar.n:
                self.bar.update(ev.n_frames - self.bar.n)
            if ev.stage in ("frame", "start"):
                return
            text = f"[{ev.elapsed:7.1f} s] {ev.stage}"
            if ev.edge:
                text += f" {ev.edge}"
            if ev.message:
                text += f": {ev.message}"
            if self.bar is not None:
                self.bar.set_postfix_str(f"{ev.stage} {ev.edge or ''}".strip())
            self.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _AbortOnSigint:
    """Ctrl-C during the scan: pause the RunEngine at once, so that the demo can abort the run.

    Replaces bluesky's own handler (a deferred pause and several lines on stdout); a thread asks
    for the pause because signal handlers must stay short. :attr:`requested` tells whether
    Ctrl-C was pressed.
    """

    def __init__(self, RE: Any) -> None:
        self.RE = RE
        self.requested = False
        self._previous: Any = None

    def _pause(self) -> None:
        from bluesky.utils import TransitionError

        with contextlib.suppress(TransitionError), contextlib.redirect_stdout(io.StringIO()):
            self.RE.request_pause(defer=False)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.requested = True
        threading.Thread(target=self._pause, name="txm-live-sigint", daemon=True).start()

    def __enter__(self) -> _AbortOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextlib.contextmanager
def _quiet(*names: str, level: int = logging.CRITICAL) -> Any:
    """Raise the level of the named loggers for the duration (restored after)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels):
            lg.setLevel(old)


def _abort_quietly(RE: Any, reason: str) -> Any:
    """``RE.abort(reason)`` without bluesky's messages and traceback; the run gets its stop document."""
    with contextlib.redirect_stdout(io.StringIO()), _quiet("bluesky"):
        return RE.abort(reason=reason)


def analysis_functions(cfg: TxmLiveConfig) -> tuple[Callable[..., EdgeResult], Callable[..., EdgeResult] | None]:
    """The exact analysis and the streaming preview configured by ``cfg``.

    Both are :func:`functools.partial` objects of module-level functions, so they are picklable
    and the live callback runs them in its analysis process, away from the RunEngine's GIL.
    """
    from txm_live.phases import analyze_edge

    analysis = functools.partial(analyze_edge, **cfg.analysis_options())
    preview = None
    if cfg.preview:
        from txm_live.preview import preview_edge

        preview = functools.partial(preview_edge, n_learn=cfg.preview_n_learn)
    return analysis, preview


def run_demo(
    size: str | None = None,
    out: str | Path | None = None,
    *,
    config: TxmLiveConfig | None = None,
    seed: int | None = None,
    live_plot: bool | None = None,
    figures: bool | None = None,
    progress: bool = True,
    print_summary: bool = True,
    sample: str = "nd",
    keep_raw: bool = True,
) -> DemoSummary:
    """Run the simulated beamtime and return a :class:`DemoSummary`.

    Parameters
    ----------
    size : {"small", "full"}, optional
        Default from the configuration (``"small"``).
    out : path, optional
        Output directory (default from the configuration, ``"txm-live-output"``). The catalog
        goes to ``OUT/catalog``, results to ``OUT/<run uid>/``.
    config : TxmLiveConfig, optional
        Full configuration (:func:`txm_live.config.load_config`); the other keywords override it.
    seed : int, optional
        Seed of the phantom and of the instrument noise.
    live_plot : bool, optional
        Show a live-updating figure (a window when a display exists, else ``OUT/live.png``).
    figures : bool, optional
        Write the PNG figures (default True).
    progress : bool
        Progress bar and stage lines on stderr.
    print_summary : bool
        Print the summary on stdout at the end.
    sample : str
        A key of :data:`DEMO_SAMPLES`: ``"nd"`` (default), ``"lfp"`` (Fe K) or ``"lno"`` (Ni K).
        The battery samples scan their element's K edge on their own energy list (100 or 101
        energies at every size); the plan records the sample's element and edges in the start
        document, which the analysis follows unless the configuration sets them.
    keep_raw : bool
        Keep the raw HDF5 frames of a file-backed (``full``) run in ``OUT/raw/<run uid>/``.
        ``False`` deletes them after the analysis (the catalog then lacks the images, so the
        run can no longer be replayed).

    Returns
    -------
    DemoSummary

    Raises
    ------
    ScanInterruptedError
        Ctrl-C during the scan: the run was aborted (the catalog has its stop document with
        ``exit_status="abort"``, so it replays), what was measured was analysed and written to
        ``OUT/<run uid>/phases.h5`` flagged ``incomplete``; no figures.

    Notes
    -----
    Memory: the live cube holds ``n_energies x H' x W'`` float32 (H', W' the detector frame, the
    phantom plus a margin): 28 MB small, 2.3 GB full. The RunEngine thread only
    enqueues documents; the analysis runs on the callback's worker threads.
    """
    t_total = time.perf_counter()
    if sample not in DEMO_SAMPLES:
        raise ValueError(f"sample must be one of {tuple(DEMO_SAMPLES)}, got {sample!r}")
    spec = DEMO_SAMPLES[sample]
    cfg = config if config is not None else load_config()
    cfg = cfg.replace(size=size, out=out, seed=seed, live_plot=live_plot, figures=figures)
    shape = demo_shape(cfg.size)
    energies = np.asarray(spec.energies(cfg.size), dtype=float)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from bluesky import RunEngine
    from bluesky.utils import RunEngineInterrupted

    from txm_live.callbacks.catalog import record_to, start_embedded_server
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.callbacks.results_file import write_results
    from txm_live.sim.devices import make_txm
    from txm_live.sim.plans import xanes_scan

    phantom = spec.make_phantom(shape, cfg.seed)
    file_backed = cfg.size == "full"
    # Instrument effects (drift, throughput, glitches) follow the scanned range; magnification 1 at its start.
    scan_range = {} if not spec.follow_energy_range else {"energy_range": (float(energies[0]), float(energies[-1])),
                                                   "reference_energy": float(energies[0])}
    raw_root = out_dir / "raw"
    txm = make_txm(phantom, seed=cfg.seed, flux=cfg.flux, margin_px=_MARGIN[cfg.size], file_backed=file_backed,
                   write_path=raw_root if file_backed else None, **scan_range)
    frame = tuple(int(n) for n in txm.detector_shape)

    lp = None
    if cfg.live_plot:
        from txm_live.figures import LivePlot, display_available

        lp = LivePlot(snapshot=None if display_available() else out_dir / "live.png",
                      pixel_size_nm=phantom.pixel_size_nm)
    prog = _Progress(progress, len(energies), lp)
    analysis, preview = analysis_functions(cfg)
    cb = XanesLiveCallback(
        energy_key=cfg.energy_key, image_key=cfg.image_key, flat_stream=cfg.flat_stream, dark_stream=cfg.dark_stream,
        element=cfg.element, edges=cfg.edges, windows=cfg.edge_windows() if cfg.windows else None,
        analysis=analysis, preview=preview, register=cfg.register,
        correct_magnification=cfg.correct_magnification, session_options=cfg.session_options(), progress=prog,
        exafs=spec.exafs,
    )
    prog.write(f"txm-live demo: {sample} {cfg.size}: detector frame {frame[0]}x{frame[1]} px (= phase map size), "
               f"simulated sample {shape[0]}x{shape[1]} px at {phantom.pixel_size_nm:.1f} nm, {len(energies)} "
               f"energies {energies[0]:.0f}-{energies[-1]:.0f} eV, seed {cfg.seed} -> {out_dir}")
    timings: dict[str, float] = {}
    # the callback's errors are reported by the progress lines and the summary, not logged twice
    with _quiet("txm_live.callbacks.live", level=logging.ERROR), start_embedded_server(out_dir) as tiled:
        client = tiled.client()
        RE = RunEngine({}, call_returns_result=True, during_task=lp, context_managers=[])
        recording = record_to(RE, client)
        RE.subscribe(cb)
        if file_backed:  # raw frames of each run under OUT/raw/<run uid>/
            RE.subscribe(lambda name, doc: txm.camera.set_write_path(raw_root / doc["uid"]) if name == "start" else None)
        t0 = time.perf_counter()
        with _AbortOnSigint(RE) as sigint:
            try:
                run = RE(xanes_scan(txm, energies, n_dark=cfg.n_dark, element=spec.element, edges=spec.edges,
                                    md={"sample": spec.description, "demo_size": cfg.size}))
            except RunEngineInterrupted:
                run = _abort_quietly(RE, "interrupted by the user (Ctrl-C)")
            finally:
                timings["scan"] = time.perf_counter() - t0
        interrupted = sigint.requested
        t0 = time.perf_counter()
        results = cb.wait()
        timings["analysis after scan"] = time.perf_counter() - t0
        cb.close()
        recording.close()  # a catalog that accepts nothing for 10 s is given up (CatalogError in .errors)
        catalog_uri = tiled.uri
        if recording.errors:
            prog.write(f"catalog write errors: {recording.errors[:3]}")
    prog.close()
    if lp is not None:
        lp.pump()
    if run.exit_status != "success" and not interrupted:
        raise RuntimeError(f"the simulated scan ended with status {run.exit_status!r}: {run.reason}")
    uid = run.run_start_uids[0]
    result = next((r for r in results if r.run_uid == uid), None)
    if result is None:
        raise RuntimeError(f"no analysis result for run {uid}")
    if interrupted:
        params = {"demo_sample": sample, "demo_size": cfg.size, "seed": cfg.seed, "interrupted": True,
                  "catalog": str(out_dir / "catalog")}
        path = write_results(result, out_dir, parameters=params)
        from txm_live.errors import ScanInterruptedError

        raise ScanInterruptedError(
            f"scan of run {uid[:8]} interrupted after {result.n_frames} of {len(energies)} frames; partial results "
            f"in {path} (flagged incomplete), the run is in the catalog with exit_status {run.exit_status!r}"
        )
    if lp is not None:
        lp.show_result(result)
        lp.pump()

    params = {"demo_sample": sample, "demo_size": cfg.size, "seed": cfg.seed, "flux": cfg.flux, "n_energies": int(len(energies)),
              "analysis_options": cfg.analysis_options(), "catalog": str(out_dir / "catalog")}
    files = [write_results(result, out_dir, parameters=params)]
    if cfg.figures:
        t0 = time.perf_counter()
        from txm_live.figures import save_report

        files += save_report(result, out_dir / uid, pixel_size_nm=phantom.pixel_size_nm)
        timings["figures"] = time.perf_counter() - t0

    truth = ground_truth_labels(txm, phantom, float(energies[0]), cfg.n_dark)
    from txm_live.preview import agreement

    ari = {}
    tagged = [*result.edges.items(), *((f"{k} preview", e) for k, e in result.previews.items())]
    for name, edge in tagged:
        if edge.labels.shape == truth.shape:
            ari[name] = agreement(edge, truth)
    for key, e in result.edges.items():
        for k, v in e.timings.items():
            timings[f"{key} {k}"] = float(v)
    timings["total"] = time.perf_counter() - t_total
    raw_dir: Path | None = raw_root / uid if file_backed else None
    raw_bytes = sum(f.stat().st_size for f in raw_dir.rglob("*") if f.is_file()) if raw_dir is not None else 0
    if raw_dir is not None and not keep_raw:
        import shutil

        shutil.rmtree(raw_dir)
        raw_dir = None
    summary = DemoSummary(run_uid=uid, result=result, output=out_dir / uid, files=tuple(files),
                          catalog_uri=catalog_uri, ari=ari, timings=timings, detector_shape=frame,
                          sample_shape=shape, raw=raw_dir, raw_bytes=raw_bytes, sample=sample, exafs=spec.exafs)
    if print_summary:
        print(format_summary(summary))
    return summary


#: Reading order of the summary's notes, by how a note starts: what was analysed (element and
#: edges, windows), then the streams in the order a scan uses them, then the units; any other
#: note after these, in the order the run gave it.
_NOTE_ORDER = ("element", "windows", "sample stream", "flat stream", "dark stream", "energy units")


def _note_rank(note: str) -> int:
    return next((i for i, head in enumerate(_NOTE_ORDER) if note.startswith(head)), len(_NOTE_ORDER))


def format_summary(s: DemoSummary) -> str:
    """Human-readable report of a demo run (notes in reading order: :data:`_NOTE_ORDER`)."""
    r = s.result
    lines = [f"run {s.run_uid}: {r.n_frames} frames, {'ok' if r.ok else 'with errors'}"]
    tagged = [(f"{k} preview", e) for k, e in r.previews.items()] + list(r.edges.items())
    for tag, e in tagged:
        lines.append(f"  {tag}: {e.n_phases} phase{'' if e.n_phases == 1 else 's'} (eps {e.eps:.3g}, min_samples {e.min_samples}, "
                     f"{e.n_components} component{'' if e.n_components == 1 else 's'})")
        width = max([34, *(len(n) for n in e.phase_names)])  # keep the counts in one column
        for p in range(e.n_phases):
            lines.append(f"    {p}: {e.phase_names[p]:<{width}} {int(e.counts[p]):>8,} px")
        if tag in s.ari:
            lines.append(f"    agreement with the ground truth (ARI): {s.ari[tag]:.3f}")
    for c in r.comparisons:
        lines.append(f"  {c.name} phase agreement: {c.agreement:.1%}")
    for key, items in r.exafs.items():
        edge = r.edges.get(key)
        for x in items:
            name = edge.phase_names[x.phase] if edge is not None and x.phase < edge.n_phases else f"phase {x.phase}"
            lines.append(f"  EXAFS {key} {name}: first shell at {x.first_shell_r:.2f} A (apparent)")
    if not s.exafs:
        lines.append(f"  EXAFS: off for the {s.sample} sample (its simulated spectra carry no EXAFS "
                     "oscillations to extract)")
    for note in sorted(r.notes, key=_note_rank):  # stable: other notes keep their order
        lines.append(f"  note: {note}")
    for err in r.errors:
        lines.append(f"  error: {err}")
    t = s.timings
    lines.append("  timings: " + ", ".join(f"{k} {t[k]:.1f} s" for k in ("scan", "analysis after scan", "figures", "total")
                                           if k in t))
    lines.append(f"  maps: {s.detector_shape[0]}x{s.detector_shape[1]} px (the detector frame; simulated sample "
                 f"{s.sample_shape[0]}x{s.sample_shape[1]} px)")
    lines.append(f"  results: {s.output}  ({len(s.files)} file{'' if len(s.files) == 1 else 's'}: "
                 + ", ".join(p.name for p in s.files) + ")")
    if s.raw is not None:
        lines.append(f"  raw frames: {s.raw}  ({s.raw_bytes / 1e9:.2f} GB; --no-keep-raw deletes them)")
    elif s.raw_bytes:
        lines.append(f"  raw frames: {s.raw_bytes / 1e9:.2f} GB deleted (--no-keep-raw)")
    else:
        lines.append(f"  raw frames: inline in the catalog {s.output.parent / 'catalog'}")
    first = s.output / "phase_maps.png"
    if any(p.name == first.name for p in s.files):
        lines.append(f"  open first: {first}")
    elif not r.ok:
        lines.append("  no phase maps: see the errors above")
    return "\n".join(lines)
