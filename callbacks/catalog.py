"""Record Bluesky runs into a Tiled catalog: an embedded server, a facility server, a recorder.

An *embedded* Tiled server is a real Tiled HTTP server bound to ``127.0.0.1`` on a free port,
serving a writable SQLite catalog that lives in a directory of the user's choice::

    DIR/catalog/catalog.db        run metadata (start/descriptor/stop), SQLite
    DIR/catalog/data/             arrays written by Tiled (zarr), e.g. inline camera images
    DIR/catalog/tables.sqlite     event tables (energies, timestamps, seq_num)
    DIR/catalog/server.log        server log

Camera images written by a file-backed camera (HDF5 files announced with ``stream_resource`` /
``stream_datum`` documents) stay where the camera wrote them; Tiled only registers them. The
server must be allowed to read them: pass their folder in ``readable_storage`` (``DIR`` itself is
always readable).

A facility server (PostgreSQL-backed Tiled, shared by the beamline) is reached with
:func:`connect` (URI + API key); the recorder and the replay work the same on both.

Recording never runs on the RunEngine thread: :func:`record_to` subscribes a
:class:`ThreadedCallback` that only enqueues the document; a worker thread feeds
``bluesky_tiled_plugins.TiledWriter``. A failing write is logged and kept in
:attr:`ThreadedCallback.errors`, never raised into the RunEngine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EmbeddedTiled",
    "Recording",
    "ThreadedCallback",
    "connect",
    "free_port",
    "make_writer",
    "record_to",
    "start_embedded_server",
]

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 60.0  # seconds (the machine may be loaded; catalog init runs a subprocess)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedTiled:
    """A running Tiled server (see :func:`start_embedded_server`).

    Attributes
    ----------
    uri : str
        Base API URI, ``http://127.0.0.1:PORT/api/v1`` (without the key).
    api_key : str
        Single-user API key required for reading and writing.
    directory : Path
        The catalog directory (``DIR/catalog``).
    catalog_uri : str
        SQL URI of the catalog database (``sqlite:///...`` or ``postgresql+asyncpg://...``).
    port : int
        TCP port on 127.0.0.1.
    """

    uri: str
    api_key: str
    directory: Path
    catalog_uri: str
    port: int
    _close: Callable[[], None] = field(repr=False, default=lambda: None)
    _closed: bool = field(repr=False, default=False)

    @property
    def uri_with_key(self) -> str:
        """URI including ``?api_key=...`` (handy for ``tiled.client.from_uri`` / the CLI)."""
        return f"{self.uri}?api_key={self.api_key}"

    def client(self) -> Any:
        """A fresh ``tiled.client`` root container connected with the API key."""
        return connect(self.uri, api_key=self.api_key)

    def close(self) -> None:
        """Stop the server (idempotent). The catalog stays on disk and can be served again."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> EmbeddedTiled:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(uri: str, *, api_key: str | None = None, **kwargs: Any) -> Any:
    """Connect to a Tiled server (embedded or a facility's PostgreSQL-backed one).

    Parameters
    ----------
    uri : str
        e.g. ``"https://tiled.facility.org/api/v1"`` or ``"http://127.0.0.1:8000"``; a URI with a
        path inside the server (``.../api/v1/metadata/txm``) connects to that node.
    api_key : str, optional
        API key. Defaults to the ``TILED_API_KEY`` environment variable (then to an interactive
        login if the server asks for one).
    **kwargs
        Passed to ``tiled.client.from_uri`` (e.g. ``verify=False`` for a self-signed test server).

    Returns
    -------
    tiled.client.container.Container
    """
    from tiled.client import from_uri

    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise ValueError(f"uri must be an http(s):// URI of a Tiled server, got {uri!r}")
    api_key = api_key if api_key is not None else os.environ.get("TILED_API_KEY")
    return from_uri(uri, api_key=api_key, **kwargs)


def _wait_healthy(base_url: str, *, alive: Callable[[], bool], log: Path | None) -> None:
    import httpx

    deadline = time.monotonic() + _STARTUP_TIMEOUT
    with httpx.Client(trust_env=False) as http:
        while True:
            if not alive():
                tail = ""
                if log is not None and log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"Tiled server exited during start-up. Log tail:\n{tail}")
            try:
                if http.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.RequestError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Tiled server at {base_url} not ready in {_STARTUP_TIMEOUT} s")
            time.sleep(0.1)


def start_embedded_server(
    directory: str | os.PathLike[str],
    *,
    port: int | None = None,
    catalog_uri: str | None = None,
    readable_storage: Sequence[str | os.PathLike[str]] = (),
    api_key: str | None = None,
    in_process: bool = False,
    expose_raw_assets: bool = True,
) -> EmbeddedTiled:
    """Start a real Tiled server on 127.0.0.1 serving a writable catalog under ``directory``.

    Use it as a context manager (the server stops on exit, the catalog stays on disk)::

        with start_embedded_server("scans/") as tiled:
            client = tiled.client()

    Parameters
    ----------
    directory : path
        Working directory ``DIR``; the catalog goes to ``DIR/catalog`` (created if needed).
        Serving the same directory again reopens the runs recorded before.
    port : int, optional
        TCP port; by default a free port is chosen.
    catalog_uri : str, optional
        SQL URI of the catalog database; default ``sqlite:///DIR/catalog/catalog.db``. A
        ``postgresql+asyncpg://user@host:port/db`` URI serves a PostgreSQL catalog instead
        (the database must exist; the tables are created if needed).
    readable_storage : sequence of paths
        Extra folders the server may read external files (camera HDF5) from. ``DIR`` is always
        readable.
    api_key : str, optional
        Single-user API key; random by default (``.api_key``).
    in_process : bool
        Run uvicorn in a background thread of this process instead of a subprocess. The
        subprocess (default) keeps the server's work off this process's GIL, so it cannot slow
        the RunEngine or the analysis.
    expose_raw_assets : bool
        Serve the registered files themselves (``/asset/bytes``, Tiled's ``expose_raw_assets``);
        the replay of an area-detector file shared by several streams needs it when the file is
        not readable on the client's machine.

    Returns
    -------
    EmbeddedTiled

    Notes
    -----
    The server is bound to 127.0.0.1 only and protected by the API key. It is meant for one
    user's data; a shared facility catalog is a PostgreSQL-backed Tiled deployment reached with
    :func:`connect`.
    """
    root = Path(directory).resolve()
    cat_dir = root / "catalog"
    data_dir = cat_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if catalog_uri is None:
        catalog_uri = f"sqlite:///{cat_dir / 'catalog.db'}"
    elif not isinstance(catalog_uri, str) or "://" not in catalog_uri:
        raise ValueError(f"catalog_uri must be an SQL URI, got {catalog_uri!r}")
    if port is not None and not (0 < int(port) < 65536):
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    tables_uri = f"sqlite:///{cat_dir / 'tables.sqlite'}"
    readable = [str(root), *(str(Path(p).resolve()) for p in readable_storage)]
    api_key = api_key or secrets.token_hex(16)
    port = int(port) if port else free_port()
    log_path = cat_dir / "server.log"
    base_url = f"http://127.0.0.1:{port}"

    config = {"catalog_uri": catalog_uri, "writable": [str(data_dir), tables_uri],
              "readable": readable, "api_key": api_key, "port": port, "log_path": str(log_path),
              "expose_raw_assets": bool(expose_raw_assets)}
    if in_process:
        close = _start_thread(config, base_url, log_path)
    else:
        close = _start_subprocess(config, base_url, log_path)
    logger.info("Tiled server for %s at %s", cat_dir, base_url)
    return EmbeddedTiled(uri=f"{base_url}/api/v1", api_key=api_key, directory=cat_dir,
                         catalog_uri=catalog_uri, port=port, _close=close)


def _init_catalog(catalog_uri: str) -> None:
    """Create the catalog tables if needed (in this process: no extra interpreter start-up)."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
    from tiled.utils import ensure_specified_sql_driver

    uri = ensure_specified_sql_driver(catalog_uri)

    async def setup() -> None:
        engine = create_async_engine(uri)
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
        except UninitializedDatabase:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    # A private thread: asyncio.run must not meet a running loop (e.g. a Jupyter kernel's).
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(setup())
            with warnings.catch_warnings():  # alembic's own config deprecation, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as exc:  # re-raised below in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="tiled-catalog-init")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _make_server(config: dict[str, Any]) -> Any:
    """Build the uvicorn server of a Tiled app from the JSON-able ``config``."""
    import copy

    import uvicorn
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.config import Authentication
    from tiled.server.app import build_app
    from tiled.server.logging_config import LOGGING_CONFIG

    _init_catalog(config["catalog_uri"])
    log_config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("access", "default"):
        log_config["handlers"][name]["class"] = "logging.FileHandler"
        del log_config["handlers"][name]["stream"]
        log_config["handlers"][name]["filename"] = config["log_path"]
    catalog = catalog_from_uri(config["catalog_uri"], writable_storage=config["writable"],
                               readable_storage=config["readable"])
    app = build_app(catalog, authentication=Authentication(single_user_api_key=config["api_key"]),
                    server_settings={"expose_raw_assets": config.get("expose_raw_assets", True)})

    class _Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # only the subprocess entry installs them
            if config.get("signals"):
                super().install_signal_handlers()

    return _Server(uvicorn.Config(app, host="127.0.0.1", port=int(config["port"]),
                                  loop="asyncio", log_config=log_config))


def _serve_main() -> None:
    """Entry point of the server subprocess (configuration in ``$TXM_LIVE_TILED_CONFIG``)."""
    import json

    config = json.loads(os.environ.pop("TXM_LIVE_TILED_CONFIG"))
    parent = config.get("parent_pid")
    if parent is not None:  # never outlive the process that started the server (killed, crashed)
        from txm_live.callbacks.analysis_process import _die_with_parent

        _die_with_parent(int(parent), kernel_signal=bool(config.get("parent_main_thread")))
    config["signals"] = True
    _make_server(config).run()


def _start_subprocess(config: dict[str, Any], base_url: str,
                      log_path: Path) -> Callable[[], None]:
    import json

    import threading

    code = "from txm_live.callbacks.catalog import _serve_main; _serve_main()"
    # The server ends with this process, even when it is killed (SIGKILL, or SIGTERM, which ends
    # Python without cleanup): the child polls this pid, and on Linux also asks the kernel for a
    # SIGKILL when the starting thread ends, when that thread is the main thread (which ends
    # only with the process; another thread may end while the server is still in use).
    # Done in the child, not in a preexec_fn (unsafe in a process with threads).
    config = dict(config, parent_pid=os.getpid(),
                  parent_main_thread=threading.current_thread() is threading.main_thread())
    # The key goes through the environment, not the command line (visible in `ps`).
    env = dict(os.environ, TXM_LIVE_TILED_CONFIG=json.dumps(config))
    log = open(log_path, "ab")  # noqa: SIM115 (closed in close())
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            env=env, stdin=subprocess.DEVNULL)

    def close() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()

    try:
        _wait_healthy(base_url, alive=lambda: proc.poll() is None, log=log_path)
    except BaseException:
        close()
        raise
    return close


def _start_thread(config: dict[str, Any], base_url: str, log_path: Path) -> Callable[[], None]:
    server = _make_server(config)
    thread = threading.Thread(target=server.run, name="tiled-server", daemon=True)
    thread.start()

    def close() -> None:
        server.should_exit = True
        thread.join(timeout=15)

    try:
        _wait_healthy(base_url, alive=thread.is_alive, log=log_path)
    except BaseException:
        close()
        raise
    return close


_STOP = object()


class ThreadedCallback:
    """Run a document callback on a worker thread: ``__call__`` only enqueues.

    Parameters
    ----------
    callback : callable
        ``callback(name, doc)``, e.g. a ``TiledWriter``.
    name : str
        Thread name, for logs.
    backlog_warning : int
        Log a warning when more documents than this wait in the queue (the consumer is slower
        than the acquisition; memory grows).

    Notes
    -----
    The queue is unbounded on purpose: blocking would stall the RunEngine. Documents are passed
    as they are (not copied); neither side mutates them. Exceptions of ``callback`` never reach
    the caller: they are counted in :attr:`n_errors`, the first 200 kept in :attr:`errors` as
    ``"doc name: TypeName: message"``, the first 10 logged with their traceback.
    """

    def __init__(self, callback: Callable[[str, dict], Any], *, name: str = "txm-live-writer",
                 backlog_warning: int = 2000) -> None:
        if not callable(callback):
            raise ValueError(f"callback must be callable, got {callback!r}")
        self.callback = callback
        self.errors: list[str] = []  # the first ``max_errors`` messages
        self.n_errors = 0
        self.max_errors = 200
        self.n_documents = 0
        #: Documents never handed to ``callback`` because :meth:`close` gave up on it.
        self.n_dropped = 0
        self._abandoned = False
        self._last_success = time.monotonic()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._backlog_warning = int(backlog_warning)
        self._warned = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        if self._closed:
            logger.error("ThreadedCallback is closed; dropped a %r document", name)
            return
        self._queue.put((name, doc))
        if not self._warned and self._queue.qsize() > self._backlog_warning:
            self._warned = True
            logger.warning("%s: %d documents waiting; the writer is slower than the scan",
                           self._thread.name, self._queue.qsize())

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                name, doc = item
                if self._abandoned:  # close() gave up on the callback: drain without calling it
                    self.n_dropped += 1
                    continue
                try:
                    self.callback(name, doc)
                    self._last_success = time.monotonic()
                except Exception as exc:  # never raise into the acquisition
                    self.n_errors += 1
                    if len(self.errors) < self.max_errors:
                        self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    if self.n_errors <= 10:
                        logger.exception("%s failed on a %r document", self._thread.name, name)
                    elif self.n_errors == 11:
                        logger.error("%s: further errors are counted, not logged",
                                     self._thread.name)
                self.n_documents += 1
            finally:
                self._queue.task_done()

    @property
    def backlog(self) -> int:
        """Documents waiting in the queue."""
        return self._queue.qsize()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every document enqueued so far is processed; False on timeout."""
        if timeout is None:
            self._queue.join()
            return True
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    wait = flush

    def close(self, timeout: float | None = None, *, stall_timeout: float | None = None) -> None:
        """Process what is queued, then stop the worker thread.

        Parameters
        ----------
        timeout : float, optional
            Give up after this many seconds in all.
        stall_timeout : float, optional
            Give up when the callback has not succeeded once for this many seconds while
            documents wait (a server that is down or refuses every write).

        Giving up drops the documents still queued (counted in :attr:`n_dropped`), records a
        ``CatalogError`` in :attr:`errors` and returns; the worker thread (a daemon) finishes the
        call it is in, then drains the queue without calling the callback.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        t0 = time.monotonic()
        while self._thread.is_alive():
            self._thread.join(0.05)
            now = time.monotonic()
            over = timeout is not None and now - t0 > timeout
            stalled = stall_timeout is not None and now - max(self._last_success, t0) > stall_timeout
            if self._thread.is_alive() and (over or stalled):
                self._abandon(now - t0)
                return

    def _abandon(self, waited: float) -> None:
        from txm_live.errors import CatalogError

        self._abandoned = True
        n = max(self._queue.qsize() - 1, 0)  # minus the stop marker
        msg = (f"close: {CatalogError.__name__}: gave up after {waited:.1f} s with about {n} documents "
               f"unwritten ({self.n_errors} write errors); the camera's raw files keep the data")
        if len(self.errors) < self.max_errors:
            self.errors.append(msg)
        logger.error("%s: %s", self._thread.name, msg)


@dataclass
class Recording:
    """Handle returned by :func:`record_to`.

    Attributes
    ----------
    token : int
        RunEngine subscription token.
    callback : ThreadedCallback
        The threaded writer (``.errors``, ``.backlog``).
    """

    RE: Any
    token: int
    callback: ThreadedCallback

    @property
    def errors(self) -> list[str]:
        """Write errors met so far (``"doc name: TypeName: message"``)."""
        return self.callback.errors

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is in the catalog (call before reading)."""
        return self.callback.flush(timeout)

    wait = flush

    def close(self, timeout: float | None = None, *, stall_timeout: float | None = 10.0) -> None:
        """Unsubscribe from the RunEngine, finish writing, stop the worker thread.

        A catalog that accepts nothing for ``stall_timeout`` seconds (down, full, read-only) is
        given up (a ``CatalogError`` in :attr:`errors`, the documents left are dropped), so that
        shutdown is never held for minutes by client retries; a slow but working catalog is
        waited for (up to ``timeout`` seconds in all, if given).
        """
        with contextlib.suppress(Exception):
            self.RE.unsubscribe(self.token)
        self.callback.close(timeout, stall_timeout=stall_timeout)

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_writer(client: Any, *, batch_size: int = 16, max_array_size: int = 0,
                **kwargs: Any) -> Any:
    """A ``bluesky_tiled_plugins.TiledWriter`` for ``client``.

    ``batch_size`` events (or stream datums) are grouped per write: small enough that the
    catalog follows the scan (another process can read a run while it is measured), large
    enough to keep HTTP requests few.

    ``max_array_size=0`` writes every array-valued data key as an array node, never as a list
    column of the event table: the SQLite event tables of the embedded server (chosen over
    DuckDB so that several servers may open one catalog) cannot store list columns.
    """
    from bluesky_tiled_plugins import TiledWriter

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return TiledWriter(client, batch_size=int(batch_size), max_array_size=int(max_array_size),
                       **kwargs)


def record_to(RE: Any, client: Any, *, batch_size: int = 16, **writer_kwargs: Any) -> Recording:
    """Record every run of ``RE`` into the Tiled catalog ``client``, off the RunEngine thread.

    Parameters
    ----------
    RE : bluesky.RunEngine
    client : tiled client container (``EmbeddedTiled.client()`` or :func:`connect`)
    batch_size : int
        Events per write (see :func:`make_writer`).
    **writer_kwargs
        Passed to ``bluesky_tiled_plugins.TiledWriter``; ``backup_directory="..."`` keeps a
        JSON-lines copy of every run whose writing fails (e.g. the server is down), from which
        it can be re-inserted later. Works for file-backed cameras (documents without arrays);
        TiledWriter's JSON backup cannot store inline images (numpy arrays) and it keeps the
        run's documents in memory until the stop.

    Returns
    -------
    Recording
        ``.token`` (RunEngine subscription), ``.flush()`` before reading, ``.close()``.

    Notes
    -----
    Inline images are written as arrays by Tiled; images of a file-backed camera are registered
    as external HDF5 data sources (the files stay in place and must be readable by the server).
    The RunEngine thread only puts the document on a queue (microseconds).
    """
    writer = make_writer(client, batch_size=batch_size, **writer_kwargs)
    threaded = ThreadedCallback(writer, name="tiled-writer")
    token = RE.subscribe(threaded)
    return Recording(RE=RE, token=token, callback=threaded)
