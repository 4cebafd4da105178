"""The ``txm-live`` command line.

Subcommands::

    txm-live demo [--sample nd|lfp|lno] [--size small|full] [--out DIR] [--config FILE] [--live-plot] [--seed N]
                  [--no-keep-raw]
    txm-live replay --catalog PATH_OR_URI [--out DIR] [--overwrite] [--dask ADDRESS] [--plan-name NAME] [RUN ...]
    txm-live serve --zmq HOST:PORT [--out DIR] [--allow-pickle] [--dask ADDRESS]
    txm-live config --print

Everything heavy (numpy, bluesky, tiled, matplotlib) is imported inside the subcommand, so
``txm-live --help`` answers at once. Exit codes: 0 success, 1 a txm-live error or a run that
failed (message on stderr, no traceback), 2 bad command line (including an unknown run, a
results folder that exists without ``--overwrite``, an address that does not resolve and an
``--element``/``--edges`` that cannot give analysis windows, refused before anything starts),
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

_EPILOG = """examples:
  txm-live demo                           simulated beamtime, small: 10-15 s idle (longer on a busy machine),
                                          results in ./txm-live-output
  txm-live demo --size full --live-plot   the seed experiment (602x643 px x 1024 energies), ~66 s idle, 3.5 GB RAM
  txm-live demo --sample lfp              a LiFePO4 battery particle across the Fe K edge
  txm-live replay --catalog ./txm-live-output -- -1
                                          re-analyse the latest recorded run into ./txm-live-replay/<uid>/
  txm-live serve --zmq 127.0.0.1:5568     analyse runs published by a RunEngine over ZeroMQ
  txm-live config --print > txm-live.toml write the default configuration, edit, pass with --config
"""

#: How ``replay`` finds a run (also in README "Re-analyse recorded runs").
RUN_RULE = ("a full run uid; a unique uid prefix of at least 6 characters; -1 for the latest run "
            "(-2 the one before; put '--' before negative numbers); or a scan_id (a whole number)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory; results go to DIR/<run uid>/ (default: from the config, "
                        "'txm-live-output')")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML configuration file (see 'txm-live config --print'); flags override it")


def _add_references(p: argparse.ArgumentParser, *, catalog_option: bool = False) -> None:
    """Options of plans that take references in a separate run, or write energies without units."""
    p.add_argument("--flats-from", metavar="UID", default=None,
                   help="take the flat (background) frames from this run of the catalog")
    p.add_argument("--darks-from", metavar="UID", default=None,
                   help="take the dark frames from this run of the catalog")
    p.add_argument("--energy-units", choices=("eV", "keV"), default=None,
                   help="units of the energy key, overriding the descriptor (default: its units, "
                        "else keV when every value is below 100)")
    i0 = p.add_mutually_exclusive_group()
    i0.add_argument("--i0-key", metavar="KEY", default=None,
                    help="incident-intensity monitor (ion chamber) to normalize each sample and flat by "
                         "(default: a key named I0, i0, *_i0, else the upstream chamber decided from the data)")
    i0.add_argument("--no-i0", dest="i0_key", action="store_const", const=False,
                    help="no I0 normalization, even with a monitor-like key")
    if catalog_option:
        p.add_argument("--reference-catalog", metavar="PATH_OR_URI", default=None,
                       help="catalog of --flats-from/--darks-from runs")


def _edges_arg(text: str) -> tuple[str, ...]:
    edges = tuple(e.strip() for e in text.split(",") if e.strip())
    if not edges:
        raise argparse.ArgumentTypeError(f"--edges needs edge names such as K or L3,L2, got {text!r}")
    return edges


def _add_analysis(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("element, edges and normalization (override the config file)")
    g.add_argument("--element", default=None, metavar="SYMBOL",
                   help="absorbing element, e.g. Fe (default: from the config, else the start document, else "
                        "detected from the data)")
    g.add_argument("--edges", type=_edges_arg, default=None, metavar="EDGE[,EDGE]",
                   help="edges to analyse, e.g. K or L3,L2 (default: config, start document, else the element's "
                        "edges inside the scanned range)")
    g.add_argument("--method", choices=("athena", "mback"), default=None,
                   help="normalization of each pixel spectrum (default athena)")
    g.add_argument("--post-order", dest="post_order", type=int, choices=(0, 1, 2), default=None,
                   help="post-edge polynomial order for every edge (default: chosen per edge from the window)")


def _analysis_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"element": args.element, "edges": args.edges, "method": args.method, "post_order": args.post_order}


def _refuse_unknown_edges(args: argparse.Namespace, cfg: Any, *, element: str | None = None,
                          edges: Sequence[str] | None = None) -> int | None:
    """Exit code (and message) when the element/edges cannot give analysis windows, else None.

    Checked before anything is scanned or replayed, with the message the analysis would give.
    ``element``/``edges`` are what the run's start document will say when it is known (the
    demo's sample); the options win over them, as in the analysis
    (:func:`txm_live.callbacks.edge_choice.choose`). With only one of the two known (replay,
    serve: the start document is not read yet) the element must be tabulated and every edge
    name one that txm-live has default windows for. Exit code 2 when ``--element``/``--edges``
    were given on the command line (a bad option, like argparse's), 1 when the values come from
    the ``--config`` file (as every other configuration error).
    """
    from txm_live.detect import edges_in_range
    from txm_live.edges import check_edge_name, default_windows

    el = cfg.element or element
    ed = tuple(cfg.edges) if cfg.edges else (tuple(edges) if edges else None)
    try:
        if el is not None and ed is not None:
            default_windows(el, ed, joint=False)
        elif el is not None:
            edges_in_range(el, 1.0, 1e7)
        elif ed is not None:
            for edge in ed:
                check_edge_name(edge)
    except ValueError as exc:
        _err(f"cannot build edge windows: {exc}")
        return 2 if args.element is not None or args.edges is not None else 1
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``txm-live`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="txm-live",
        description="Live chemical phase mapping of TXM XANES imaging while the beamline measures.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the txm-live version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated beamtime end to end (RunEngine, live analysis, catalog, figures)",
                          description="Simulate a corroded NdFeB particle, scan it across the Nd L3 and L2 edges "
                                      "through a real RunEngine, analyse it live, record it in an embedded Tiled "
                                      "catalog, write phases.h5 and figures, and compare with the ground truth "
                                      "(--sample lfp / lno: a battery particle across the Fe / Ni K edge). "
                                      "Exit code 1 when the run has errors; 2 when --element/--edges cannot give "
                                      "analysis windows (refused before the scan starts).")
    demo.add_argument("--size", choices=("small", "full"), default=None,
                      help="small: a 128x128 px sample in a 176x176 px detector frame (the maps' size), "
                           "225 energies, 10-15 s on an idle 2-core machine; full: 602x643 px sample in a "
                           "730x771 px frame, 1024 energies, HDF5 frames (2.3 GB under OUT/raw/<run uid>/), "
                           "about 66 s idle and 3.5 GB of memory. Busy machines take several times longer. "
                           "Default: small")
    _add_common(demo)
    _add_analysis(demo)
    demo.add_argument("--live-plot", action="store_true", default=None,
                      help="open a live matplotlib window during the scan (needs a display; otherwise a "
                           "snapshot PNG is refreshed in the output directory)")
    demo.add_argument("--sample", choices=("nd", "lfp", "lno"), default="nd",  # = demo.DEMO_SAMPLES (tested)
                      help="nd: corroded NdFeB magnet, Nd L3/L2 (default); lfp: LiFePO4 battery particle with "
                           "FePO4 and magnetite, Fe K; lno: LiNiO2 particle with NiO, Ni K (measured standards)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the simulated sample and noise (default 0)")
    demo.add_argument("--flux", type=float, default=None,
                      help="flat-field photons per pixel per exposure (default 5000)")
    demo.add_argument("--no-figures", dest="figures", action="store_false", default=None,
                      help="do not write PNG figures")
    demo.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                      help="no progress bars")
    demo.add_argument("--no-keep-raw", dest="keep_raw", action="store_false", default=True,
                      help="delete the raw HDF5 frames (OUT/raw/<run uid>/, full size only) after the "
                           "analysis; the catalog then no longer holds the images")

    replay = sub.add_parser("replay", help="re-analyse runs recorded in a Tiled catalog",
                            description="Replay recorded runs from a Tiled catalog through the same analysis "
                                        "and write DIR/<run uid>/phases.h5 plus figures. Existing results are "
                                        "never replaced unless --overwrite is given. RUN is " + RUN_RULE + ".")
    replay.add_argument("--catalog", required=True, metavar="PATH_OR_URI",
                        help="Tiled server URI (http://...), a local catalog directory (the demo's OUT or "
                             "OUT/catalog), or a Tiled/databroker profile name")
    replay.add_argument("--out", metavar="DIR", default=None,
                        help="output directory; results go to DIR/<run uid>/ (default: ./txm-live-replay, "
                             "apart from the live results)")
    replay.add_argument("--config", metavar="FILE", default=None,
                        help="TOML configuration file (see 'txm-live config --print'); flags override it")
    replay.add_argument("--overwrite", action="store_true",
                        help="replace results that already exist in DIR/<run uid>/")
    _add_analysis(replay)
    _add_references(replay)
    replay.add_argument("--dask", metavar="ADDRESS", default=None,
                        help="analyse the runs in parallel on a Dask cluster, one task per run: a scheduler "
                             "address (tcp://host:8786) or local[:N] (N worker processes on this machine)")
    replay.add_argument("--no-figures", dest="figures", action="store_false", default=None,
                        help="do not write PNG figures")
    replay.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                        help="no progress bars")
    replay.add_argument("--plan-name", metavar="NAME", default=None,
                        help="only runs of this plan (e.g. xanes_scan2)")
    replay.add_argument("uids", nargs="*", metavar="RUN",
                        help="run(s): " + RUN_RULE + ". None: every run holding a XANES scan (an image stream and "
                             "an energy axis), whatever its plan; the others are listed with the reason")

    serve = sub.add_parser("serve", help="analyse runs published over ZeroMQ by a remote RunEngine",
                           description="Subscribe to a bluesky ZeroMQ proxy and analyse every XANES run it "
                                       "publishes, writing results as each run ends. Stop with Ctrl-C.")
    serve.add_argument("--zmq", required=True, metavar="HOST:PORT",
                       help="address of the proxy's outgoing (subscriber) port, e.g. 127.0.0.1:5568")
    _add_common(serve)
    _add_analysis(serve)
    serve.add_argument("--dask", metavar="ADDRESS", default=None,
                       help="send the edge analyses to a Dask cluster (tcp://host:8786 or local[:N]); "
                            "default: the local analysis process")
    serve.add_argument("--serializer", choices=("msgpack", "pickle"), default="msgpack",
                       help="serialization used by the publisher (default msgpack, safe)")
    serve.add_argument("--allow-pickle", action="store_true",
                       help="required with --serializer pickle: only for a trusted publisher, since "
                            "unpickling runs arbitrary code")
    _add_references(serve, catalog_option=True)
    serve.add_argument("--rcvhwm", type=int, default=100_000, metavar="N",
                       help="messages ZeroMQ queues for this consumer before it drops (a drop is reported as "
                            "DataLossError in the run; default 100000)")
    serve.add_argument("--no-figures", dest="figures", action="store_false", default=None,
                       help="do not write PNG figures for each run")

    config = sub.add_parser("config", help="show the configuration",
                            description="Print the default configuration (or FILE's, merged with the defaults) as TOML.")
    config.add_argument("--print", dest="print_config", action="store_true",
                        help="print the configuration as TOML (default when no other action is given)")
    config.add_argument("--config", metavar="FILE", default=None, help="TOML file to merge with the defaults and print")
    return parser


def _err(msg: str) -> None:
    print(f"txm-live: error: {msg}", file=sys.stderr)


def _cmd_config(args: argparse.Namespace) -> int:
    from txm_live.config import load_config

    print(load_config(args.config).to_toml())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from txm_live.config import load_config

    cfg = load_config(args.config, size=args.size, out=args.out, seed=args.seed, flux=args.flux,
                      live_plot=args.live_plot, figures=args.figures, **_analysis_flags(args))
    from txm_live.callbacks.demo import DEMO_SAMPLES, run_demo

    spec = DEMO_SAMPLES[args.sample]
    refused = _refuse_unknown_edges(args, cfg, element=spec.element, edges=spec.edges)
    if refused is not None:
        return refused

    summary = run_demo(config=cfg, progress=args.progress, sample=args.sample, keep_raw=args.keep_raw)
    return 0 if summary.result.ok else 1  # as replay: a run with errors is not a success


#: Default output folder of ``replay`` (kept apart from the demo's and live results).
REPLAY_OUT = "txm-live-replay"


def _cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txm_live.callbacks.replay import catalog_client, replay_runs, resolve_run, select_runs
    from txm_live.callbacks.results_file import write_results
    from txm_live.config import load_config

    cfg = load_config(args.config, figures=args.figures, dask=args.dask, **_analysis_flags(args))
    refused = _refuse_unknown_edges(args, cfg)
    if refused is not None:
        return refused
    out = Path(args.out if args.out is not None else REPLAY_OUT)
    try:
        opened = catalog_client(args.catalog)
        client = opened.__enter__()
    except FileNotFoundError as exc:
        _err(str(exc))
        return 2
    try:
        uids: list[str] = []
        for key in args.uids:
            try:
                run = resolve_run(client, key)
            except KeyError as exc:
                _err(f"{exc.args[0] if exc.args else exc} in {args.catalog} (RUN is {RUN_RULE})")
                return 2
            plan = run.metadata["start"].get("plan_name")
            if args.plan_name is not None and plan != args.plan_name:
                print(f"skipped {key}: plan {plan!r} is not {args.plan_name!r}", flush=True)
                continue
            uids.append(str(run.metadata["start"]["uid"]))
        if not args.uids:
            selection = select_runs(client, plan_name=args.plan_name, image_key=cfg.image_key,
                                    energy_key=cfg.energy_key)
            for uid, why in selection.skipped.items():
                print(f"skipped {uid[:8]}: {why}", flush=True)
            print(selection.summary(), flush=True)
            uids = list(selection.selected)
        if not uids:
            _err(f"no run to replay in {args.catalog}")
            return 1
        existing = [out / u for u in dict.fromkeys(uids) if (out / u).exists() and any((out / u).iterdir())]
        if existing and not args.overwrite:
            _err("results exist already in " + ", ".join(str(p) for p in existing)
                 + ": choose another --out, or pass --overwrite to replace them")
            return 2
        print(f"replaying {_plural(len(uids), 'run')} from {args.catalog} into {out}", flush=True)
        # with a cluster, each run is one task (its workers open the catalog themselves) and its
        # callback analyses in the worker process
        results = replay_runs(client if cfg.dask is None else args.catalog, uids, out=None, progress=args.progress,
                              callback_factory=_callback_factory(dataclasses.replace(cfg, dask=None),
                                                                 **_reference_options(args, args.catalog)),
                              client=cfg.dask)
    finally:
        opened.__exit__(None, None, None)
    provenance = {"source": "replay", "catalog": str(args.catalog)}
    if Path(str(args.catalog)).expanduser().exists():
        provenance["catalog_path"] = str(Path(args.catalog).expanduser().resolve())
    for r in results:
        path = write_results(r, out, parameters=provenance)
        print(_one_line(r), flush=True)
        if cfg.figures:
            from txm_live.figures import save_report

            paths = save_report(r, path.parent)
            print(f"  results: {path} and {_plural(len(paths), 'figure')} in {path.parent}", flush=True)
        else:
            print(f"  results: {path}", flush=True)
    failed = [r for r in results if not r.ok]
    return 1 if failed else 0


def _plural(n: int, noun: str) -> str:
    """``"1 run"``, ``"2 runs"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _reference_options(args: argparse.Namespace, catalog: Any) -> dict[str, Any]:
    """``flats_from``/``darks_from``/``energy_units``/``i0_key`` keyword arguments from the command line."""
    opts: dict[str, Any] = {"energy_units": getattr(args, "energy_units", None)}
    if getattr(args, "i0_key", None) is not None:
        opts["i0_key"] = args.i0_key
    flats, darks = getattr(args, "flats_from", None), getattr(args, "darks_from", None)
    if flats or darks:
        if catalog is None:
            raise SystemExit("txm-live: --flats-from/--darks-from need --reference-catalog")
        opts.update(flats_from=flats, darks_from=darks, reference_catalog=catalog)
    return opts


def _callback_factory(cfg: Any, progress: Any = None, **extra: Any) -> Any:
    """Factory of live callbacks configured like ``cfg`` (start-document values where unset).

    The element and edges of the configuration, when set, win over the start document's; unset,
    they come from the start document, else from the data. ``progress`` receives the callback's
    :class:`~txm_live.callbacks.live.ProgressEvent` objects; ``extra``: more keyword arguments of
    the callback (``flats_from``, ``darks_from``, ``energy_units``...).
    """

    def factory() -> Any:
        from txm_live.callbacks.demo import analysis_functions
        from txm_live.callbacks.live import XanesLiveCallback

        analysis, preview = analysis_functions(cfg)
        return XanesLiveCallback(
            energy_key=cfg.energy_key, image_key=cfg.image_key, flat_stream=cfg.flat_stream,
            dark_stream=cfg.dark_stream, element=cfg.element, edges=cfg.edges,
            windows=cfg.edge_windows() if cfg.windows else None,
            analysis=analysis, preview=preview, register=cfg.register,
            correct_magnification=cfg.correct_magnification, session_options=cfg.session_options(), dask=cfg.dask,
            progress=progress, **extra)

    return factory


def _one_line(r: Any) -> str:
    parts = [f"run {r.run_uid[:8]}: {_plural(r.n_frames, 'frame')}"]
    for key, e in r.edges.items():
        parts.append(f"{(e.element or r.element) + ' ' if (e.element or r.element) else ''}{key} "
                     f"{_plural(e.n_phases, 'phase')}")
    missing = [k for k in r.requested_edges if k not in r.edges]
    if missing:
        parts.append(f"not analysed: {', '.join(missing)}")
    for c in r.comparisons:
        parts.append(f"{c.name} agreement {c.agreement:.1%}")
    if r.notes:
        parts.append(_plural(len(r.notes), "note"))
    if r.errors:
        parts.append(f"{len(r.errors)} error(s): {r.errors[0]}")
    return ", ".join(parts)


def _check_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` and resolve HOST now; ValueError naming the problem otherwise."""
    import socket

    from txm_live.callbacks.remote import parse_address

    host, port = parse_address(text)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"address {text!r}: host {host!r} does not resolve ({exc})") from None
    return host, port


def _serve_progress(ev: Any) -> None:
    """One line per run event on stdout while serving (not per frame)."""
    uid = ev.run_uid[:8]
    if ev.stage == "start":
        expected = f", {ev.n_expected} energies planned" if ev.n_expected else ""
        print(f"run {uid}: started{expected}", flush=True)
    elif ev.stage == "window-complete":
        print(f"run {uid}: {ev.edge} window complete after {_plural(ev.n_frames, 'frame')}", flush=True)
    elif ev.stage == "window-incomplete":
        print(f"run {uid}: {ev.edge} {ev.message} after {_plural(ev.n_frames, 'frame')}", flush=True)
    elif ev.stage == "analysis-finished" and ev.result is not None:
        secs = f" in {ev.seconds:.1f} s" if ev.seconds is not None else ""
        print(f"run {uid}: {ev.edge} {ev.message} analysis: {_plural(ev.result.n_phases, 'phase')}{secs}",
              flush=True)
    elif ev.stage in ("analysis-failed", "error"):
        print(f"run {uid}: {ev.stage}: {ev.message}", flush=True)
    elif ev.stage == "stop":
        print(f"run {uid}: stopped after {_plural(ev.n_frames, 'frame')}, finishing the analysis", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txm_live.config import load_config

    cfg = load_config(args.config, out=args.out, figures=args.figures, dask=args.dask, **_analysis_flags(args))
    refused = _refuse_unknown_edges(args, cfg)
    if refused is not None:
        return refused
    if args.serializer == "pickle" and not args.allow_pickle:
        _err("--serializer pickle needs --allow-pickle (unpickling runs arbitrary code)")
        return 2
    try:
        host, port = _check_address(args.zmq)
    except ValueError as exc:
        _err(str(exc))
        return 2
    cfg = load_config(args.config, out=args.out, figures=args.figures, **_analysis_flags(args))
    out = cfg.out
    from txm_live.callbacks.remote import serve

    def on_result(r: Any) -> None:
        folder = Path(out) / r.run_uid
        print(_one_line(r), flush=True)
        if cfg.figures:
            from txm_live.figures import save_report

            paths = save_report(r, folder)
            print(f"  results: {folder / 'phases.h5'} and {_plural(len(paths), 'figure')} in {folder}", flush=True)
        else:
            print(f"  results: {folder / 'phases.h5'}", flush=True)

    print(f"txm-live: listening on {host}:{port}, writing to {out}/<run uid>/ (Ctrl-C to stop)", flush=True)
    done = serve(args.zmq, out=out, serializer=args.serializer, allow_pickle=args.allow_pickle, on_result=on_result,
                 rcvhwm=args.rcvhwm,
                 callback_factory=_callback_factory(cfg, progress=_serve_progress,
                                                    **_reference_options(args, args.reference_catalog)))
    print(f"txm-live: stopped; {_plural(len(done), 'run')} analysed, results in {out}", flush=True)
    return 0


_COMMANDS = {"demo": _cmd_demo, "replay": _cmd_replay, "serve": _cmd_serve, "config": _cmd_config}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``txm-live`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from txm_live import __version__

        print(f"txm-live {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    from txm_live.errors import ScanInterruptedError, TxmLiveError

    try:
        return _COMMANDS[args.command](args)
    except ScanInterruptedError as exc:
        print(f"txm-live: interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except (TxmLiveError, ValueError, FileNotFoundError) as exc:
        _err(f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
