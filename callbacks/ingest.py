"""What a beamline plan writes, and how txm-live reads it: stream roles, image key, energy key, units.

Pure functions on documents (no numerics on images, no state), used by
:class:`~txm_live.callbacks.live.RunIngest` and by the reference loading of
:mod:`txm_live.callbacks.replay`. Each decision comes with a plain-language reason that the live
callback logs and writes into the derived run and ``RunResult.notes``.

Rules (explicit options always win; see the README section "At your beamline"):

* **streams**: ``primary`` holds the sample frames; reference (flat-field) streams by the usual
  names ``flat``, ``flats``, ``bkg``, ``background``, ``reference``, ``ref``; darks ``dark``,
  ``darks``.
* **image key**: the data key with a 2-D ``(H, W)`` or 3-D ``(N, H, W)`` shape (N frames per
  event); several: the ones ending in ``_image``, then containing ``image``.
* **energy key**: the scanned motor named by the start document (``hints.dimensions``, then
  ``motors``; among several motors the one with energy units), else the scalar with energy units,
  else a scalar whose value at the first event is in the planned energy list (``eng_list``,
  ``txm_live.energies``, ``energies``), else a key containing ``energy``.
* **units**: the data key's ``units`` (``eV``, ``keV``); without units, keV when every planned
  (else the first) value is below 100.
* **I0 monitor** (sample and flat streams): ``i0_key=`` (``False`` turns it off), else the start
  document's ``txm_live.i0_key`` (``null``/``false`` turns it off), else the key the start
  document names as ``ion_chamber`` (NSLS-II FXI), else the one scalar key named ``I0``/``i0``
  (``*_i0``, ``i0_*``, ``*-i0``; case ignored; among several, the one named ``I0``). Otherwise the
  name is not conclusive (``ic3``, ``ion_chamber1``, ``sclr1_channels_chan2``...): the scalar
  readings of the plan's detectors (:func:`i0_candidates`) are compared with the camera over the
  first sample/flat pairs and the upstream monitor is chosen from the data, never a chamber that
  follows the sample's absorption (:mod:`txm_live.monitor`). Each sample and flat is then divided
  by its own reading (darks are not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from txm_live.errors import DocumentError

__all__ = [
    "DARK_STREAM_NAMES",
    "ENERGY_UNITS",
    "FLAT_STREAM_NAMES",
    "energy_candidates",
    "energy_scale",
    "i0_candidates",
    "i0_monitor",
    "key_following_plan",
    "image_key",
    "planned_energies",
    "stream_kind",
]

#: Energy units understood in a data key's ``units`` -> factor to eV.
ENERGY_UNITS: dict[str, float] = {"ev": 1.0, "kev": 1000.0}
#: Usual names of reference (flat-field, "background") streams.
FLAT_STREAM_NAMES = ("flat", "flats", "bkg", "background", "reference", "ref")
#: Usual names of dark streams.
DARK_STREAM_NAMES = ("dark", "darks")
#: Values below this without units are taken as keV.
KEV_BELOW = 100.0
#: Names that say "incident-intensity monitor" (lower case, whole name or a ``_``/``-``/``.``-separated
#: part at either end). Numbered ion chambers (``ic1``...) are not conclusive: decided from the data.
I0_NAMES = ("i0",)
#: Units of scalar readings that are positions, angles, energies, times or temperatures: never a monitor.
_NOT_MONITOR_UNITS = {"ev", "kev", "um", "mm", "nm", "m", "deg", "degrees", "rad", "mrad", "urad", "s", "sec", "ms",
                      "k", "degc", "c"}


def stream_kind(name: str, *, primary: str | None, flat: str | None, dark: str | None) -> str | None:
    """Role of stream ``name``: ``"sample"``, ``"flat"``, ``"dark"`` or None (not ours).

    An explicit stream name replaces the usual names of its role.
    """
    if name == (primary or "primary"):
        return "sample"
    if (flat is not None and name == flat) or (flat is None and name.lower() in FLAT_STREAM_NAMES):
        return "flat"
    if (dark is not None and name == dark) or (dark is None and name.lower() in DARK_STREAM_NAMES):
        return "dark"
    return None


def image_key(data_keys: Mapping[str, Mapping[str, Any]], stream: str) -> tuple[str, str]:
    """The camera image key of a descriptor and why it was chosen.

    Raises
    ------
    DocumentError
        No, or several equally plausible, 2-D/3-D array keys.
    """
    arrays = [k for k, v in data_keys.items() if len(v.get("shape") or ()) in (2, 3)]
    why = "the only 2-D/3-D array key"
    if len(arrays) > 1:
        why = "the array key named *_image"
        arrays = [k for k in arrays if k.lower().endswith("_image")] or [k for k in arrays if "image" in k.lower()]
    if len(arrays) != 1:
        raise DocumentError(
            f"stream {stream!r}: cannot autodetect the image key among {sorted(data_keys)} "
            f"(array keys with 2-D/3-D shapes: {arrays or 'none'}); pass image_key= or set "
            "txm_live.image_key in the start document"
        )
    return arrays[0], why


def _is_scalar(spec: Mapping[str, Any]) -> bool:
    return not (spec.get("shape") or ()) and spec.get("dtype", "number") in ("number", "integer")


def _has_energy_units(spec: Mapping[str, Any]) -> bool:
    return str(spec.get("units") or "").strip().lower() in ENERGY_UNITS


def _dimension_fields(start: Mapping[str, Any], stream: str) -> list[str]:
    out: list[str] = []
    dims = (start.get("hints") or {}).get("dimensions") if isinstance(start.get("hints"), Mapping) else None
    for dim in dims or ():
        try:
            fields, dim_stream = dim
        except (TypeError, ValueError):
            continue
        if dim_stream in (stream, "primary") and isinstance(fields, (list, tuple)):
            out.extend(str(f) for f in fields)
    return out


def energy_candidates(
    start: Mapping[str, Any], data_keys: Mapping[str, Mapping[str, Any]], stream: str, *, has_plan: bool
) -> tuple[str | None, str, list[str]]:
    """The energy key of a descriptor from the start document and data keys.

    Parameters
    ----------
    start, data_keys, stream
        Start document, the descriptor's data keys and its stream name.
    has_plan : bool
        Whether a planned energy list exists (then undecided keys are tested against it).

    Returns
    -------
    key : str or None
        The energy key, or None if it must be decided from the values (see
        :func:`key_following_plan`) or is absent.
    reason : str
        Why ``key`` was chosen.
    candidates : list of str
        When ``key`` is None and ``has_plan``: the scalar keys to test against the planned
        energies (keys containing ``energy`` first, then scanned motors, then the others).
    """
    scalars = [k for k, v in data_keys.items() if _is_scalar(v)]
    dims = [f for f in _dimension_fields(start, stream) if f in scalars]
    if len(dims) == 1:
        return dims[0], "the scanned dimension of the start document's hints", []
    motors_md = start.get("motors")
    motors = [str(m) for m in motors_md if str(m) in scalars] if isinstance(motors_md, (list, tuple)) else []
    if len(motors) == 1:
        return motors[0], "the scanned motor of the start document's 'motors'", []
    with_units = [k for k in (motors or scalars) if _has_energy_units(data_keys[k])]
    if len(with_units) == 1:
        where = "among the start document's 'motors'" if motors else "among the scalar keys"
        return with_units[0], f"the only key with energy units ({data_keys[with_units[0]].get('units')}) {where}", []
    named = [k for k in scalars if "energy" in k.lower()]
    named = [k for k in named if "setpoint" not in k.lower()] or named
    if not has_plan:
        return (named[0], "a scalar key containing 'energy'", []) if named else (None, "", [])
    others = [k for k in scalars if "setpoint" not in k.lower()]
    return None, "", list(dict.fromkeys(named + motors + others))


def key_following_plan(row: Mapping[str, Any], candidates: Sequence[str], plan: np.ndarray | None) -> str | None:
    """The candidate whose value at this event is one of the planned energies (same units).

    Ties go to the first candidate (scanned motors come first). Without a plan: None.
    """
    if plan is None or plan.size == 0:
        return None
    tol = 1e-6 * max(float(np.max(np.abs(plan))), 1.0)
    for key in candidates:
        try:
            value = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(value) and np.min(np.abs(plan - value)) <= tol:
            return key
    return None


def planned_energies(start: Mapping[str, Any]) -> tuple[np.ndarray | None, str]:
    """The planned energy list of a start document (in its own units) and where it was found.

    Looks at ``txm_live.energies`` (the txm-live contract, eV), ``eng_list`` (NSLS-II FXI style),
    ``energies`` and ``plan_args.energies`` / ``plan_args.eng_list`` (lists of numbers only).
    """
    md = start.get("txm_live") if isinstance(start.get("txm_live"), Mapping) else {}
    plan_args = start.get("plan_args") if isinstance(start.get("plan_args"), Mapping) else {}
    for source, value in (("txm_live.energies", md.get("energies")), ("eng_list", start.get("eng_list")),
                          ("energies", start.get("energies")), ("plan_args.eng_list", plan_args.get("eng_list")),
                          ("plan_args.energies", plan_args.get("energies"))):
        if isinstance(value, (list, tuple)) and value:
            try:
                arr = np.asarray(value, dtype=np.float64).ravel()
            except (TypeError, ValueError):
                continue
            if arr.size and np.all(np.isfinite(arr)):
                return arr, source
    return None, ""


def energy_scale(units: str | None, values: np.ndarray | Sequence[float] | None) -> tuple[float, str]:
    """Factor from the energy key's units to eV, and a note when it had to be inferred.

    Parameters
    ----------
    units : str or None
        The data key's ``units`` (or an explicit ``energy_units``).
    values : array-like, optional
        Planned (else first acquired) energies, used only without units.

    Raises
    ------
    DocumentError
        Units that are not an energy (``"deg"``...).
    """
    u = str(units or "").strip()
    if u:
        try:
            return ENERGY_UNITS[u.lower()], ""
        except KeyError:
            raise DocumentError(
                f"energy units {u!r} not understood (expected eV or keV); pass energy_units= or energy_key="
            ) from None
    arr = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    if arr.size and np.all(np.abs(arr) < KEV_BELOW):
        return 1000.0, f"energy has no units and every value is below {KEV_BELOW:g}: taken as keV"
    return 1.0, "energy has no units: taken as eV" if arr.size else ""


def i0_monitor(
    start: Mapping[str, Any], data_keys: Mapping[str, Mapping[str, Any]], stream: str, *, option: str | bool | None
) -> tuple[str | None, str]:
    """The incident-intensity (I0) monitor key of a descriptor, and what to note about it.

    Parameters
    ----------
    start, data_keys, stream
        Start document, the descriptor's data keys and its stream name.
    option : str, False or None
        The explicit ``i0_key=``: a key, ``False`` (no I0 normalization) or None (not given).

    Returns
    -------
    key : str or None
        The monitor key, or None (none, turned off, or ambiguous).
    note : str
        What was decided and why ("" when nothing is worth noting: no monitor-like key at all).
    """
    md = start.get("txm_live") if isinstance(start.get("txm_live"), Mapping) else {}
    if option is False:
        return None, "off (i0_key=False)"
    if option is None and "i0_key" in md and not md["i0_key"]:
        return None, "off (the start document's txm_live.i0_key)"
    given = option if option is not None else md.get("i0_key")
    if given is not None:
        where = "i0_key=" if option is not None else "the start document's txm_live.i0_key"
        if given in data_keys:
            return str(given), f"{given!r} ({where})"
        return None, f"{given!r} ({where}) is not in stream {stream!r}: its frames are not normalized by I0"
    named = start.get("ion_chamber")
    if isinstance(named, str) and named:
        keys = [k for k in data_keys if _is_scalar(data_keys[k]) and _belongs(k, named)]
        if len(keys) == 1:
            return keys[0], f"{keys[0]!r} (the start document's 'ion_chamber')"
    found = [k for k, v in data_keys.items() if _is_scalar(v) and _named_i0(k)]
    if len(found) > 1:
        exact = [k for k in found if k.lower() == "i0"]
        if len(exact) != 1:
            return None, (f"several monitor-like keys {sorted(found)} in stream {stream!r}: none used; "
                          "pass i0_key= to normalize by one")
        found = exact
    if not found:
        return None, ""
    return found[0], f"{found[0]!r} (a scalar key named like an incident-intensity monitor)"


def _named_i0(key: str) -> bool:
    low = key.lower()
    return any(low == n or low.endswith(sep + n) or low.startswith(n + sep) for n in I0_NAMES for sep in "_-.")


def _belongs(key: str, device: str) -> bool:
    """Whether data key ``key`` is read from the device named ``device`` (ophyd ``_``, ophyd-async ``-``)."""
    return key == device or any(key.startswith(device + sep) for sep in "_-")


def i0_candidates(
    start: Mapping[str, Any], data_keys: Mapping[str, Mapping[str, Any]], *, exclude: Sequence[str | None] = ()
) -> list[str]:
    """Scalar readings of a descriptor that may be an I0 monitor, to be decided from the data.

    The numeric scalar keys read from the plan's ``detectors`` (every scalar when the start
    document lists none), minus the scanned motors (``motors``, ``hints.dimensions``), the keys
    in ``exclude`` (energy, pixel size) and readings in units of position, angle, energy, time or
    temperature. Which of them is upstream of the sample is decided by :class:`txm_live.monitor.MonitorChoice`.
    """
    dets = start.get("detectors")
    detectors = [str(d) for d in dets] if isinstance(dets, (list, tuple)) else []
    mot = start.get("motors")
    motors = [str(m) for m in mot] if isinstance(mot, (list, tuple)) else []
    motors += _dimension_fields(start, "primary")
    out = []
    for key, spec in data_keys.items():
        if not _is_scalar(spec) or key in exclude:
            continue
        if str(spec.get("units") or "").strip().lower() in _NOT_MONITOR_UNITS:
            continue
        if any(_belongs(key, m) for m in motors):
            continue
        if detectors and not any(_belongs(key, d) for d in detectors):
            continue
        out.append(key)
    return out
