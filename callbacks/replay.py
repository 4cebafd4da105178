"""Replay recorded runs from a Tiled catalog through the live analysis, fast.

A recorded run is turned back into the documents the RunEngine emitted: the ``start``,
``descriptor`` and ``stop`` documents come from the catalog metadata; the events are rebuilt from
the event table (energies, pixel sizes, timestamps, ``seq_num``) and the camera images, which are
read *as arrays*, block-wise (``run[stream][key].read(slice)``), by a small pool of reader threads
ahead of the consumer. Events of all streams are emitted in acquisition order (merged by event
time, then stream order and ``seq_num``), as ``event_page`` documents validated by event-model.

Why not ``run.documents()``? Tiled's document export goes through the JSON-seq exporter and sends
every image as a JSON list of numbers (~20 s for 32 full frames); block-wise binary array reads
are two orders of magnitude faster.

Images of file-backed runs (external HDF5) arrive inline in the replay: the descriptor's data key
loses its ``"external"`` marker, and the event carries the array. The analysis sees the same
frames, energies and order as live, so its results are identical.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from event_model import DocumentNames, schema_validators

from txm_live.callbacks.shared_files import split_shared_files
from txm_live.errors import DocumentError, RunIncompleteError
from txm_live.results import RunResult

__all__ = ["ReplayStats", "RunSelection", "catalog_client", "find_catalog_directory", "is_run", "open_catalog",
           "replay_run", "replay_runs", "resolve_run", "select_runs"]

logger = logging.getLogger(__name__)

_EVENT_NAMESPACE = uuid.UUID("5b0f8a52-6c2e-4f0e-9a55-2f1d0e7b3c11")
_DESCRIPTOR_DROP = ("_config_updates",)


@dataclass(frozen=True)
class ReplayStats:
    """What :func:`replay_run` emitted.

    Attributes
    ----------
    run_uid : str
    n_events : dict of str to int
        Events emitted per stream.
    seconds : float
        Wall-clock time of the replay (reading and emitting; the consumer's own work may go on
        in its worker).
    warnings : tuple of str
        Inconsistencies met (e.g. fewer images than events in an aborted run); the replay went on.
    sources : dict of str to str
        How each ``stream/data_key`` array was read: ``"hdf5"`` (directly from the registered
        files), ``"http"`` (through the Tiled server), ``"hdf5-shared"`` / ``"hdf5-asset"``
        (the stream's chunks of an area-detector file shared by several streams, read from the
        file or through the server's raw asset endpoint: see :mod:`txm_live.callbacks.shared_files`).
    """

    run_uid: str
    n_events: dict[str, int]
    seconds: float
    warnings: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)


def _databroker_v2(obj: Any) -> Any | None:
    """The Tiled node behind a databroker v1 ``Broker`` or ``Header`` (None for anything else)."""
    module = type(obj).__module__ or ""
    if module.startswith("databroker") and type(obj).__name__ in ("Broker", "Header"):
        return obj.v2
    return None


def is_run(obj: Any) -> bool:
    """True for a single run object (a Tiled/databroker ``BlueskyRun``, a databroker v1 ``Header``)."""
    if _databroker_v2(obj) is not None:
        return type(obj).__name__ == "Header"
    try:
        return isinstance(obj.metadata.get("start"), Mapping) and hasattr(obj, "__getitem__")
    except Exception:  # noqa: BLE001 - anything else is not a run
        return False


def open_catalog(catalog: Any, *, api_key: str | None = None) -> Any:
    """Return a Tiled client container (or a single run) for ``catalog``.

    ``catalog`` may be a Tiled client, an :class:`~txm_live.callbacks.catalog.EmbeddedTiled`, an
    ``http(s)://`` URI (API key from ``api_key``, the URI's ``?api_key=`` or ``$TILED_API_KEY``),
    a databroker 2.x catalog (``databroker.temp()``, ``Broker.named(profile)``: its ``.v2``), a
    Tiled profile name (``tiled profile list``), or a single run (``BlueskyRun``, v1 ``Header``).
    """
    from txm_live.callbacks.catalog import EmbeddedTiled, connect

    if isinstance(catalog, EmbeddedTiled):
        return catalog.client()
    v2 = _databroker_v2(catalog)
    if v2 is not None:
        return v2
    if isinstance(catalog, str) and not catalog.startswith(("http://", "https://")):
        from tiled.profiles import list_profiles

        if catalog in list_profiles():
            from tiled.client import from_profile

            return from_profile(catalog, api_key=api_key) if api_key else from_profile(catalog)
        raise ValueError(f"catalog {catalog!r} is neither an http(s):// URI nor a Tiled profile name "
                         f"(profiles: {sorted(list_profiles())})")
    if isinstance(catalog, str):
        return connect(catalog, api_key=api_key)
    if not hasattr(catalog, "search") or not hasattr(catalog, "__getitem__"):
        raise ValueError(f"catalog must be a Tiled client or an http(s) URI, got {catalog!r}")
    return catalog


def find_catalog_directory(path: str | os.PathLike[str]) -> Path:
    """The working directory ``DIR`` of a local catalog given ``DIR`` or ``DIR/catalog``.

    Raises
    ------
    FileNotFoundError
        No ``catalog/catalog.db`` there.
    """
    p = Path(path).expanduser().resolve()
    if (p / "catalog" / "catalog.db").is_file():
        return p
    if p.name == "catalog" and (p / "catalog.db").is_file():
        return p.parent
    raise FileNotFoundError(f"no txm-live catalog in {p} (expected {p / 'catalog' / 'catalog.db'}; "
                            "record one with txm_live.callbacks.catalog.record_to, or give an "
                            "http(s):// URI of a Tiled server)")


@contextlib.contextmanager
def catalog_client(catalog: Any, *, api_key: str | None = None) -> Iterator[Any]:
    """Context manager yielding a client for ``catalog``: a client, URI, or a local directory.

    For a local directory (``DIR`` or ``DIR/catalog``) an embedded server is started for the
    duration of the block.
    """
    if isinstance(catalog, (str, os.PathLike)) and not str(catalog).startswith(
            ("http://", "https://")) and not _is_profile(catalog):
        from txm_live.callbacks.catalog import start_embedded_server

        with start_embedded_server(find_catalog_directory(catalog)) as server:
            yield server.client()
    else:
        yield open_catalog(catalog, api_key=api_key)


def _is_profile(name: Any) -> bool:
    """A Tiled profile name that is not a directory here."""
    if not isinstance(name, str) or os.path.exists(name):
        return False
    from tiled.profiles import list_profiles

    return name in list_profiles()


def resolve_run(client: Any, key: str | int | None) -> Any:
    """Find a run by full uid, unique uid prefix (>= 6 characters), negative index or scan_id.

    ``-1`` (or ``"-1"``) is the latest run; a positive int is a ``scan_id``; a string is tried as
    a uid, then as a uid prefix, and only then, if it is all digits, as a scan_id.

    Raises
    ------
    KeyError
        No run, or an ambiguous prefix / scan_id.

    Notes
    -----
    ``client`` may itself be a run (``BlueskyRun`` or v1 ``Header``): it is returned (``key``
    None or its uid).
    """
    from tiled.queries import Key

    if is_run(client):
        run = _databroker_v2(client) or client
        uid = run.metadata["start"]["uid"]
        if key is None or (isinstance(key, str) and uid.startswith(key)) or key == -1:
            return run
        raise KeyError(f"run {key!r} is not the run given ({uid})")

    def by_scan_id(n: int) -> Any:
        found = list(client.search(Key("start.scan_id") == n).values())
        if len(found) != 1:
            raise KeyError(f"scan_id={n}: {len(found)} runs match")
        return found[0]

    if isinstance(key, str) and key.startswith("-") and key[1:].isdigit():
        key = int(key)
    if isinstance(key, (int, np.integer)):
        n = int(key)
        if n >= 0:
            return by_scan_id(n)
        values = list(client.values())
        if -n > len(values):
            raise KeyError(f"run index {n}: the catalog holds {len(values)} runs")
        return values[n]
    if not isinstance(key, str) or not key:
        raise KeyError(f"run key must be a uid string or an int, got {key!r}")
    try:
        return client[key]
    except KeyError:
        pass
    matches = [k for k in client.keys() if k.startswith(key)] if len(key) >= 6 else []
    if len(matches) == 1:
        return client[matches[0]]
    if len(matches) > 1:
        raise KeyError(f"uid prefix {key!r} matches {len(matches)} runs")
    if key.isdigit():
        return by_scan_id(int(key))
    raise KeyError(f"no run with uid {key!r}" + (" (give at least 6 characters of a uid prefix)"
                                                 if len(key) < 6 else ""))


def _plain(value: Any) -> Any:
    """Deep copy of catalog metadata as plain dicts/lists (documents must be plain JSON types)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _HttpArray:
    """Block-wise reads through the Tiled server (works for any array node, local or remote)."""

    kind = "http"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.shape = tuple(node.shape)

    def read(self, lo: int, hi: int) -> np.ndarray:
        # Tiled's ArrayClient.read() computes a dask array with the default scheduler. In a Dask
        # worker (``txm-live replay --dask``) that is the cluster itself: the chunk reads would be
        # queued behind the replay task that waits for them, a deadlock. Threads, as in-process.
        import dask

        try:
            with dask.config.set(scheduler="threads"):
                return np.asarray(self.node.read(slice(lo, hi)))
        except Exception as exc:  # noqa: BLE001 - the server's own reason, named for this run
            raise DocumentError(f"cannot read rows {lo}:{hi} of {getattr(self.node, 'uri', self.node)} from the catalog: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


class _WholeArray:
    """An array node of a databroker (MongoDB-backed) stream, read once at its first block.

    The server rebuilds such arrays from the stored event documents: any slice costs about as
    much as the whole array, so it is read once (binary, not JSON) and sliced here.
    """

    kind = "http"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.shape = tuple(node.shape)
        self._data: np.ndarray | None = None

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self._data is None:
            try:
                self._data = np.asarray(self.node.read())
            except Exception as exc:  # noqa: BLE001 - e.g. no handler for an asset spec: named for this run
                raise DocumentError(f"cannot read {getattr(self.node, 'uri', self.node)} from the catalog: "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        return self._data[lo:hi]

    def close(self) -> None:
        self._data = None


class _LocalHdf5Array:
    """Block-wise reads straight from the HDF5 files the catalog registered (same machine).

    Used only when every asset is a ``file://`` path readable here and the datasets add up to
    the node's shape; otherwise the replay reads through the server.
    """

    kind = "hdf5"

    def __init__(self, paths: list[str], dataset: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        import h5py

        self.node: Any = None  # the catalog node (set by _array_reader)
        self.shape = shape
        self._files = [h5py.File(p, "r", swmr=True, locking=False) for p in paths]
        self._datasets = [f[dataset] for f in self._files]
        lengths = [int(d.shape[0]) for d in self._datasets]
        self._starts = np.cumsum([0, *lengths])
        if (int(self._starts[-1]) < shape[0]
                or any(tuple(d.shape[1:]) != shape[1:] or d.dtype != dtype
                       for d in self._datasets)):
            self.close()
            raise ValueError("HDF5 datasets do not match the catalog's array structure")

    def read(self, lo: int, hi: int) -> np.ndarray:
        parts = []
        for i, d in enumerate(self._datasets):
            a, b = max(lo, self._starts[i]), min(hi, self._starts[i + 1])
            if a < b:
                parts.append(d[a - self._starts[i]: b - self._starts[i]])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        for f in self._files:
            with contextlib.suppress(Exception):
                f.close()


def _array_reader(node: Any, *, direct: bool) -> _HttpArray | _LocalHdf5Array:
    if direct:
        from urllib.parse import unquote, urlparse

        try:
            (source,) = node.data_sources()
            params = source.parameters or {}
            paths = [unquote(urlparse(a.data_uri).path)
                     for a in sorted(source.assets, key=lambda a: a.num or 0)]
            if (source.mimetype == "application/x-hdf5" and source.assets
                    and all(a.data_uri.startswith("file://") for a in source.assets)
                    and not params.get("slice") and not params.get("squeeze")
                    and "dataset" in params and all(os.access(p, os.R_OK) for p in paths)):
                arr = _LocalHdf5Array(paths, params["dataset"], tuple(node.shape), np.dtype(node.dtype))
                arr.node = node
                return arr
        except Exception as exc:  # any doubt: read through the server
            logger.debug("direct HDF5 read not possible for %s: %s", node.uri, exc)
    return _HttpArray(node)


@dataclass
class _Stream:
    name: str
    descriptor: dict[str, Any]
    columns: dict[str, np.ndarray]  # table columns (seq_num, time, scalar keys, ts_<key>)
    arrays: dict[str, Any]  # data key -> _HttpArray / _LocalHdf5Array, read block-wise
    n_rows: int


def _validate(name: str, doc: dict) -> None:
    schema_validators[DocumentNames[name]].validate(doc)


def _load_stream_mongo(node: Any, name: str, run_uid: str) -> _Stream:
    """A stream of a databroker (MongoDB-backed) run: columns and arrays from ``node["data"]``.

    Memory: each array data key is held whole while the stream is replayed.
    """
    md = _plain(node.metadata)
    descriptors = md.get("descriptors") or []
    if not descriptors:
        raise DocumentError(f"stream {name!r} has no descriptor in the catalog")
    desc = {k: v for k, v in descriptors[0].items() if k not in _DESCRIPTOR_DROP}
    data_keys = {k: {kk: vv for kk, vv in spec.items() if kk != "external"}
                 for k, spec in desc.get("data_keys", {}).items()}
    descriptor = {**desc, "data_keys": data_keys, "name": name, "run_start": run_uid}
    _validate("descriptor", descriptor)
    data = node["data"]
    times = np.asarray(data["time"].read(), dtype=np.float64)
    n_rows = int(times.size)
    columns: dict[str, np.ndarray] = {"time": times, "seq_num": np.arange(1, n_rows + 1)}
    arrays: dict[str, Any] = {}
    for key in data_keys:
        if key not in data:
            raise DocumentError(f"data key {key!r} of stream {name!r} is not in the catalog")
        child = data[key]
        if len(child.shape) > 1:
            arrays[key] = _WholeArray(child)  # binary array reads, never JSON documents
        else:
            columns[key] = np.asarray(child.read())
    return _Stream(name, descriptor, columns, arrays, n_rows)


def _load_stream(run: Any, name: str, run_uid: str, notes: list[str], *,
                 direct: bool) -> _Stream:
    node = run[name]
    if "data" in node and "descriptors" in node.metadata:
        return _load_stream_mongo(node, name, run_uid)
    md = _plain(node.metadata)
    for key in _DESCRIPTOR_DROP:
        md.pop(key, None)
    data_keys = {}
    for key, spec in md.get("data_keys", {}).items():
        spec = dict(spec)
        spec.pop("external", None)  # the replay delivers every value inline
        data_keys[key] = spec
    descriptor = {**md, "data_keys": data_keys, "name": name, "run_start": run_uid}
    _validate("descriptor", descriptor)
    base = node.base
    if "internal" not in base:
        raise DocumentError(f"stream {name!r} has no event table in the catalog")
    table = base["internal"].read()
    columns = {c: table[c].to_numpy() for c in table.columns}
    order = np.argsort(columns["seq_num"], kind="stable")
    if np.any(order != np.arange(order.size)):
        columns = {c: v[order] for c, v in columns.items()}
    n_rows = int(columns["seq_num"].size)
    arrays = {}
    for key in data_keys:
        if key in columns:
            continue
        if key not in base:
            raise DocumentError(f"data key {key!r} of stream {name!r} is not in the catalog")
        arr = _array_reader(base[key], direct=direct)
        arrays[key] = arr
        if arr.shape[0] != n_rows:
            notes.append(f"stream {name!r}: {arr.shape[0]} {key!r} rows for {n_rows} events; "
                         f"replaying {min(n_rows, arr.shape[0])}")
            n_rows = min(n_rows, int(arr.shape[0]))
    return _Stream(name, descriptor, columns, arrays, n_rows)


def _schedule(streams: Sequence[_Stream]) -> list[tuple[int, int]]:
    """Acquisition order: (stream index, row) sorted by event time, then stream, then row."""
    idx = np.concatenate([np.full(s.n_rows, i) for i, s in enumerate(streams)] or [np.empty(0)])
    rows = np.concatenate([np.arange(s.n_rows) for s in streams] or [np.empty(0)])
    times = np.concatenate([s.columns["time"][: s.n_rows] for s in streams] or [np.empty(0)])
    order = np.lexsort((rows, idx, times))
    return list(zip(idx[order].astype(int).tolist(), rows[order].astype(int).tolist()))


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _pages(schedule: Sequence[tuple[int, int]], block_size: int) -> Iterator[tuple[int, list[int]]]:
    """Group the schedule into pages: consecutive rows of one stream inside one block."""
    i = 0
    while i < len(schedule):
        si, row = schedule[i]
        j = i + 1
        while (j < len(schedule) and schedule[j][0] == si
               and schedule[j][1] == schedule[j - 1][1] + 1
               and schedule[j][1] // block_size == row // block_size):
            j += 1
        yield si, [r for _, r in schedule[i:j]]
        i = j


class _Prefetcher:
    """Reads array blocks on a thread pool, in the order the replay needs them, ahead of it.

    At most ``readers + 1`` blocks are in flight and a block is dropped as soon as its last
    row was taken.
    """

    def __init__(self, streams: Sequence[_Stream], schedule: Sequence[tuple[int, int]], *,
                 block_size: int, readers: int) -> None:
        self.streams = streams
        self.block_size = block_size
        self.order: list[tuple[int, int]] = []
        self.remaining: dict[tuple[int, int], int] = {}
        for si, row in schedule:
            if streams[si].arrays:
                b = (si, row // block_size)
                if b not in self.remaining:
                    self.order.append(b)
                    self.remaining[b] = 0
                self.remaining[b] += 1
        self.ahead = readers + 1
        self.next = 0
        self.pending: deque[tuple[tuple[int, int], Future]] = deque()
        self.cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="txm-replay-read")

    def _read(self, b: tuple[int, int]) -> dict[str, np.ndarray]:
        s = self.streams[b[0]]
        lo = b[1] * self.block_size
        hi = min(lo + self.block_size, s.n_rows)
        return {key: arr.read(lo, hi) for key, arr in s.arrays.items()}

    def _fill(self) -> None:
        while self.next < len(self.order) and len(self.pending) < self.ahead:
            b = self.order[self.next]
            self.pending.append((b, self.pool.submit(self._read, b)))
            self.next += 1

    def take(self, si: int, rows: list[int]) -> dict[str, np.ndarray]:
        """The block holding ``rows`` of stream ``si`` (empty dict if it has no arrays)."""
        if not self.streams[si].arrays:
            return {}
        b = (si, rows[0] // self.block_size)
        while b not in self.cache:
            self._fill()
            got, fut = self.pending.popleft()
            self.cache[got] = fut.result()
        block = self.cache[b]
        self.remaining[b] -= len(rows)
        if self.remaining[b] == 0:
            del self.cache[b]
        self._fill()  # keep the readers busy while the consumer works
        return block

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.cache.clear()


def _close_streams(streams: Iterable[_Stream]) -> None:
    for s in streams:
        for arr in s.arrays.values():
            close = getattr(arr, "close", None)
            if close is not None:
                close()


def replay_run(
    client_or_uri: Any,
    uid: str | int,
    callback: Callable[[str, dict], Any],
    *,
    progress: bool = True,
    block_size: int = 32,
    readers: int = 2,
    max_backlog: int = 64,
    direct_files: bool = True,
    api_key: str | None = None,
    streams: Callable[[str], bool] | None = None,
) -> ReplayStats:
    """Feed one recorded run to ``callback`` as documents, in acquisition order.

    Parameters
    ----------
    client_or_uri : Tiled client, EmbeddedTiled or str
        The catalog (see :func:`open_catalog`).
    uid : str or int
        Run uid, unique uid prefix, negative index (``-1`` = latest) or scan_id.
    callback : callable
        ``callback(name, doc)``, e.g. a :class:`~txm_live.callbacks.live.XanesLiveCallback`.
    progress : bool
        Show a tqdm progress bar (frames).
    block_size : int
        Frames per array read (one HTTP request per block and data key).
    readers : int
        Reader threads fetching blocks ahead of the consumer.
    max_backlog : int
        If ``callback`` has a ``backlog`` attribute (documents queued but not processed, as
        :class:`~txm_live.callbacks.live.XanesLiveCallback` has), wait while it exceeds this,
        so that the replay never holds more than that many frames in the consumer's queue.
    direct_files : bool
        Read images of file-backed runs straight from the HDF5 files the catalog registered when
        they are readable on this machine (3-5x faster than through the server); otherwise, and
        for inline images, read block-wise through the Tiled server. An area-detector file shared
        by several streams, which the server cannot serve per stream, is read from the file
        (``direct_files`` and readable here) or through the server's raw asset endpoint with
        HTTP Range requests (see :mod:`txm_live.callbacks.shared_files`).
    api_key : str, optional
        For a URI.
    streams : callable, optional
        ``streams(name) -> bool``: replay only the selected streams (default: all).

    Returns
    -------
    ReplayStats

    Raises
    ------
    KeyError
        No such run.
    DocumentError
        The run in the catalog does not hold what a Bluesky run must (no start, bad descriptor).

    Notes
    -----
    Memory: at most ``readers + 2`` blocks of ``block_size`` frames per stream are held (about
    60 MB per block of 32 frames of 730 x 771 uint16). Emitted documents are fresh objects;
    ``callback`` may keep them. A run without ``stop`` (aborted, still running) is replayed up
    to its last recorded event and gets a synthesized ``stop`` with ``exit_status="abort"``
    and the reason "RunIncompleteError: ...".
    """
    import time

    from tqdm.auto import tqdm

    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size!r}")
    if int(readers) < 1:
        raise ValueError(f"readers must be >= 1, got {readers!r}")
    if not callable(callback):
        raise ValueError(f"callback must be callable, got {callback!r}")
    block_size = int(block_size)
    t0 = time.perf_counter()
    client = client_or_uri if is_run(client_or_uri) else open_catalog(client_or_uri, api_key=api_key)
    run = resolve_run(client, uid)
    md = _plain(run.metadata)
    if "start" not in md:
        raise DocumentError(f"run {uid!r} has no start document in the catalog")
    start = md["start"]
    run_uid = start["uid"]
    _validate("start", start)
    notes: list[str] = []
    select, streams = streams, []
    try:
        for name in run:
            if select is None or select(name):
                streams.append(_load_stream(run, name, run_uid, notes, direct=direct_files))
    except BaseException:
        _close_streams(streams)
        raise
    for note in notes:
        logger.warning("replay %s: %s", run_uid, note)
    # descriptors in the order they were created
    streams.sort(key=lambda s: (s.descriptor.get("time", 0.0), s.name))
    try:
        shared, unreadable = split_shared_files(
            streams, {(si, key): arr.node for si, s in enumerate(streams) for key, arr in s.arrays.items()
                      if isinstance(arr, (_HttpArray, _LocalHdf5Array))}, direct=direct_files)
    except BaseException:
        _close_streams(streams)
        raise
    for note in shared:
        logger.info("replay %s: %s", run_uid, note)
    for note in unreadable:
        notes.append(note)
        logger.warning("replay %s: %s", run_uid, note)
    schedule = _schedule(streams)

    counts = {s.name: 0 for s in streams}
    bar = tqdm(total=len(schedule), unit="frame", desc=f"replay {run_uid[:8]}",
               disable=not progress, leave=False)
    prefetch = _Prefetcher(streams, schedule, block_size=block_size, readers=int(readers))
    try:
        callback("start", start)
        # streams without events: descriptor right away; the others just before their 1st event
        described = {s.name for s in streams if s.n_rows == 0}
        for s in streams:
            if s.n_rows == 0:
                callback("descriptor", s.descriptor)
        for si, rows in _pages(schedule, block_size):
            s = streams[si]
            page = _event_page(s, run_uid, rows, prefetch.take(si, rows), block_size)
            while getattr(callback, "backlog", 0) > max_backlog:
                time.sleep(0.002)
            if s.name not in described:
                callback("descriptor", s.descriptor)
                described.add(s.name)
            callback("event_page", page)
            counts[s.name] += len(rows)
            bar.update(len(rows))
    finally:
        prefetch.close()
        bar.close()
        _close_streams(streams)

    stop = md.get("stop")
    if stop:
        stop = {k: v for k, v in stop.items() if k != "_run_normalizer_notes"}
    else:
        reason = f"RunIncompleteError: run {run_uid} has no stop document in the catalog"
        notes.append(reason)
        logger.warning("replay: %s", reason)
        last = max((float(s.columns["time"][s.n_rows - 1]) for s in streams if s.n_rows),
                   default=float(start["time"]))
        stop = {"uid": str(uuid.uuid5(_EVENT_NAMESPACE, f"{run_uid}/stop")), "time": last,
                "run_start": run_uid, "exit_status": "abort", "reason": reason,
                "num_events": dict(counts)}
    _validate("stop", stop)
    callback("stop", stop)
    return ReplayStats(run_uid=run_uid, n_events=counts, seconds=time.perf_counter() - t0,
                       warnings=tuple(notes), sources={f"{s.name}/{k}": a.kind for s in streams
                                                       for k, a in s.arrays.items()})


def _event_page(s: _Stream, run_uid: str, rows: list[int], block: dict[str, np.ndarray],
                block_size: int) -> dict[str, Any]:
    cols = s.columns
    lo = rows[0]
    sl = slice(lo, rows[-1] + 1)
    seq = [int(x) for x in cols["seq_num"][sl]]
    times = [float(x) for x in cols["time"][sl]]
    data: dict[str, list[Any]] = {}
    timestamps: dict[str, list[Any]] = {}
    off = lo - (lo // block_size) * block_size
    for key in s.descriptor["data_keys"]:
        if key in block:
            data[key] = list(block[key][off: off + len(rows)])
        else:
            data[key] = [_py(v) for v in cols[key][sl]]
        ts = cols.get(f"ts_{key}")
        timestamps[key] = [float(v) for v in ts[sl]] if ts is not None else list(times)
    page = {
        "descriptor": s.descriptor["uid"],
        "uid": [str(uuid.uuid5(_EVENT_NAMESPACE, f"{run_uid}/{s.name}/{n}")) for n in seq],
        "seq_num": seq,
        "time": times,
        "data": data,
        "timestamps": timestamps,
        "filled": {},
    }
    _validate("event_page", page)
    return page


def _default_factory() -> Any:
    from txm_live.callbacks.live import XanesLiveCallback

    return XanesLiveCallback()


def replay_runs(
    catalog: Any,
    uids: Iterable[str | int] | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = True,
    callback_factory: Callable[[], Any] | None = None,
    api_key: str | None = None,
    block_size: int = 32,
    timeout: float | None = None,
    client: Any = None,
    plan_name: str | None = None,
) -> list[RunResult]:
    """Replay runs through a fresh live callback each and collect their results.

    Parameters
    ----------
    catalog : Tiled client, EmbeddedTiled, databroker catalog, run, str or path
        The catalog: a client, an ``http(s)://`` URI, a local catalog directory (``DIR`` or
        ``DIR/catalog`` of :func:`~txm_live.callbacks.catalog.start_embedded_server`, served for
        the duration of the call), a databroker 2.x catalog (``databroker.temp()``,
        ``Broker.named(profile)``), a Tiled profile name, or a single run (``BlueskyRun``,
        databroker v1 ``Header``; ``uids`` then defaults to that run).
    uids : iterable of str or int, optional
        Runs (uid, prefix, ``-1``, scan_id). Default: the runs that hold a XANES scan, chosen by
        content (:func:`select_runs`: an image stream and an energy axis, whatever the plan); the
        others are skipped with their reason in the log.
    out : path, optional
        Write ``out/<uid>/phases.h5`` for each run (:func:`~txm_live.callbacks.results_file.write_results`).
    progress : bool
        Progress bars.
    callback_factory : callable, optional
        Returns the consumer for one run: ``cb(name, doc)`` and ``cb.wait(timeout) ->
        list[RunResult]`` (``cb.close()`` is called if present). Default:
        ``XanesLiveCallback()``.
    api_key : str, optional
        For a URI.
    block_size : int
        Frames per array read.
    timeout : float, optional
        Seconds to wait for each run's analysis after its last document.
    client : dask.distributed.Client or str, optional
        Replay the runs in parallel on a Dask cluster, one task per run (a Client, a scheduler
        address, or ``"local[:N]"``, see :func:`txm_live.distributed.connect`). Each worker
        reads its run from the catalog's URI itself (a local catalog directory is served for the
        duration of the call, so the workers must be on this machine; give an ``http(s)://``
        URI for a remote cluster), analyses it in the worker process and sends the RunResult
        back; ``out/<uid>/phases.h5`` is written here as soon as each run is done. Progress:
        one bar per run (frames), fed by the workers' events. ``callback_factory`` must then be
        picklable. A worker lost beyond Dask's retries gives that run a ``DistributedError``.
    plan_name : str, optional
        When selecting runs (``uids`` None): only runs of this plan.

    Returns
    -------
    list of RunResult
        One per run, in the order given. A run that cannot be replayed (unknown uid, broken
        metadata) yields a ``RunResult`` with no edges and the named error in ``errors``; the
        other runs go on.
    """
    with catalog_client(catalog, api_key=api_key) as cat:
        if uids is None and not is_run(cat):
            selection = select_runs(cat, plan_name=plan_name)
            logger.info("replay: %s", selection.summary())
            uids = list(selection.selected)
        if client is not None:
            from txm_live.callbacks.replay_dask import replay_runs_on_cluster

            return replay_runs_on_cluster(cat, uids, client, out=out, progress=progress,
                                          callback_factory=callback_factory, block_size=block_size,
                                          timeout=timeout, api_key=api_key)
        return _replay_runs(cat, uids, out=out, progress=progress,
                            callback_factory=callback_factory, block_size=block_size,
                            timeout=timeout)


@dataclass(frozen=True)
class RunSelection:
    """Which runs of a catalog hold a XANES scan txm-live can read (see :func:`select_runs`).

    Attributes
    ----------
    selected : tuple of str
        Uids of the selected runs, in catalog order.
    skipped : dict of str to str
        Uid -> one-line reason, for every other run looked at.
    """

    selected: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """``"selected 2 of 3 runs; skipped 1 (no image key: 1)"``: counts per reason kind."""
        n = len(self.selected) + len(self.skipped)
        text = f"selected {len(self.selected)} of {n} run{'s' if n != 1 else ''}"
        if self.skipped:
            kinds: dict[str, int] = {}
            for reason in self.skipped.values():
                kind = reason.split(":", 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            text += f"; skipped {len(self.skipped)} (" + ", ".join(f"{k}: {v}" for k, v in kinds.items()) + ")"
        return text


def _stream_data_keys(run: Any, name: str) -> dict[str, Any]:
    """The data keys of stream ``name`` from the catalog metadata (Tiled or MongoDB-backed)."""
    md = run[name].metadata
    if "descriptors" in md:
        descriptors = md["descriptors"] or [{}]
        return _plain(descriptors[0].get("data_keys") or {})
    return _plain(md.get("data_keys") or {})


def _why_not(run: Any, *, image_key: str | None, energy_key: str | None,
             primary_stream: str | None) -> str | None:
    """None if ``run`` holds a sample stream with an image key and an energy axis, else why not.

    The same rules as the live ingest (:mod:`txm_live.callbacks.ingest`), on metadata only:
    explicit keys, then the start document's ``txm_live`` dict, then autodetection.
    """
    from txm_live.callbacks import ingest

    start = _plain(run.metadata.get("start") or {})
    md = start.get("txm_live") if isinstance(start.get("txm_live"), Mapping) else {}
    name = primary_stream or md.get("primary_stream") or "primary"
    if name not in run:
        return f"no sample stream: no {name!r} stream (streams: {sorted(run)})"
    dks = _stream_data_keys(run, name)
    image = image_key or md.get("image_key")
    if image is not None and image not in dks:
        return f"no image key: {image!r} not in stream {name!r}"
    if image is None:
        try:
            ingest.image_key(dks, name)
        except DocumentError:
            return f"no image key: stream {name!r} has no 2-D/3-D array key (keys: {sorted(dks)})"
    key = energy_key or md.get("energy_key")
    if key is None:
        plan, _ = ingest.planned_energies(start)
        key, _, candidates = ingest.energy_candidates(start, dks, name, has_plan=plan is not None)
        if key is None:
            if candidates:
                return None  # decided from the values that follow the planned energies
            return f"no energy axis: no scanned motor, energy list or key containing 'energy' in stream {name!r}"
    if key not in dks:
        return f"no energy axis: {key!r} not in stream {name!r}"
    units = str(dks[key].get("units") or "").strip()
    if units and units.lower() not in ingest.ENERGY_UNITS:
        return f"no energy axis: the scanned key {key!r} is in {units!r}, not eV or keV"
    named = energy_key or md.get("energy_key") or "energy" in key.lower()
    if not (units or named or ingest.planned_energies(start)[0] is not None):
        return (f"no energy axis: the scanned key {key!r} has no units, no energy in its name and the run no "
                "planned energy list (pass its uid, or energy_key=, to analyse it anyway)")
    return None


def select_runs(catalog: Any, *, plan_name: str | None = None, image_key: str | None = None,
                energy_key: str | None = None, primary_stream: str | None = None) -> RunSelection:
    """The runs of ``catalog`` that hold a XANES scan txm-live can analyse, chosen by content.

    A run is selected when its sample stream (``primary``) has an image key (a 2-D/3-D array
    key, or the one named) and an energy axis the live ingest accepts (the scanned motor in eV or
    keV, a key following the planned energy list, a key containing ``energy``, or the one named),
    whatever its plan: txm-live's own ``xanes_scan``, FXI ``xanes_scan2``, ophyd-async plans...
    Decided from the catalog metadata only (no frames are read).

    Parameters
    ----------
    catalog : Tiled client or databroker catalog
        As accepted by :func:`open_catalog` (a directory: use :func:`catalog_client`).
    plan_name : str, optional
        Only runs of this ``plan_name`` (searched in the catalog).
    image_key, energy_key, primary_stream : str, optional
        Explicit keys (as given to the live callback); they win over the start document's.

    Returns
    -------
    RunSelection
    """
    from tiled.queries import Key

    client = open_catalog(catalog)
    if plan_name is not None:
        client = client.search(Key("start.plan_name") == plan_name)
    selected: list[str] = []
    skipped: dict[str, str] = {}
    for uid, run in client.items():
        try:
            why = _why_not(run, image_key=image_key, energy_key=energy_key, primary_stream=primary_stream)
        except Exception as exc:  # noqa: BLE001 - a broken run is skipped with its reason, never fatal
            why = f"unreadable metadata: {type(exc).__name__}: {exc}"
        plan = (run.metadata.get("start") or {}).get("plan_name", "?") if why else ""
        if why is None:
            selected.append(str(uid))
        else:
            skipped[str(uid)] = why
            logger.info("skipped run %s (plan %r): %s", str(uid)[:8], plan, why)
    return RunSelection(tuple(selected), skipped)


def _run_keys(client: Any, uids: Iterable[str | int] | None, *,
              plan_name: str | None = None) -> list[str | int]:
    """The runs to replay: those given, or the runs :func:`select_runs` selects (a single run
    object: that run)."""
    if is_run(client) and uids is None:
        return [None]
    if uids is None:
        return list(select_runs(client, plan_name=plan_name).selected)
    if isinstance(uids, (str, int)):
        return [uids]
    return list(uids)


def _write(result: RunResult, out: str | Path, client: Any) -> None:
    from txm_live.callbacks.results_file import write_results

    source = str(getattr(client, "uri", "")).split("?", 1)[0]  # never the API key
    write_results(result, out, parameters={"source": "replay", "catalog": source})


def _replay_runs(client: Any, uids: Iterable[str | int] | None, *, out: str | Path | None,
                 progress: bool, callback_factory: Callable[[], Any] | None, block_size: int,
                 timeout: float | None) -> list[RunResult]:
    factory = callback_factory or _default_factory
    results: list[RunResult] = []
    for key in _run_keys(client, uids):
        result = _replay_one(client, key, factory(), progress=progress, block_size=block_size, timeout=timeout)
        if out is not None:
            _write(result, out, client)
        results.append(result)
    return results


def _replay_one(client: Any, key: str | int, cb: Any, *, progress: bool, block_size: int,
                timeout: float | None) -> RunResult:
    """Replay one run through ``cb`` and return its RunResult (errors named in it, never raised)."""
    try:
        stats = replay_run(client, key, cb, progress=progress, block_size=block_size)
        got = cb.wait(timeout) if timeout is not None else cb.wait()
        mine = [r for r in got if r.run_uid == stats.run_uid] or list(got)
        if not mine:
            raise RunIncompleteError(f"the callback returned no result for run {key}")
        result = mine[-1]
        if stats.warnings:
            from dataclasses import replace

            result = replace(result, errors=(*result.errors, *(
                w if w.startswith("RunIncompleteError") else f"ReplayWarning: {w}"
                for w in stats.warnings)))
    except (KeyError, DocumentError, RunIncompleteError) as exc:
        logger.error("replay of run %s failed: %s", key, exc)
        result = RunResult(run_uid=str(key), errors=(f"{type(exc).__name__}: {exc}",))
    finally:
        close = getattr(cb, "close", None)
        if callable(close):
            close()
    return result
