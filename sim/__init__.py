"""Simulated TXM beamline: seeded phantom, ophyd devices and plans (installed as ``txm_live.sim``)."""
