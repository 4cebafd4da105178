"""Replay many recorded runs in parallel on a Dask cluster, one task per run.

:func:`replay_runs_on_cluster` is what :func:`txm_live.callbacks.replay.replay_runs` does with
``client=``: every run becomes one task that opens the catalog by its URI on the worker, replays
the run through a fresh :class:`~txm_live.callbacks.live.XanesLiveCallback` (analysis in the
worker process itself) and returns the :class:`~txm_live.results.RunResult`. The caller writes
each run's ``phases.h5`` as soon as its task is done and shows one progress bar per run, fed by
events the workers publish (``Worker.log_event`` on a topic of this call).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from txm_live.errors import DistributedError
from txm_live.results import RunResult

__all__ = ["replay_runs_on_cluster"]

logger = logging.getLogger(__name__)

#: Seconds between two progress events of one run (bounds the scheduler traffic).
_PROGRESS_PERIOD = 0.25


class _Reporter:
    """``progress`` callable of the worker's live callback: forwards frame counts as events."""

    def __init__(self, worker: Any, topic: str, key: str) -> None:
        self.worker = worker  # Worker.log_event is thread-safe; get_worker() works on the task thread only
        self.topic = topic
        self.key = key
        self._last = 0.0

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        if event.stage == "frame" and now - self._last < _PROGRESS_PERIOD:
            return
        self._last = now
        self.worker.log_event(self.topic, {"key": self.key, "stage": event.stage,
                                            "n_frames": event.n_frames, "n_expected": event.n_expected})


def _replay_task(uri: str, api_key: str | None, key: str | int, factory: Callable[[], Any] | None,
                 block_size: int, timeout: float | None, topic: str) -> RunResult:
    """One run, on a worker: open the catalog, replay, analyse, return the RunResult."""
    from txm_live.callbacks.replay import _replay_one, open_catalog

    if factory is None:
        from distributed import get_worker

        from txm_live.callbacks.live import XanesLiveCallback

        cb = XanesLiveCallback(analysis_process=False, progress=_Reporter(get_worker(), topic, str(key)))
    else:
        cb = factory()
        if getattr(cb, "progress", False) is None:  # a live callback without its own progress
            from distributed import get_worker

            cb.progress = _Reporter(get_worker(), topic, str(key))
    return _replay_one(open_catalog(uri, api_key=api_key), key, cb, progress=False,
                       block_size=block_size, timeout=timeout)


def _failed(key: str | int, exc: BaseException) -> RunResult:
    return RunResult(run_uid=str(key), errors=(f"{type(exc).__name__}: {exc}",))


def replay_runs_on_cluster(
    catalog: Any,
    uids: Iterable[str | int] | None,
    client: Any,
    *,
    out: str | Path | None,
    progress: bool,
    callback_factory: Callable[[], Any] | None,
    block_size: int,
    timeout: float | None,
    api_key: str | None,
) -> list[RunResult]:
    """Replay runs of ``catalog`` (a Tiled client) on the Dask ``client``; see ``replay_runs``."""
    from dask.distributed import as_completed

    from txm_live.callbacks.replay import _run_keys, _write
    from txm_live.distributed import close_client, connect, gather

    keys = _run_keys(catalog, uids)
    uri = str(getattr(catalog, "uri", ""))
    if not uri.startswith(("http://", "https://")):
        raise ValueError(f"replay on a Dask cluster needs a catalog reachable by URI, got {catalog!r}")
    key_of_catalog = getattr(getattr(catalog, "context", None), "api_key", None) or api_key
    dask_client = connect(client)
    owned = dask_client is not client
    topic = f"txm-live-replay-{uuid.uuid4().hex}"
    bars: dict[str, Any] = {}
    lock = threading.Lock()
    if progress:
        from tqdm.auto import tqdm

        for i, key in enumerate(keys):
            bars[str(key)] = tqdm(total=None, desc=f"run {str(key)[:8]}", unit="frame", position=i, leave=True)

    def on_event(event: tuple[float, dict]) -> None:
        msg = event[1]
        bar = bars.get(msg.get("key"))
        if bar is None:
            return
        with lock:
            if msg.get("n_expected") and bar.total != msg["n_expected"]:
                bar.total = msg["n_expected"]
            bar.n = int(msg.get("n_frames", 0))
            bar.set_postfix_str(str(msg.get("stage", "")), refresh=True)

    if progress:
        dask_client.subscribe_topic(topic, on_event)
    results: dict[int, RunResult] = {}
    try:
        futures = [dask_client.submit(_replay_task, uri, key_of_catalog, key, callback_factory, block_size,
                                      timeout, topic, pure=False, key=f"txm-live-replay-{i}-{topic[-8:]}")
                   for i, key in enumerate(keys)]
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                (result,) = gather(dask_client, [fut], what=f"replay of run {keys[i]}")
            except DistributedError as exc:
                logger.error("replay of run %s failed on the cluster: %s", keys[i], exc)
                result = _failed(keys[i], exc)
            except Exception as exc:  # noqa: BLE001 - a run's failure never stops the others
                logger.error("replay of run %s failed: %s", keys[i], exc)
                result = _failed(keys[i], exc)
            if out is not None:
                _write(result, out, catalog)
            results[i] = result
            bar = bars.get(str(keys[i]))
            if bar is not None:
                with lock:
                    bar.set_postfix_str("done" if result.ok else "errors", refresh=True)
                    bar.close()
    finally:
        if progress:
            dask_client.unsubscribe_topic(topic)
        for bar in bars.values():
            bar.close()
        if owned:
            close_client(dask_client)
    return [results[i] for i in range(len(keys))]
