"""Bluesky document consumers of txm-live (installed as ``txm_live.callbacks``)."""
