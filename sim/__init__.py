"""Simulated TXM beamline: seeded phantom, ophyd devices and plans (installed as ``txm_live.sim``).

The names below are imported lazily on first use, so ``import txm_live.sim`` stays cheap and
builds nothing; ophyd and bluesky are imported only with the devices and plans.
"""

from __future__ import annotations

from txm_live.lazy import lazy_exports

_EXPORTS = {
    "make_phantom": "txm_live.sim.phantom",
    "Phantom": "txm_live.sim.phantom",
    "make_txm": "txm_live.sim.devices",
    "SimTXM": "txm_live.sim.devices",
    "EffectsConfig": "txm_live.sim.effects",
    "xanes_scan": "txm_live.sim.plans",
    "default_energies": "txm_live.sim.plans",
    "coarse_energies": "txm_live.sim.plans",
    "make_battery_phantom": "txm_live.sim.battery",
    "BatteryPhantom": "txm_live.sim.battery",
    "Material": "txm_live.sim.standards",
    "fe_k_energies": "txm_live.sim.standards",
    "ni_k_energies": "txm_live.sim.standards",
    "stxm_documents": "txm_live.sim.stxm",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
