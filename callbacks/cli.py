"""The ``txm-live`` command line.

Subcommands::

    txm-live demo [--sample nd|lfp|lno] [--size tiny|small|full] [--out DIR] [--config FILE] [--live-plot] [--seed N]
    txm-live replay --catalog PATH_OR_URI [--out DIR] [--dask ADDRESS] UID [UID ...]
    txm-live serve --zmq HOST:PORT [--out DIR] [--allow-pickle] [--dask ADDRESS]
    txm-live config --print

Everything heavy (numpy, bluesky, tiled, matplotlib) is imported inside the subcommand, so
``txm-live --help`` answers at once. Exit codes: 0 success, 1 a txm-live error (message on
stderr, no traceback), 2 bad command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

_EPILOG = """examples:
  txm-live demo                           simulated beamtime, small (128x128), results in ./txm-live-output
  txm-live demo --size full --live-plot   the full 602x643 x 1024-energy scan with a live window
  txm-live demo --sample lfp              a LiFePO4 battery particle across the Fe K edge
  txm-live replay --catalog ./catalog 3f2a...   re-analyse recorded runs from a Tiled catalog
  txm-live serve --zmq 127.0.0.1:5568     analyse runs published by a RunEngine over ZeroMQ
  txm-live config --print > txm-live.toml write the default configuration, edit, pass with --config
"""


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
                                      "catalog, write phases.h5 and figures, and compare with the ground truth.")
    demo.add_argument("--size", choices=("tiny", "small", "full"), default=None,
                      help="tiny: 96x96, 225 energies (~20 s); small: 128x128, 225 energies (~30 s); "
                           "full: 602x643 with 1024 energies (long). Default: small")
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

    replay = sub.add_parser("replay", help="re-analyse runs recorded in a Tiled catalog",
                            description="Replay recorded runs from a Tiled catalog through the same analysis "
                                        "and write DIR/<uid>/phases.h5 plus figures.")
    replay.add_argument("--catalog", required=True, metavar="PATH_OR_URI",
                        help="Tiled server URI (http://...), a local catalog directory, or a Tiled/databroker "
                             "profile name")
    _add_common(replay)
    _add_analysis(replay)
    _add_references(replay)
    replay.add_argument("--dask", metavar="ADDRESS", default=None,
                        help="analyse the runs in parallel on a Dask cluster, one task per run: a scheduler "
                             "address (tcp://host:8786) or local[:N] (N worker processes on this machine)")
    replay.add_argument("--no-figures", dest="figures", action="store_false", default=None,
                        help="do not write PNG figures")
    replay.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                        help="no progress bars")
    replay.add_argument("uids", nargs="+", metavar="UID", help="run uid(s) (a unique prefix is enough if the catalog allows it)")

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
    from txm_live.callbacks.demo import run_demo

    run_demo(config=cfg, progress=args.progress, sample=args.sample)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txm_live.callbacks.replay import replay_runs
    from txm_live.config import load_config

    cfg = load_config(args.config, out=args.out, figures=args.figures, dask=args.dask, **_analysis_flags(args))
    # with a cluster, each run is one task and its callback analyses in the worker process
    results = replay_runs(args.catalog, args.uids, out=cfg.out, progress=args.progress,
                          callback_factory=_callback_factory(dataclasses.replace(cfg, dask=None),
                                                             **_reference_options(args, args.catalog)),
                          client=cfg.dask)
    if cfg.figures:
        from txm_live.figures import save_report

        for r in results:
            paths = save_report(r, Path(cfg.out) / r.run_uid)
            print(f"{r.run_uid}: {len(paths)} figures in {Path(cfg.out) / r.run_uid}")
    failed = [r for r in results if not r.ok]
    for r in results:
        print(_one_line(r))
    return 1 if failed else 0


def _reference_options(args: argparse.Namespace, catalog: Any) -> dict[str, Any]:
    """``flats_from``/``darks_from``/``energy_units`` keyword arguments from the command line."""
    opts: dict[str, Any] = {"energy_units": getattr(args, "energy_units", None)}
    flats, darks = getattr(args, "flats_from", None), getattr(args, "darks_from", None)
    if flats or darks:
        if catalog is None:
            raise SystemExit("txm-live: --flats-from/--darks-from need --reference-catalog")
        opts.update(flats_from=flats, darks_from=darks, reference_catalog=catalog)
    return opts


def _callback_factory(cfg: Any, **extra: Any) -> Any:
    """Factory of live callbacks configured like ``cfg`` (start-document values where unset).

    The element and edges of the configuration, when set, win over the start document's; unset,
    they come from the start document, else from the data. ``extra``: more keyword arguments of
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
            correct_magnification=cfg.correct_magnification, dask=cfg.dask, **extra)

    return factory


def _one_line(r: Any) -> str:
    parts = [f"run {r.run_uid[:8]}: {r.n_frames} frames"]
    for key, e in r.edges.items():
        parts.append(f"{(e.element or r.element) + ' ' if (e.element or r.element) else ''}{key} {e.n_phases} phases")
    missing = [k for k in r.requested_edges if k not in r.edges]
    if missing:
        parts.append(f"not analysed: {', '.join(missing)}")
    for c in r.comparisons:
        parts.append(f"{c.name} agreement {c.agreement:.1%}")
    if r.notes:
        parts.append(f"{len(r.notes)} note(s)")
    if r.errors:
        parts.append(f"{len(r.errors)} error(s): {r.errors[0]}")
    return ", ".join(parts)


def _cmd_serve(args: argparse.Namespace) -> int:
    from txm_live.callbacks.remote import serve
    from txm_live.config import load_config

    cfg = load_config(args.config, out=args.out, figures=args.figures, dask=args.dask, **_analysis_flags(args))
    if args.serializer == "pickle" and not args.allow_pickle:
        raise ValueError("--serializer pickle needs --allow-pickle (unpickling runs arbitrary code)")
    out = cfg.out

    def on_result(r: Any) -> None:
        print(_one_line(r), flush=True)
        if cfg.figures:
            from pathlib import Path

            from txm_live.figures import save_report

            save_report(r, Path(out) / r.run_uid)

    print(f"txm-live: listening on {args.zmq}, writing to {out} (Ctrl-C to stop)", file=sys.stderr)
    serve(args.zmq, out=out, serializer=args.serializer, allow_pickle=args.allow_pickle, on_result=on_result,
          rcvhwm=args.rcvhwm,
          callback_factory=_callback_factory(cfg, **_reference_options(args, args.reference_catalog)))
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
