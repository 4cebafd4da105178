"""A PostgreSQL-backed Tiled catalog (as at a facility): record a scan, search, read back, replay.

PostgreSQL 15 runs on 127.0.0.1 on a free port in a temporary directory (as the ``postgres``
user when the tests run as root: initdb/postgres refuse to run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from txm_live.callbacks.catalog import free_port, record_to, start_embedded_server
from txm_live.callbacks.replay import replay_run
from txm_live.sim.devices import make_txm
from txm_live.sim.phantom import make_phantom
from txm_live.sim.plans import coarse_energies, xanes_scan

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def postgres():
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL 15 binaries not found in {PG_BIN}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="txm-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    port = free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres", "--no-sync"]), **run)
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l",
                                 str(root / "postgres.log"), "-w", "-t", "60", "-o",
                                 f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off",
                                 "start"]), **run)
    try:
        subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p",
                                     str(port), "-U", "postgres", "tiled"]), **run)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/tiled"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_record_and_read_back_with_a_postgresql_catalog(postgres, tmp_path):
    from tiled.queries import Key

    phantom = make_phantom(shape=(32, 32), seed=2)
    energies = coarse_energies(8)
    with start_embedded_server(tmp_path, catalog_uri=postgres, in_process=True) as tiled:
        assert tiled.catalog_uri.startswith("postgresql+asyncpg://")
        assert not (tiled.directory / "catalog.db").exists()  # metadata went to PostgreSQL
        RE = RunEngine({})
        docs = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        recording = record_to(RE, tiled.client())
        txm = make_txm(phantom, seed=4, margin_px=4, file_backed=True,
                       write_path=tmp_path / "frames")
        (uid,) = RE(xanes_scan(txm, energies, n_dark=1, md={"proposal": "pg-test"}))
        assert recording.flush(timeout=60) and recording.errors == []
        recording.close()
        client = tiled.client()
        found = client.search(Key("start.proposal") == "pg-test")
        assert list(found) == [uid]
        run = found[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        images = run["primary"]["camera_image"].read()
        assert images.shape == (energies.size, 40, 40) and images.dtype == np.uint16
        replayed = []
        stats = replay_run(client, uid, lambda n, d: replayed.append((n, d)), progress=False)
        assert stats.n_events == {"dark": 2, "primary": energies.size, "flat": energies.size}
        pages = [d for n, d in replayed if n == "event_page"]
        first_primary = next(p for p in pages if p["descriptor"] == run["primary"].metadata["uid"])
        np.testing.assert_array_equal(first_primary["data"]["camera_image"][0], images[0])
    # the run's node is a row of PostgreSQL's catalog tables
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    keys = subprocess.run(_as_postgres([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", port, "-U",
                                        "postgres", "-d", "tiled", "-tAc",
                                        "SELECT key FROM nodes WHERE parent = 0"]),
                          check=True, capture_output=True, text=True, timeout=60).stdout.split()
    assert uid in keys
