"""Bluesky document consumers of txm-live (installed as ``txm_live.callbacks``).

The public names below are imported lazily on first use, so ``import txm_live.callbacks`` stays
light (no bluesky, tiled or zmq until a name is used)::

    from txm_live.callbacks import XanesLiveCallback, read_results, replay_runs
"""

from __future__ import annotations

from txm_live.lazy import lazy_exports

_EXPORTS = {
    "XanesLiveCallback": "txm_live.callbacks.live",
    "ProgressEvent": "txm_live.callbacks.live",
    "read_results": "txm_live.callbacks.results_file",
    "write_results": "txm_live.callbacks.results_file",
    "publish_results": "txm_live.callbacks.results_file",
    "replay_runs": "txm_live.callbacks.replay",
    "replay_run": "txm_live.callbacks.replay",
    "resolve_run": "txm_live.callbacks.replay",
    "start_embedded_server": "txm_live.callbacks.catalog",
    "record_to": "txm_live.callbacks.catalog",
    "connect": "txm_live.callbacks.catalog",
    "make_publisher": "txm_live.callbacks.remote",
    "serve": "txm_live.callbacks.remote",
    "run_demo": "txm_live.callbacks.demo",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
