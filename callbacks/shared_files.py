"""One area-detector HDF5 file shared by several streams of a run: read each stream's own chunks.

An area detector staged once for a whole plan (NSLS-II FXI's ``xanes_scan2``) writes one file for
every stream (darks, samples, backgrounds), one chunk of ``frame_per_point`` frames per trigger,
and announces it with a single ``AD_HDF5`` Resource whose datums count the triggers across the
streams (``point_number``). bluesky-tiled-plugins' ``TiledWriter`` turns each datum into a
StreamDatum whose ``indices`` are that global trigger number, and registers the *whole* file under
every stream. The consolidator keeps only the number of rows: the per-event indices are not in
the node's data source (its ``_seqnums_to_indices_map`` stays in the writer's memory), so the
Tiled server reshapes the whole dataset to the stream's ``(rows, N, H, W)`` and refuses (HTTP
422: the sizes differ). Its ``slice`` parameter cannot help either: it slices the dataset before
the reshape, and a stream's chunks are interleaved blocks of N frames, which no single
``start:stop:step`` slice selects unless N = 1.

What does work is the server's raw asset endpoint (``/asset/bytes/...?id=``, on unless the
server sets ``expose_raw_assets: false``), which serves the registered file itself and honours
HTTP ``Range`` requests: h5py reads the file through a seekable file object that fetches only
the byte ranges it needs (the file's metadata, then the stream's own chunks), with the Tiled
client's own authentication. When the file is readable on this machine it is opened directly.

Which chunks belong to which stream: the chunks are in trigger order, i.e. the order of the
events of the sharing streams by time (then ``seq_num``); done only when the dataset holds
exactly the frames of those events.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["RemoteAssetFile", "SharedHdf5Array", "UnreadableSharedArray", "hdf5_source", "split_shared_files"]

logger = logging.getLogger("txm_live.callbacks.replay")

#: Bytes fetched per HTTP request at least while h5py reads the file's metadata (small pieces).
METADATA_READAHEAD = 64 * 1024
#: Events of one stream read through the asset endpoint are fetched in one request while the byte
#: span covering them is at most this many times their own bytes (FXI: samples and backgrounds
#: alternate, span = 2x) ...
SPAN_FACTOR = 3
#: ... and at most this many bytes.
MAX_SPAN = 256 * 1024 * 1024


class RemoteAssetFile(io.RawIOBase):
    """Read-only, seekable view of a file served by Tiled's ``/asset/bytes`` endpoint (HTTP Range).

    Parameters
    ----------
    http_client : httpx.Client
        The Tiled client's HTTP client (carries the API key or tokens).
    url : str
        The node's ``/asset/bytes/...`` link.
    asset_id : int
        The asset's id in the catalog.
    """

    def __init__(self, http_client: Any, url: str, asset_id: int) -> None:
        super().__init__()
        self._http = http_client
        self._url = url
        self._params = {"id": int(asset_id)}
        self._pos = 0
        self.size = self._size()
        #: Bytes fetched per request at least; the bytes of one event's chunk once the
        #: dataset is known (see SharedHdf5Array), so that one request serves one event.
        self.readahead = METADATA_READAHEAD
        self._cache_start = 0
        self._cache = b""
        self.n_requests = 0

    def read_range(self, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the file in one request (stateless: safe from several threads)."""
        return self._get(int(start), int(stop))

    def _get(self, start: int, stop: int) -> bytes:
        self.n_requests += 1
        response = self._http.get(self._url, params=self._params,
                                  headers={"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"})
        if response.status_code != 206:
            detail = response.text[:200] if response.status_code != 200 else "the server ignores Range requests"
            raise OSError(f"asset {self._params['id']} of {self._url}: HTTP {response.status_code}: {detail}")
        return response.content

    def _size(self) -> int:
        response = self._http.get(self._url, params=self._params,
                                  headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"})
        content_range = response.headers.get("content-range", "")
        if response.status_code != 206 or "/" not in content_range:
            detail = response.text[:200] if response.status_code != 200 else "the server ignores Range requests"
            raise OSError(f"asset {self._params['id']} of {self._url}: HTTP {response.status_code}: {detail}")
        return int(content_range.rsplit("/", 1)[1])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        stop = min(self._pos + len(view), self.size)
        if stop <= self._pos:
            return 0
        lo, hi = self._cache_start, self._cache_start + len(self._cache)
        if not (lo <= self._pos and stop <= hi):  # one request: what h5py asks for, or the readahead
            self._cache_start = self._pos
            self._cache = self._get(self._pos, min(max(stop, self._pos + self.readahead), self.size))
            lo = self._cache_start
        n = stop - self._pos
        view[:n] = self._cache[self._pos - lo: self._pos - lo + n]
        self._pos = stop
        return n


class SharedHdf5Array:
    """The rows of one stream in an HDF5 dataset shared with other streams (module docstring).

    ``first[row]`` is the dataset index of the first frame of the stream's ``row``-th event;
    ``opener()`` returns the open ``h5py.File`` and, when it is read through the asset endpoint,
    its :class:`RemoteAssetFile`: the frames of one event, contiguous unfiltered chunks in the
    file, are then fetched with one HTTP Range request (offsets from the chunk index, read once).
    """

    def __init__(self, opener: Callable[[], tuple[Any, RemoteAssetFile | None]], dataset: str, first: np.ndarray,
                 shape: tuple[int, ...], *, kind: str) -> None:
        self.kind = kind
        self.shape = shape
        self.first = np.asarray(first, dtype=np.int64)
        self.frames_per_row = int(np.prod(shape[1:-2], dtype=np.int64))
        self._file, self._remote = opener()
        self._ds = self._file[dataset]
        self._offsets, self._chunk_bytes = _frame_offsets(self._ds) if self._remote is not None else (None, 0)

    def _start(self, f: int) -> int | None:
        """File offset of event ``f``'s frames when they are contiguous raw chunks, else None."""
        n = self.frames_per_row
        offsets = None if self._offsets is None else self._offsets[f: f + n]
        if (offsets is not None and offsets.size == n and offsets[0] >= 0
                and np.all(np.diff(offsets) == self._chunk_bytes)):
            return int(offsets[0])
        return None

    def read(self, lo: int, hi: int) -> np.ndarray:
        firsts = [int(f) for f in self.first[lo:hi]]
        out: list[np.ndarray | None] = [None] * len(firsts)
        nbytes = self.frames_per_row * self._chunk_bytes
        # raw reads, grouped: each HTTP request costs far more than its bytes (the server looks the
        # node up every time), so nearby events are fetched together when the span between them
        # (other streams' chunks) stays below SPAN_FACTOR x their own bytes and MAX_SPAN
        raw = sorted((start, i) for i, f in enumerate(firsts) if (start := self._start(f)) is not None)
        g = 0
        while g < len(raw):
            h = g + 1
            while (h < len(raw) and raw[h][0] + nbytes - raw[g][0] <= min(SPAN_FACTOR * (h - g + 1) * nbytes, MAX_SPAN)):
                h += 1
            assert self._remote is not None
            base = raw[g][0]
            data = self._remote.read_range(base, raw[h - 1][0] + nbytes)
            for start, i in raw[g:h]:
                out[i] = np.frombuffer(data, dtype=self._ds.dtype, count=nbytes // self._ds.dtype.itemsize,
                                       offset=start - base).reshape(self.shape[1:])
            g = h
        n = self.frames_per_row
        for i, f in enumerate(firsts):
            if out[i] is None:  # local file, or a layout h5py must decode
                out[i] = self._ds[f: f + n].reshape(self.shape[1:])
        return np.stack(out)  # type: ignore[arg-type]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


class UnreadableSharedArray:
    """A stream's part of a shared file that can be read neither here nor through the server.

    Reading it raises a :class:`~txm_live.errors.DocumentError` naming why, so that the run
    gets that error and the other runs go on (reading the node through the server would be
    refused, or, when the server can reshape it, give other streams' frames).
    """

    kind = "unreadable-shared"

    def __init__(self, shape: tuple[int, ...], reason: str) -> None:
        self.shape = shape
        self.reason = reason

    def read(self, lo: int, hi: int) -> np.ndarray:
        from txm_live.errors import DocumentError

        raise DocumentError(self.reason)


def _frame_offsets(ds: Any) -> tuple[np.ndarray | None, int]:
    """File offset of each frame's chunk of a dataset chunked one frame per chunk, unfiltered.

    ``(offsets, chunk_bytes)``, offsets -1 for unwritten frames; ``(None, 0)`` when the layout
    is anything else (then h5py reads the chunks itself).
    """
    if (ds.chunks is None or ds.chunks[0] != 1 or tuple(ds.chunks[1:]) != tuple(ds.shape[1:])
            or ds.compression or ds.shuffle or ds.fletcher32 or ds.scaleoffset):
        return None, 0
    offsets = np.full(int(ds.shape[0]), -1, dtype=np.int64)
    size = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        if info.filter_mask or info.size != size:
            return None, 0
        offsets[info.chunk_offset[0]] = info.byte_offset
    return offsets, size


def _open_local(path: str) -> tuple[Any, None]:
    import h5py

    return h5py.File(path, "r", swmr=True, locking=False), None


def _open_remote(node: Any, asset_id: int) -> tuple[Any, RemoteAssetFile]:
    import h5py

    url = node.item["links"]["self"].replace("/metadata", "/asset/bytes", 1)
    raw = RemoteAssetFile(node.context.http_client, url, asset_id)
    return h5py.File(raw, "r"), raw


def hdf5_source(node: Any, *, direct: bool) -> tuple[str, str, Callable[[], tuple[Any, Any]], str] | None:
    """How to open the one HDF5 file behind an array node: ``(data_uri, dataset, opener, kind)``.

    ``kind`` is ``"hdf5-shared"`` (opened locally: ``direct`` and readable here) or
    ``"hdf5-asset"`` (through the server's raw asset endpoint). None for anything else (inline
    data, several files, a ``slice`` parameter).
    """
    from urllib.parse import unquote, urlparse

    try:
        (source,) = node.data_sources()
        params = source.parameters or {}
        (asset,) = source.assets
        if (source.mimetype != "application/x-hdf5" or not asset.data_uri.startswith("file:")
                or "dataset" not in params or params.get("slice")):
            return None
        path = unquote(urlparse(asset.data_uri).path)
        dataset = str(params["dataset"])
        if direct and os.access(path, os.R_OK):
            return asset.data_uri, dataset, lambda: _open_local(path), "hdf5-shared"
        if asset.id is None or not hasattr(node, "context"):
            return None
        return asset.data_uri, dataset, lambda: _open_remote(node, int(asset.id)), "hdf5-asset"
    except Exception as exc:  # noqa: BLE001 - any doubt: not a shared file
        logger.debug("no HDF5 source for %s: %s", getattr(node, "uri", node), exc)
    return None


def split_shared_files(streams: Sequence[Any], nodes: Mapping[tuple[int, str], Any], *,
                       direct: bool) -> tuple[list[str], list[str]]:
    """Read the streams that share one HDF5 dataset from their own chunks (module docstring).

    ``streams[si].arrays[key]`` of each shared ``(si, key)`` of ``nodes`` is replaced by a
    :class:`SharedHdf5Array`. Returns notes on what was done, and warnings on shared files that
    cannot be opened (their arrays become :class:`UnreadableSharedArray`: reading them raises a
    named ``DocumentError`` of that run).
    """
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    openers: dict[tuple[str, str], tuple[Callable[[], tuple[Any, Any]], str]] = {}
    for (si, key), node in nodes.items():
        src = hdf5_source(node, direct=direct)
        if src is not None and len(streams[si].arrays[key].shape) >= 3:
            uri, dataset, opener, kind = src
            groups.setdefault((uri, dataset), []).append((si, key))
            openers.setdefault((uri, dataset), (opener, kind))
    notes: list[str] = []
    warnings: list[str] = []
    for (uri, dataset), members in groups.items():
        if len(members) < 2:
            continue
        opener, kind = openers[(uri, dataset)]
        per_row = [int(np.prod(streams[si].arrays[key].shape[1:-2], dtype=np.int64)) for si, key in members]
        rows = [streams[si].n_rows for si, _ in members]
        name = os.path.basename(uri)
        try:
            f, _ = opener()
            try:
                n_frames = int(f[dataset].shape[0])
            finally:
                f.close()
        except Exception as exc:  # noqa: BLE001 - e.g. HTTP 403 (expose_raw_assets off): named below
            names = ", ".join(repr(streams[si].name) for si, _ in members)
            why = (f"{name}:{dataset} holds the frames of streams {names} (one AreaDetector file); the Tiled "
                   "server cannot serve one stream's part of it (its data source keeps no per-event offsets) "
                   f"and the file cannot be opened {'here' if kind == 'hdf5-shared' else 'through the server asset endpoint'}: "
                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; read it on a machine that "
                   "mounts the file, or enable the server's expose_raw_assets")
            warnings.append(why)
            for si, key in members:
                old = streams[si].arrays[key]
                streams[si].arrays[key] = UnreadableSharedArray(old.shape, why)
                close = getattr(old, "close", None)
                if close is not None:
                    close()
            continue
        if n_frames != sum(r * n for r, n in zip(rows, per_row)):
            continue
        # every event of the sharing streams, in acquisition order: (time, seq_num, member)
        times = np.concatenate([streams[si].columns["time"][:r] for (si, _), r in zip(members, rows)])
        seqs = np.concatenate([streams[si].columns["seq_num"][:r] for (si, _), r in zip(members, rows)])
        who = np.concatenate([np.full(r, m) for m, r in enumerate(rows)])
        order = np.lexsort((seqs, times))
        sizes = np.asarray(per_row, dtype=np.int64)[who[order]]
        first_sorted = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        first = np.empty_like(first_sorted)
        first[order] = first_sorted
        for m, (si, key) in enumerate(members):
            s = streams[si]
            old = s.arrays[key]
            s.arrays[key] = SharedHdf5Array(opener, dataset, first[who == m], old.shape, kind=kind)
            close = getattr(old, "close", None)
            if close is not None:
                close()
        names = ", ".join(repr(streams[si].name) for si, _ in members)
        how = "from the file" if kind == "hdf5-shared" else "through the server's raw asset endpoint (HTTP Range)"
        notes.append(f"{name}:{dataset} holds the frames of streams {names} (one AreaDetector file): read {how} "
                     "in trigger order")
    return notes, warnings
