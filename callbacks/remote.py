"""Analyse runs published by a remote RunEngine over ZeroMQ.

Topology (the standard Bluesky one)::

    RunEngine --Publisher--> bluesky-0MQ-proxy --> serve() --> XanesLiveCallback --> phases.h5
               (make_publisher)  IN:5567   OUT:5568

Start the proxy bound to the loopback interface (or to one chosen interface)::

    bluesky-0MQ-proxy --in-address 127.0.0.1:5567 --out-address 127.0.0.1:5568

Security and robustness choices:

* Documents travel as **msgpack** with numpy arrays (msgpack-numpy encoding), decoded by a
  restricted decoder that refuses object arrays (msgpack-numpy would unpickle them). Pickle, the
  Bluesky default, is refused unless ``allow_pickle=True`` (unpickling network data executes
  arbitrary code; only use it on a trusted network).
* Addresses are ``HOST:PORT``; a bare port is refused (Bluesky maps it to all interfaces).
* A consumer that joins late (ZeroMQ's "slow joiner": messages sent before the subscription is
  established are lost) or misses a ``start`` document skips that run's documents, logs it once,
  and resynchronizes on the next ``start``.
* Lost messages (a high-water mark overflowed under a flood) are detected from gaps in the
  events' ``seq_num`` and from the stop document's ``num_events``: a ``DataLossError`` is added
  to the run's errors. The receive queue (``rcvhwm`` messages) is configurable.
* A results file that cannot be written (``ResultsWriteError``: full disk...) is logged and
  :func:`serve` goes on with the next run. Only the last ``max_results`` results are kept.
* SIGINT/SIGTERM (or ``stop_event``) end :func:`serve` cleanly: queued documents are processed,
  a run in progress is finished as incomplete (``RunIncompleteError`` in its errors) and its
  results are written.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from txm_live.errors import DataLossError, DocumentError
from txm_live.results import RunResult

__all__ = [
    "ResyncGate",
    "decode_msgpack",
    "encode_msgpack",
    "make_publisher",
    "parse_address",
    "serve",
]

logger = logging.getLogger(__name__)

SERIALIZERS = ("msgpack", "pickle")


# ------------------------------------------------------------------ addresses
def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """Parse ``"HOST:PORT"`` (or ``"tcp://HOST:PORT"``, or ``(host, port)``).

    Raises
    ------
    ValueError
        A bare port (Bluesky would bind or connect on all interfaces), a missing host, a port
        outside 1..65535, or a wildcard host (``*``, ``0.0.0.0``, ``::``).
    """
    if isinstance(address, tuple) and len(address) == 2:
        host, port_s = str(address[0]), str(address[1])
    elif isinstance(address, str):
        text = address.strip()
        if text.startswith("tcp://"):
            text = text[len("tcp://"):]
        elif "://" in text:
            raise ValueError(f"address must be tcp HOST:PORT, got {address!r}")
        if text.isdigit():
            raise ValueError(f"address {address!r} is a bare port: give HOST:PORT, e.g. "
                             f"127.0.0.1:{text} (a bare port would use all network interfaces)")
        host, sep, port_s = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address must be HOST:PORT, e.g. 127.0.0.1:5568, got {address!r}")
        host = host.strip("[]")
    else:
        raise ValueError(f"address must be a 'HOST:PORT' string, got {address!r}")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"address port must be in 1..65535, got {address!r}")
    if host == "*":
        raise ValueError(f"address {address!r}: wildcard host refused, name an interface")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise ValueError(f"address {address!r}: wildcard host refused, name an interface")
    except ValueError as exc:
        if "wildcard" in str(exc):
            raise
    return host, int(port_s)


def _zmq_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------- serializers
def encode_msgpack(doc: Any) -> bytes:
    """Serialize a document with msgpack, numpy arrays as raw buffers (msgpack-numpy format).

    Raises
    ------
    TypeError
        Object arrays (they would need pickle).
    """
    import msgpack
    import msgpack_numpy

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
            raise TypeError("object arrays cannot be sent (they would need pickle)")
        if isinstance(obj, (tuple, set, frozenset)):
            return list(obj)
        out = msgpack_numpy.encode(obj)
        if out is obj:
            raise TypeError(f"cannot serialize {type(obj).__name__}")
        return out

    return msgpack.packb(doc, default=default, use_bin_type=True)


def _safe_numpy_hook(obj: dict) -> Any:
    if b"nd" not in obj:
        return obj
    kind = obj.get(b"kind", b"")
    if kind == b"O":
        raise DocumentError("refused an object array in a msgpack message (it would be unpickled)")
    descr = obj[b"type"]
    if isinstance(descr, (list, tuple)):
        dtype = np.dtype([tuple(x.decode() if isinstance(x, bytes) else x for x in d)
                          for d in descr])
    else:
        dtype = np.dtype(descr.decode() if isinstance(descr, bytes) else descr)
    if dtype.hasobject:
        raise DocumentError("refused an object dtype in a msgpack message")
    if obj[b"nd"] is True:
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
    return np.frombuffer(obj[b"data"], dtype=dtype)[0]


def decode_msgpack(data: bytes) -> Any:
    """Inverse of :func:`encode_msgpack`, without any unpickling.

    Arrays come back read-only (they share the message buffer): consumers must not modify
    documents anyway.
    """
    import msgpack

    return msgpack.unpackb(data, object_hook=_safe_numpy_hook, raw=False, strict_map_key=False)


def _serializers(serializer: str, allow_pickle: bool) -> tuple[Callable, Callable]:
    if serializer == "msgpack":
        return encode_msgpack, decode_msgpack
    if serializer == "pickle":
        if not allow_pickle:
            raise ValueError("serializer='pickle' needs allow_pickle=True: unpickling data from the "
                             "network runs arbitrary code; use only on a trusted network")
        import pickle

        logger.warning("pickle deserialization enabled: only safe on a trusted network")
        return pickle.dumps, pickle.loads
    raise ValueError(f"serializer must be one of {SERIALIZERS}, got {serializer!r}")


# ---------------------------------------------------------------- publisher
class _PublisherHandle:
    """Returned by :func:`make_publisher`: ``.token``, ``.flush()``, ``.close()``."""

    def __init__(self, RE: Any, token: int, callback: Any, publisher: Any) -> None:
        self.RE, self.token, self.callback, self.publisher = RE, token, callback, publisher

    @property
    def errors(self) -> list[str]:
        """Publishing errors (the scan never sees them)."""
        return self.callback.errors

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document emitted so far has been handed to ZeroMQ."""
        return self.callback.flush(timeout)

    def close(self) -> None:
        """Unsubscribe, send what is queued, close the socket."""
        try:
            self.RE.unsubscribe(self.token)
        finally:
            self.callback.close()
            self.publisher.close()

    def __enter__(self) -> _PublisherHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_publisher(RE: Any, address: str = "127.0.0.1:5567", *, serializer: str = "msgpack",
                   allow_pickle: bool = False, prefix: bytes = b"",
                   connect_timeout: float = 5.0) -> _PublisherHandle:
    """Publish every document of ``RE`` to a ``bluesky-0MQ-proxy`` (its IN address).

    Parameters
    ----------
    RE : bluesky.RunEngine
    address : str
        ``HOST:PORT`` of the proxy's input.
    serializer : {"msgpack", "pickle"}
        Must match :func:`serve`'s. ``"pickle"`` needs ``allow_pickle=True``.
    prefix : bytes
        Bluesky publisher prefix (to share a proxy between beamlines).
    connect_timeout : float
        Seconds to wait for the proxy's subscription before returning (documents published
        before it arrives are lost; a warning is logged, the RunEngine is never blocked later).

    Returns
    -------
    handle
        ``.token`` (RunEngine subscription), ``.flush()``, ``.close()``, ``.errors``.

    Notes
    -----
    ``bluesky.callbacks.zmq.Publisher`` deep-copies and serializes each document; both run on a
    worker thread (:class:`~txm_live.callbacks.catalog.ThreadedCallback`), so the RunEngine thread
    only enqueues.
    """
    import zmq
    from bluesky.callbacks.zmq import Publisher

    from txm_live.callbacks.catalog import ThreadedCallback

    host, port = parse_address(address)
    dumps, _ = _serializers(serializer, allow_pickle)
    publisher = Publisher(_zmq_address(host, port), serializer=dumps, prefix=prefix)
    # Slow joiner: a PUB socket drops messages until the proxy's subscription has arrived, and
    # cannot tell when that is. An XPUB socket receives the subscription itself: swap it in and
    # wait for it, so that the first start document is not lost.
    publisher._socket.close(linger=0)
    sock = publisher._context.socket(zmq.XPUB)
    sock.connect(publisher.address)
    publisher._socket = sock
    if sock.poll(int(connect_timeout * 1000)):
        sock.recv()  # b"\x01" + topic: the proxy subscribed
    else:
        logger.warning("no ZeroMQ proxy at %s:%s yet; documents are dropped until it is up",
                       host, port)
    threaded = ThreadedCallback(publisher, name="zmq-publisher")
    token = RE.subscribe(threaded)
    return _PublisherHandle(RE, token, threaded, publisher)


# -------------------------------------------------------------- consumer side
class ResyncGate:
    """Forward only documents of runs whose ``start`` was seen; resynchronize on the next start.

    Parameters
    ----------
    target : callable
        ``target(name, doc)``.

    Attributes
    ----------
    skipped : dict of str to int
        Documents skipped per run uid (or ``"unknown"``).
    losses : dict of str to list of str
        ``DataLossError`` messages per run uid: events missing from a descriptor's ``seq_num``
        sequence, or fewer events than the stop document's ``num_events``.
    """

    def __init__(self, target: Callable[[str, dict], Any]) -> None:
        self.target = target
        self._runs: set[str] = set()
        self._open: list[str] = []
        self._descriptors: set[str] = set()
        self._resources: set[str] = set()
        self.skipped: dict[str, int] = {}
        self.losses: dict[str, list[str]] = {}
        self._desc_info: dict[str, tuple[str, str]] = {}  # descriptor uid -> (run uid, stream name)
        self._seen: dict[str, set[int]] = {}  # descriptor uid -> seq_nums received

    def _skip(self, key: str | None, name: str) -> None:
        key = key or "unknown"
        if key not in self.skipped:
            logger.error("DataLossError: joined late or lost messages: %r document of a run whose "
                         "start was not received (run/descriptor %s); skipping until the next start",
                         name, key)
            self.skipped[key] = 0
        self.skipped[key] += 1

    def _count(self, descriptor: str, seq_nums: Any) -> None:
        seen = self._seen.setdefault(descriptor, set())
        try:
            seen.update(int(n) for n in seq_nums)
        except (TypeError, ValueError):
            pass  # garbled seq_num: the consumer reports it

    def _check_losses(self, stop: dict) -> None:
        """Compare what arrived with the stop document: seq_num gaps and ``num_events``."""
        run = stop.get("run_start")
        msgs = []
        expected = stop.get("num_events") if isinstance(stop.get("num_events"), dict) else {}
        for desc, (run_uid, stream) in list(self._desc_info.items()):
            if run_uid != run:
                continue
            seen = self._seen.pop(desc, set())
            del self._desc_info[desc]
            n_expected = expected.get(stream)
            top = max(seen) if seen else 0
            if isinstance(n_expected, int):
                top = max(top, n_expected)
            missing = top - len({n for n in seen if 1 <= n <= top})
            if missing > 0:
                msgs.append(f"{DataLossError.__name__}: stream {stream!r}: {missing} of {top} events "
                            "lost in transport (ZeroMQ high-water mark or network); the run was "
                            "analysed without them")
        if msgs:
            self.losses.setdefault(str(run), []).extend(msgs)
            for m in msgs:
                logger.error("run %s: %s", str(run)[:8], m)

    def __call__(self, name: str, doc: dict | None) -> None:
        if doc is None:  # undecodable message, already logged
            return
        if not isinstance(doc, dict):
            logger.error("DocumentError: dropped a %r message that is not a document (%s)", name,
                         type(doc).__name__)
            return
        if name == "start":
            self._runs.add(doc["uid"])
            self._open.append(doc["uid"])
        elif name == "descriptor":
            if doc.get("run_start") not in self._runs:
                return self._skip(doc.get("run_start"), name)
            self._descriptors.add(doc["uid"])
            self._desc_info[doc["uid"]] = (doc["run_start"], str(doc.get("name", "primary")))
        elif name in ("event", "event_page"):
            if doc.get("descriptor") not in self._descriptors:
                return self._skip(doc.get("descriptor"), name)
            seq = doc.get("seq_num")
            self._count(doc["descriptor"], seq if name == "event_page" else [seq])
        elif name in ("resource", "stream_resource"):
            run = doc.get("run_start")
            if (run not in self._runs) if run else not self._open:
                return self._skip(run, name)
            self._resources.add(doc["uid"])
        elif name == "stream_datum":
            if doc.get("stream_resource") not in self._resources:
                return self._skip(doc.get("stream_resource"), name)
        elif name == "datum":
            if doc.get("resource") not in self._resources:
                return self._skip(doc.get("resource"), name)
        elif name == "datum_page":
            if doc.get("resource") not in self._resources:
                return self._skip(doc.get("resource"), name)
        elif name == "stop":
            run = doc.get("run_start")
            if run not in self._runs:
                return self._skip(run, name)
            if run in self._open:
                self._open.remove(run)
            self._check_losses(doc)
        self.target(name, doc)
        return None


def _safe_dispatcher_class() -> type:
    """``RemoteDispatcher`` whose receive loop drops malformed messages instead of dying.

    Bluesky's loop ends (and with it the consumer) on a message whose document name is not a
    Bluesky document name; here such messages are logged and dropped. ``rcvhwm=`` sets the
    subscriber's receive high-water mark (messages queued before ZeroMQ drops).
    """
    import zmq
    import zmq.asyncio as zmq_asyncio
    from bluesky.callbacks.zmq import RemoteDispatcher
    from bluesky.run_engine import DocumentNames

    class SafeRemoteDispatcher(RemoteDispatcher):
        def __init__(self, *args: Any, rcvhwm: int = 1000, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

            def setup() -> None:  # bluesky's setup, with the high-water mark set before connect
                asyncio.set_event_loop(self.loop)
                self._context = zmq_asyncio.Context()
                self._socket = self._context.socket(zmq.SUB)
                self._socket.setsockopt(zmq.RCVHWM, int(rcvhwm))
                self._socket.connect(self.address)
                self._socket.setsockopt_string(zmq.SUBSCRIBE, "")

            self._RemoteDispatcher__factory = setup

        async def _poll(self) -> None:
            our_prefix = self._prefix
            while True:
                message = await self._socket.recv()
                try:
                    prefix, name_b, payload = message.split(b" ", 2)
                    name = name_b.decode()
                    kind = DocumentNames[name]
                except (ValueError, UnicodeDecodeError, KeyError) as exc:
                    logger.error("dropped a malformed message (%d bytes): %s: %s",
                                 len(message), type(exc).__name__, exc)
                    continue
                if our_prefix and prefix != our_prefix:
                    continue
                doc = self._deserializer(payload)
                self.loop.call_soon(self.process, kind, doc)

    return SafeRemoteDispatcher


def _default_factory() -> Any:
    from txm_live.callbacks.live import XanesLiveCallback

    return XanesLiveCallback()


def serve(
    address: str = "127.0.0.1:5568",
    *,
    out: str | Path | None = None,
    serializer: str = "msgpack",
    allow_pickle: bool = False,
    stop_event: threading.Event | None = None,
    callback_factory: Callable[[], Any] | None = None,
    prefix: bytes = b"",
    on_result: Callable[[RunResult], Any] | None = None,
    close_timeout: float | None = 600.0,
    rcvhwm: int = 100_000,
    max_results: int = 20,
) -> list[RunResult]:
    """Consume documents from a ``bluesky-0MQ-proxy`` and analyse every run, until stopped.

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the proxy's output (``--out-address``).
    out : path, optional
        Write ``out/<run uid>/phases.h5`` as soon as each run's results are ready.
    serializer : {"msgpack", "pickle"}
        Must match the publisher's (:func:`make_publisher`).
    allow_pickle : bool
        Required for ``serializer="pickle"`` (never enable on an untrusted network).
    stop_event : threading.Event, optional
        Set it (from another thread) to stop. SIGINT and SIGTERM also stop when called from the
        main thread.
    callback_factory : callable, optional
        Returns the consumer (``cb(name, doc)``, ``cb.results``, ``cb.close(timeout)``); default
        :class:`~txm_live.callbacks.live.XanesLiveCallback`.
    prefix : bytes
        Only documents of publishers with this prefix.
    on_result : callable, optional
        Called with each :class:`RunResult` as soon as it is ready (after it is written).
    close_timeout : float, optional
        Seconds to finish the queued work at shutdown.
    rcvhwm : int
        Receive high-water mark: messages ZeroMQ queues for this consumer before it drops (a
        loss is then reported as ``DataLossError`` in the run). Memory: up to this many
        documents; with inline images each is a frame (e.g. 1.5 MB at 602x643 float32).
    max_results : int
        Results kept in memory and returned (the most recent runs); every run is still written
        and passed to ``on_result``.

    Returns
    -------
    list of RunResult
        The last ``max_results`` runs analysed, including the one in progress at shutdown
        (flagged incomplete).
    """
    from txm_live.callbacks.results_file import write_results

    if not (isinstance(rcvhwm, int) and rcvhwm >= 0):
        raise ValueError(f"rcvhwm must be an integer >= 0 (0: no limit), got {rcvhwm!r}")
    if not (isinstance(max_results, int) and max_results >= 1):
        raise ValueError(f"max_results must be an integer >= 1, got {max_results!r}")
    host, port = parse_address(address)
    _, loads = _serializers(serializer, allow_pickle)
    if stop_event is None:
        stop_event = threading.Event()

    def deserializer(data: bytes) -> Any:
        try:
            return loads(data)
        except Exception as exc:  # a bad message must not stop the consumer
            logger.error("dropped an undecodable message (%d bytes): %s: %s", len(data),
                         type(exc).__name__, exc)
            return None

    cb = (callback_factory or _default_factory)()
    gate = ResyncGate(cb)
    loop = asyncio.new_event_loop()
    dispatcher = _safe_dispatcher_class()(_zmq_address(host, port), deserializer=deserializer,
                                          prefix=prefix, loop=loop, rcvhwm=rcvhwm)
    dispatcher.subscribe(gate)
    done: collections.deque[RunResult] = collections.deque(maxlen=max_results)
    n_seen = 0

    def new_results() -> list[RunResult]:
        nonlocal n_seen
        results = list(getattr(cb, "results", []))
        total = getattr(cb, "n_finished", None)
        if not isinstance(total, int):  # a consumer that keeps every result
            total = len(results)
        n_new, n_seen = total - n_seen, total
        if n_new > len(results):
            logger.error("txm-live serve: %d results dropped before they were written "
                         "(raise max_results of the callback)", n_new - len(results))
        return results[len(results) - min(n_new, len(results)):] if n_new > 0 else []

    def harvest() -> None:
        for result in new_results():
            lost = gate.losses.pop(result.run_uid, None)
            if lost:
                result = dataclasses.replace(result, errors=tuple(result.errors) + tuple(lost))
            done.append(result)
            if out is not None:
                try:
                    path = write_results(result, out, parameters={"source": f"zmq {host}:{port}"})
                    logger.info("run %s: results written to %s", result.run_uid, path)
                except Exception as exc:  # noqa: BLE001 - a full disk must not stop the consumer
                    logger.error("run %s: results not written: %s: %s", result.run_uid,
                                 type(exc).__name__, exc)
            if on_result is not None:
                try:
                    on_result(result)
                except Exception:
                    logger.exception("on_result failed for run %s", result.run_uid)

    async def watch() -> None:
        logger.info("txm-live serve: subscribed to tcp://%s:%s (%s)", host, port, serializer)
        while not stop_event.is_set():
            harvest()
            await asyncio.sleep(0.1)
        task = getattr(dispatcher, "_task", None)
        if task is not None:
            task.cancel()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame: Any) -> None:
            logger.info("txm-live serve: %s received, finishing", signal.Signals(signum).name)
            stop_event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    loop.call_soon(lambda: loop.create_task(watch()))
    try:
        dispatcher.start()
    except asyncio.CancelledError:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        close = getattr(cb, "close", None)
        if callable(close):
            try:
                close(close_timeout)
            except TimeoutError:
                logger.error("txm-live serve: analysis still running after %s s", close_timeout)
        harvest()
        if gate.skipped:
            logger.warning("txm-live serve: skipped documents of runs without start: %s",
                           gate.skipped)
    return list(done)
