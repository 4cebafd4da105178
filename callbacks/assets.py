"""Reading file-backed detector images referenced by Bluesky asset documents.

Two generations of asset documents are supported, both for HDF5 files written by the camera:

* ``stream_resource`` / ``stream_datum`` (event-model >= 1.20, ophyd-async style): the event of a
  frame does not carry the image key at all; a ``stream_datum`` maps a range of event ``seq_num``
  of one descriptor to a range of frame indices in the dataset named by its ``stream_resource``.
* ``resource`` / ``datum`` (AreaDetector ``AD_HDF5`` style): the event carries a datum id in place
  of the image and ``filled[key] = False``; the datum's ``point_number`` selects the frame, or the
  ``frame_per_point`` frames ``point_number * frame_per_point ...`` of a chunk (returned as an
  ``(N, H, W)`` array; :class:`~txm_live.session.XanesSession` sums its counts).

Files are opened read-only, lazily, and kept open per resource; a frame not yet flushed by the
writer is retried a few times before a :class:`~txm_live.errors.FrameError`. Frames are located
by the indices of their datum / stream_datum only; a negative index or one past the end of the
dataset is a named error (the frame is skipped), never a read from the end of the file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np

from txm_live.errors import DocumentError, FrameError

__all__ = ["AssetRegistry"]

logger = logging.getLogger("txm_live.callbacks.assets")

_DEFAULT_DATASET = "/entry/data/data"
_HDF5_MIMETYPES = ("application/x-hdf5", "application/x-hdf5-swmr", "application/x-hdf5; swmr")
_HDF5_SPECS = ("AD_HDF5", "AD_HDF5_SWMR", "AD_HDF5_SINGLE", "HDF5", "TXM_HDF5")


@dataclass(frozen=True)
class _StreamRange:
    resource_uid: str
    seq_start: int
    seq_stop: int
    index_start: int
    index_stop: int

    @property
    def n_events(self) -> int:
        return self.seq_stop - self.seq_start

    def index_of(self, seq_num: int, rows_per_index: int = 1) -> slice:
        """Dataset rows of event ``seq_num`` (``rows_per_index`` rows per StreamDatum index)."""
        per_event = max((self.index_stop - self.index_start) // max(self.seq_stop - self.seq_start, 1), 1)
        first = (self.index_start + (seq_num - self.seq_start) * per_event) * rows_per_index
        return slice(first, first + per_event * rows_per_index)


class AssetRegistry:
    """Asset documents of one run and the reading of the frames they reference.

    Parameters
    ----------
    root_map : dict of str to str, optional
        Replaces the ``root`` of old-style resources (files moved or remounted).
    retries : int
        Extra attempts when a frame is not yet in the file (writer lagging behind).
    retry_delay : float
        Seconds between attempts (called on the consumer's worker thread, never on the RunEngine
        thread).

    Notes
    -----
    Reads one frame at a time (one HDF5 chunk for the usual one-frame chunks); files stay open
    until :meth:`close`.
    """

    def __init__(self, *, root_map: dict[str, str] | None = None, retries: int = 5, retry_delay: float = 0.05) -> None:
        self.root_map = dict(root_map or {})
        self.retries = int(retries)
        self.retry_delay = float(retry_delay)
        self._stream_resources: dict[str, dict] = {}
        self._stream_ranges: dict[tuple[str, str], list[_StreamRange]] = {}
        self._resources: dict[str, dict] = {}
        self._datums: dict[str, dict] = {}
        self._files: dict[str, object] = {}
        self._used_seq: dict[tuple[str, str], set[tuple[int, int]]] = {}  # frame slots read
        #: Per ``(descriptor uid, data key)``: events whose ``seq_num`` repeated an earlier one's;
        #: their frames were located by their position among the ``stream_datum`` ranges.
        self.repeated_seq: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ documents
    def stream_resource(self, doc: dict) -> None:
        """Remember a ``stream_resource`` document."""
        try:
            self._stream_resources[doc["uid"]] = doc
        except KeyError as exc:
            raise DocumentError("stream_resource without uid") from exc

    def stream_datum(self, doc: dict) -> None:
        """Remember the seq_num -> frame index range of a ``stream_datum`` document."""
        try:
            res = self._stream_resources[doc["stream_resource"]]
            rng = _StreamRange(
                doc["stream_resource"],
                int(doc["seq_nums"]["start"]),
                int(doc["seq_nums"]["stop"]),
                int(doc["indices"]["start"]),
                int(doc["indices"]["stop"]),
            )
            key = (doc["descriptor"], res["data_key"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DocumentError(
                f"stream_datum {doc.get('uid')!r} refers to an unknown stream_resource or lacks/garbles {exc}"
            ) from exc
        n_frames, n_events = rng.index_stop - rng.index_start, rng.seq_stop - rng.seq_start
        if rng.index_start < 0 or n_frames < 1 or n_events < 1 or n_frames % n_events:
            # a negative index would silently read from the end of the dataset
            raise DocumentError(
                f"stream_datum {doc.get('uid')!r}: indices [{rng.index_start}, {rng.index_stop}) for seq_nums "
                f"[{rng.seq_start}, {rng.seq_stop}) are not a whole number of frames per event at "
                "non-negative indices; its frames are skipped"
            )
        self._stream_ranges.setdefault(key, []).append(rng)

    def resource(self, doc: dict) -> None:
        """Remember an old-style ``resource`` document."""
        self._resources[doc["uid"]] = doc

    def datum(self, doc: dict) -> None:
        """Remember an old-style ``datum`` document."""
        self._datums[doc["datum_id"]] = doc

    def datum_page(self, doc: dict) -> None:
        """Remember every datum of a ``datum_page`` document."""
        for i, datum_id in enumerate(doc["datum_id"]):
            kwargs = {k: v[i] for k, v in doc["datum_kwargs"].items()}
            self._datums[datum_id] = {"datum_id": datum_id, "resource": doc["resource"], "datum_kwargs": kwargs}

    # -------------------------------------------------------------- lookups
    def _slot_of_seq(self, key: tuple[str, str], seq_num: int) -> tuple[int, int] | None:
        """``(range index, offset)`` of ``seq_num`` in the most recent range that covers it."""
        ranges = self._stream_ranges.get(key, [])
        for idx in range(len(ranges) - 1, -1, -1):
            rng = ranges[idx]
            if rng.seq_start <= seq_num < rng.seq_stop:
                return idx, seq_num - rng.seq_start
        return None

    def _slot_at(self, key: tuple[str, str], position: int) -> tuple[int, int] | None:
        """``(range index, offset)`` of the ``position``-th event over the ranges in arrival order."""
        for idx, rng in enumerate(self._stream_ranges.get(key, ())):
            if position < rng.n_events:
                return idx, position
            position -= rng.n_events
        return None

    def stream_frame(
        self, descriptor_uid: str, data_key: str, seq_num: int, *, position: int | None = None,
        rows_per_index: int = 1,
    ) -> np.ndarray | None:
        """Frame of event ``seq_num`` of ``data_key``, or None if no ``stream_datum`` covers it yet.

        The frame index comes from the ``stream_datum`` whose ``seq_nums`` range holds the event.
        Each frame slot of a ``stream_datum`` is read once: an event whose ``seq_num`` points at
        a slot already read (producers that send a constant ``seq_num``) is located instead by
        ``position``, its rank among the file-backed events of its descriptor (0-based), over
        the ``stream_datum`` ranges in arrival order, and counted in :attr:`repeated_seq`.
        ``rows_per_index``: dataset rows per StreamDatum index, N for a data key of shape
        ``(N, H, W)`` (ophyd-async ``collections_per_event``); the frames come back as ``(N, H, W)``.
        """
        key = (descriptor_uid, data_key)
        used = self._used_seq.setdefault(key, set())
        slot = self._slot_of_seq(key, seq_num)
        if slot is None:
            return None  # its stream_datum has not arrived yet
        if slot in used:
            if position is None:
                raise FrameError(f"seq_num {seq_num} of descriptor {descriptor_uid[:8]} already read; frame skipped")
            slot = self._slot_at(key, position)
            if slot is None:
                return None
            if slot in used:
                raise FrameError(
                    f"event {position} of descriptor {descriptor_uid[:8]} repeats seq_num {seq_num} and its "
                    "stream_datum slot was already read; frame skipped"
                )
            self.repeated_seq[key] = self.repeated_seq.get(key, 0) + 1
        used.add(slot)
        rng = self._stream_ranges[key][slot[0]]
        seq_num = rng.seq_start + slot[1]
        res = self._stream_resources[rng.resource_uid]
        mimetype = res.get("mimetype", "")
        if not any(mimetype.startswith(m) for m in _HDF5_MIMETYPES):
            raise FrameError(f"stream_resource {rng.resource_uid}: unsupported mimetype {mimetype!r}")
        path = _uri_to_path(res["uri"])
        dataset = res.get("parameters", {}).get("dataset", _DEFAULT_DATASET)
        return self._read(path, dataset, rng.index_of(seq_num, rows_per_index), rng.resource_uid)

    def has_datum(self, datum_id: str) -> bool:
        """Whether the datum and its resource are known (they may arrive after the event)."""
        datum = self._datums.get(datum_id)
        return datum is not None and datum.get("resource") in self._resources

    def datum_frame(self, datum_id: str) -> np.ndarray:
        """Frame referenced by an old-style datum id."""
        try:
            datum = self._datums[datum_id]
            res = self._resources[datum["resource"]]
        except KeyError as exc:
            raise FrameError(f"datum {datum_id!r}: unknown datum or resource") from exc
        spec = res.get("spec", "")
        if spec not in _HDF5_SPECS:
            raise FrameError(f"resource {res['uid']}: unsupported spec {spec!r} (supported: {', '.join(_HDF5_SPECS)})")
        root = res.get("root", "")
        root = self.root_map.get(root, root)
        path = os.path.join(root, res["resource_path"]) if root else res["resource_path"]
        rkw = res.get("resource_kwargs", {})
        dkw = datum.get("datum_kwargs", {})
        try:
            per_point = int(rkw.get("frame_per_point", 1))
            for name in ("point_number", "index", "frame"):
                if name in dkw:
                    first = int(dkw[name]) * per_point
                    break
            else:
                raise FrameError(f"datum {datum_id!r}: no point_number/index in datum_kwargs {dkw}")
        except (TypeError, ValueError) as exc:
            raise FrameError(f"datum {datum_id!r}: frame index not an integer: {exc}") from exc
        if per_point < 1 or first < 0:  # a negative index would silently read from the end
            raise FrameError(f"datum {datum_id!r}: frame index {first} (frame_per_point {per_point}) out of range")
        dataset = rkw.get("dataset", rkw.get("key", _DEFAULT_DATASET))
        return self._read(path, dataset, slice(first, first + per_point), res["uid"])

    # -------------------------------------------------------------- reading
    def _read(self, path: str, dataset: str, index: slice, resource_uid: str) -> np.ndarray:
        import h5py  # lazy: only file-backed runs need it

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                f = self._files.get(path)
                if f is None:
                    f = _open_hdf5(h5py, path)
                    self._files[path] = f
                ds = f[dataset]  # type: ignore[index]
                if hasattr(ds, "refresh") and index.stop > ds.shape[0]:
                    try:
                        ds.refresh()
                    except (RuntimeError, OSError, ValueError):
                        pass  # not a SWMR file
                if index.start < 0:  # never read from the end of the dataset
                    raise FrameError(f"frame index {index.start} of {path}:{dataset} is negative")
                if index.stop > ds.shape[0]:
                    # writer still behind: reopen to see newly flushed frames
                    self._close_file(path)
                    raise IndexError(f"frame {index.start} not yet in {path}:{dataset} (length {ds.shape[0]})")
                data = np.asarray(ds[index])
                # one frame per event: (H, W); a chunk (frame_per_point, StreamDatum ranges of
                # several frames per event): (N, H, W), combined by the session (summed counts)
                return data[0] if data.shape[0] == 1 else data
            except (OSError, KeyError, IndexError) as exc:
                last = exc
                self._close_file(path)
                if attempt < self.retries:
                    time.sleep(self.retry_delay)
        raise FrameError(f"cannot read frame {index.start} of {path}:{dataset} (resource {resource_uid}): {last}")

    def _close_file(self, path: str) -> None:
        f = self._files.pop(path, None)
        if f is not None:
            try:
                f.close()  # type: ignore[attr-defined]
            except (OSError, RuntimeError, ValueError) as exc:  # a broken handle must not fail the run
                logger.debug("closing %s failed: %s", path, exc)

    def close(self) -> None:
        """Close every open file and forget all documents."""
        for path in list(self._files):
            self._close_file(path)
        self._stream_resources.clear()
        self._stream_ranges.clear()
        self._resources.clear()
        self._datums.clear()
        self._used_seq.clear()


def _open_hdf5(h5py, path: str):  # noqa: ANN001, ANN202 - h5py is imported lazily
    """Open read-only, as a SWMR reader when the writer uses SWMR (files still being written)."""
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError:
        return h5py.File(path, "r")


def _uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise FrameError(f"unsupported URI scheme in {uri!r}")
    return unquote(parsed.path)
