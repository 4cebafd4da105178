"""Benchmark: replay of an FXI-style run whose AD_HDF5 file is shared by all streams.

An FXI ``xanes_scan2`` run (``txm_live.sim.fxi``, file-backed: one AD_HDF5 file for darks,
samples and backgrounds, ``chunk_size`` frames per trigger) is recorded into a real embedded Tiled
server with ``TiledWriter``. The Tiled server cannot serve one stream's part of that file (HTTP
422); the replay reads each stream's chunks either from the file (readable here) or through the
server's raw asset endpoint with HTTP Range requests (a client on another machine). This prints
the raw replay speed (documents only, no analysis) of both ways and checks they emit the same
frames.

Usage::

    python benchmarks/bench_shared_file.py                      # 256 x 256 px, 60 energies, 5 frames per trigger
    python benchmarks/bench_shared_file.py --shape 96 96 --energies 225
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from bluesky import RunEngine

    from txm_live.callbacks.catalog import record_to, start_embedded_server
    from txm_live.callbacks.replay import replay_run
    from txm_live.sim.fxi import fxi_nd_energies, make_fxi, xanes_scan2
    from txm_live.sim.phantom import make_phantom

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=2, default=(256, 256))
    p.add_argument("--energies", type=int, default=60)
    p.add_argument("--chunk", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)

    all_eng = fxi_nd_energies()
    eng = all_eng[np.linspace(0, all_eng.size - 1, min(args.energies, all_eng.size)).round().astype(int)]
    with tempfile.TemporaryDirectory() as tmp, start_embedded_server(tmp) as server:
        RE = RunEngine({})
        recording = record_to(RE, server.client())
        fxi = make_fxi(make_phantom(tuple(args.shape), mode="pure", seed=0), seed=0, margin_px=8,
                       file_backed=True, write_path=Path(tmp) / "frames")
        (uid,) = RE(xanes_scan2(fxi, eng, chunk_size=args.chunk))
        assert recording.flush(timeout=600) and recording.errors == []
        recording.close()
        (path,) = (Path(tmp) / "frames").glob("*.h5")
        mb = path.stat().st_size / 1e6
        print(f"run: {eng.size} energies, {args.chunk} frames per trigger, frames {fxi.txm.detector_shape}, "
              f"file {mb:.1f} MB")
        print(f"{'read':<34} {'seconds':>8} {'MB/s':>8} {'frames/s':>9}")
        frames: dict[str, list] = {}
        for label, direct in (("from the file (readable here)", True), ("server asset endpoint (Range)", False)):
            best = float("inf")
            for _ in range(args.repeat):
                got: list = []

                def keep(name: str, doc: dict, got: list = got) -> None:
                    if name == "event_page":
                        got.extend(np.asarray(doc["data"]["KinetixU_image"]))

                stats = replay_run(server.client(), uid, keep, progress=False, direct_files=direct)
                best = min(best, stats.seconds)
            frames[label] = got
            n = sum(int(np.prod(f.shape[:-2])) for f in got)
            print(f"{label:<34} {best:8.2f} {mb / best:8.1f} {n / best:9.0f}   ({set(stats.sources.values())})")
        a, b = frames.values()
        same = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
        print(f"identical frames: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
