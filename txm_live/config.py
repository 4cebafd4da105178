"""txm-live configuration: one frozen dataclass, loaded from a TOML file, overridden by flags.

A configuration file groups the options in sections; every key is optional and an omitted key
keeps its default (``None`` means "decide from the data or the start document")::

    [analysis]
    element = "Fe"             # omit: from the start document, else detected from the data
    edges = ["K"]              # omit: from the start document, else the element's edges in range
    method = "athena"          # or "mback"
    post_order = 1             # post-edge model of every edge: 0, 1, 2 (omit: chosen per edge)
    snr_threshold = 3.0        # omit: chosen automatically
    register = true
    correct_magnification = true
    interpolation_order = 3    # resampling of moved frames: 3 cubic (sharp), 1 bilinear (averages noise)
    threads = 1                # threads of each edge analysis (2+: an analysis server, replay)

    [analysis.dbscan]          # omit: eps and min_samples estimated from the data
    eps = 0.35
    min_samples = 20

    [windows.K]                # override any part of an edge window (eV, pre/post relative to e0);
    e0 = 7112.0                # needs [analysis] element and edges
    pre = [-150.0, -30.0]
    post = [40.0, 200.0]
    post_order = 2             # this edge's post-edge model

    [stream]                   # data keys and stream names; omit to read them from the start doc
    energy_key = "mono_energy"
    image_key = "camera_image"

    [preview]
    enabled = true
    n_learn = 3000

    [output]
    directory = "txm-live-output"
    figures = true

    [demo]
    size = "small"
    seed = 0
    flux = 5000.0

``txm-live config --print`` prints the full default file. Precedence: keyword overrides (command
line flags) > file > defaults. Unknown sections or keys are an error naming them, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from txm_live.edges import EdgeWindow, default_windows, join_windows

__all__ = ["TxmLiveConfig", "WindowOverride", "default_toml", "load_config", "DEMO_SIZES"]

#: Names accepted by ``demo.size``.
DEMO_SIZES = ("small", "full")


@dataclass(frozen=True)
class WindowOverride:
    """Changes to the default window of one edge; ``None`` keeps the default."""

    edge: str
    e0: float | None = None
    pre: tuple[float, float] | None = None
    post: tuple[float, float] | None = None
    post_order: int | None = None


def _opt(section: str, key: str, help: str) -> dict[str, Any]:
    return {"section": section, "key": key, "help": help}


@dataclass(frozen=True)
class TxmLiveConfig:
    """All user-facing options of txm-live.

    Field metadata gives each option its TOML section and key and a help text (used by the CLI
    and by :func:`default_toml`).
    """

    element: str | None = field(default=None, metadata=_opt(
        "analysis", "element", "absorbing element (omit: from the start document, else detected from the data)"))
    edges: tuple[str, ...] | None = field(default=None, metadata=_opt(
        "analysis", "edges", "edges to analyse (omit: from the start document, else the element's edges in the scan)"))
    method: str = field(default="athena", metadata=_opt(
        "analysis", "method", "normalization: athena (pre-edge line, post-edge polynomial) or mback"))
    post_order: int | None = field(default=None, metadata=_opt(
        "analysis", "post_order", "post-edge polynomial order 0, 1 or 2 for every edge (omit: chosen per edge)"))
    snr_threshold: float | None = field(default=None, metadata=_opt(
        "analysis", "snr_threshold", "minimum edge-step SNR of a clustered pixel (omit: automatic)"))
    n_components: int | None = field(default=None, metadata=_opt(
        "analysis", "n_components", "PCA components clustered (omit: automatic)"))
    register: bool = field(default=True, metadata=_opt("analysis", "register", "register frames (drift, jitter)"))
    threads: int = field(default=1, metadata=_opt(
        "analysis", "threads", "threads of each edge analysis (1: leaves the other cores to acquisition; "
        "more on an analysis server or for replay; results do not depend on it)"))
    correct_magnification: bool = field(default=True, metadata=_opt(
        "analysis", "correct_magnification", "correct the energy-dependent magnification"))
    interpolation_order: int = field(default=3, metadata=_opt(
        "analysis", "interpolation_order", "resampling of registered / magnification-corrected frames: 3 cubic "
        "(keeps interfaces sharp; default), 1 bilinear (averages 2-4 pixels of each moved frame: "
        "smoother maps of noise-limited edges, blurred interfaces)"))
    dbscan_eps: float | None = field(default=None, metadata=_opt(
        "analysis.dbscan", "eps", "DBSCAN neighbourhood radius in PCA units (omit: estimated)"))
    dbscan_min_samples: int | None = field(default=None, metadata=_opt(
        "analysis.dbscan", "min_samples", "DBSCAN core point size (omit: estimated)"))
    windows: tuple[WindowOverride, ...] = field(default=(), metadata=_opt(
        "windows", "", "per-edge window overrides: e0 (eV), pre/post ranges relative to e0 (eV)"))
    energy_key: str | None = field(default=None, metadata=_opt(
        "stream", "energy_key", "data key of the monochromator energy (omit: from the start document)"))
    image_key: str | None = field(default=None, metadata=_opt(
        "stream", "image_key", "data key of the camera image (omit: from the start document)"))
    flat_stream: str | None = field(default=None, metadata=_opt("stream", "flat_stream", "name of the flat-field stream"))
    dark_stream: str | None = field(default=None, metadata=_opt("stream", "dark_stream", "name of the dark stream"))
    preview: bool = field(default=True, metadata=_opt("preview", "enabled", "show a fast streaming (river) preview"))
    preview_n_learn: int = field(default=3000, metadata=_opt(
        "preview", "n_learn", "pixels the streaming preview learns from (bounds its time)"))
    out: str = field(default="txm-live-output", metadata=_opt("output", "directory", "output directory"))
    figures: bool = field(default=True, metadata=_opt("output", "figures", "write PNG figures"))
    live_plot: bool = field(default=False, metadata=_opt("output", "live_plot", "open a live matplotlib window"))
    size: str = field(default="small", metadata=_opt("demo", "size", f"demo size: one of {', '.join(DEMO_SIZES)}"))
    seed: int = field(default=0, metadata=_opt("demo", "seed", "seed of the simulated sample and noise"))
    flux: float = field(default=5000.0, metadata=_opt("demo", "flux", "flat-field photons per pixel per exposure"))
    n_dark: int = field(default=5, metadata=_opt("demo", "n_dark", "dark frames at the start and at the end"))
    dask: str | None = field(default=None, metadata=_opt(
        "dask", "scheduler", "Dask scheduler address (tcp://host:8786) or 'local[:N]' that runs the edge "
        "analyses and replayed runs (omit: the local analysis process)"))

    def __post_init__(self) -> None:
        if self.edges is not None and isinstance(self.edges, str):
            object.__setattr__(self, "edges", (self.edges,))
        for f in fields(self):
            _check_type(f, getattr(self, f.name))

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{_where(name)}: {name} must be {rule}, got {getattr(self, name)!r}")

        if self.element is not None and not self.element.strip():
            raise bad("element", "an element symbol such as 'Fe'")
        if self.edges is not None and (not self.edges or not all(self.edges)):
            raise ValueError(f"{_where('edges')}: edges must name at least one edge, e.g. ['K'] or ['L3', 'L2'], "
                             f"got {list(self.edges)!r}")
        if self.method not in ("athena", "mback"):
            raise bad("method", "'athena' or 'mback'")
        for po in (self.post_order, *(w.post_order for w in self.windows)):
            if po is not None and (isinstance(po, bool) or po not in (0, 1, 2)):
                raise ValueError(f"{_where('post_order')}: post_order must be 0, 1 or 2, got {po!r}")
        if self.snr_threshold is not None and not self.snr_threshold >= 0:
            raise bad("snr_threshold", ">= 0")
        if self.n_components is not None and self.n_components < 1:
            raise bad("n_components", ">= 1")
        if self.threads < 1:
            raise bad("threads", ">= 1")
        if self.interpolation_order not in (1, 3):
            raise bad("interpolation_order", "1 (bilinear) or 3 (cubic)")
        if self.dbscan_eps is not None and not self.dbscan_eps > 0:
            raise bad("dbscan_eps", "> 0")
        if self.dbscan_min_samples is not None and self.dbscan_min_samples < 1:
            raise bad("dbscan_min_samples", ">= 1")
        if self.preview_n_learn < 10:
            raise bad("preview_n_learn", ">= 10")
        if self.size not in DEMO_SIZES:
            raise bad("size", f"one of {DEMO_SIZES}")
        if not self.seed >= 0:
            raise bad("seed", "an integer >= 0 (numpy seeds are non-negative)")
        if not self.flux > 0:
            raise bad("flux", "> 0")
        if self.n_dark < 1:
            raise bad("n_dark", ">= 1")
        if self.windows and (self.element is None or self.edges is None):
            raise ValueError(f"windows: [windows.{self.windows[0].edge}] needs [analysis] element and edges "
                             "(the window of an edge is only known once its element is)")
        known = set(self.edges or ())
        for w in self.windows:
            if w.edge not in known:
                raise ValueError(f"windows: edge {w.edge!r} is not among edges {self.edges}")

    # derived ----------------------------------------------------------------------------------
    def edge_windows(self) -> tuple[EdgeWindow, ...]:
        """The analysis windows: defaults from xraydb with this configuration's overrides.

        Empty when the element or the edges are not set (they then come from the start document
        or the data, and the live callback builds the windows).
        """
        if self.element is None or self.edges is None:
            return ()
        by_edge = {w.edge: w for w in self.windows}
        out = []
        for win in default_windows(self.element, self.edges, joint=False):
            o = by_edge.get(win.edge)
            if o is not None:
                win = EdgeWindow(win.element, win.edge,
                                 win.e0 if o.e0 is None else float(o.e0),
                                 win.pre if o.pre is None else tuple(o.pre),
                                 win.post if o.post is None else tuple(o.post),
                                 win.post_order if o.post_order is None else int(o.post_order))
            out.append(win)
        return join_windows(out)  # overlapping edges normalized together (txm_live.edges.join_windows)

    def session_options(self) -> dict[str, Any]:
        """Keyword options for every run's :class:`~txm_live.session.XanesSession`."""
        return {"interpolation_order": self.interpolation_order}

    def analysis_options(self) -> dict[str, Any]:
        """Keyword options for the exact analysis (``analyze_edge``) that the user set."""
        opts = {"eps": self.dbscan_eps, "min_samples": self.dbscan_min_samples,
                "snr_threshold": self.snr_threshold, "n_components": self.n_components,
                "method": None if self.method == "athena" else self.method, "post_order": self.post_order,
                "threads": None if self.threads == 1 else self.threads}
        return {k: v for k, v in opts.items() if v is not None}

    def replace(self, **overrides: Any) -> TxmLiveConfig:
        """A copy with ``overrides`` applied; ``None`` values are ignored (unset CLI flags)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown configuration option(s) {unknown}; known: {sorted(names)}")
        if "edges" in overrides:
            edges = overrides["edges"]
            overrides["edges"] = (edges,) if isinstance(edges, str) else tuple(edges)
        if "out" in overrides:
            overrides["out"] = os.fspath(overrides["out"])
        return dataclasses.replace(self, **overrides)

    def to_toml(self) -> str:
        """This configuration as a TOML document (``None`` options are written as comments)."""
        return _to_toml(self)


def _where(name: str) -> str:
    """``[section] key`` of the field ``name`` (what the user writes in the TOML file)."""
    for f in fields(TxmLiveConfig):
        if f.name == name:
            return f"[{f.metadata['section']}] {f.metadata['key'] or name}".rstrip()
    return name


#: Expected TOML types per annotation: (python types accepted, plain-language name).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"),
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
}


def _check_type(f: dataclasses.Field[Any], value: Any) -> None:
    """Raise a ValueError naming the key, the expected type and the value when ``value`` is wrong."""
    annotation = str(f.type).replace(" ", "")
    optional = annotation.endswith("|None")
    base = annotation.removesuffix("|None")
    if value is None:
        if optional:
            return
        raise ValueError(f"{_where(f.name)}: expected {_describe(base)}, got nothing (None)")
    if base == "tuple[str,...]":  # one string is taken as a one-edge list
        ok = isinstance(value, str) or (isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value))
    elif base in _TYPES:
        types, _ = _TYPES[base]
        ok = isinstance(value, types) and (base == "bool" or not isinstance(value, bool))
    else:  # composite fields (windows) are checked where they are parsed
        return
    if not ok:
        extra = " (or omit it)" if optional else ""
        raise ValueError(f"{_where(f.name)}: expected {_describe(base)}{extra}, "
                         f"got {value!r} ({type(value).__name__})")


def _describe(base: str) -> str:
    if base == "tuple[str,...]":
        return "a list of strings"
    return _TYPES[base][1] if base in _TYPES else base


def _number_pair(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{where}: expected a list of two numbers (eV relative to e0), got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        raise ValueError(f"{where}: expected [low, high] with low < high, got {value!r}")
    return lo, hi


def _window_override(edge: str, w: Any, source: str) -> WindowOverride:
    where = f"{source}: [windows.{edge}]"
    if not isinstance(w, dict):
        raise ValueError(f"{where}: expected a table with e0, pre, post, post_order, got {w!r} ({type(w).__name__})")
    bad = set(w) - {"e0", "pre", "post", "post_order"}
    if bad:
        raise ValueError(f"{where}: unknown key(s) {sorted(bad)}; known: e0, pre, post, post_order")
    e0 = w.get("e0")
    if e0 is not None and (not isinstance(e0, (int, float)) or isinstance(e0, bool) or not e0 > 0):
        raise ValueError(f"{where} e0: expected a positive number (eV), got {e0!r} ({type(e0).__name__})")
    return WindowOverride(
        edge, e0=None if e0 is None else float(e0),
        pre=_number_pair(w["pre"], f"{where} pre") if "pre" in w else None,
        post=_number_pair(w["post"], f"{where} post") if "post" in w else None,
        post_order=_post_order(w.get("post_order"), f"{where} post_order"))


def _post_order(value: Any, where: str) -> int | None:
    if value is not None and (isinstance(value, bool) or value not in (0, 1, 2)):
        raise ValueError(f"{where}: expected 0, 1 or 2 (post-edge polynomial order), got {value!r} "
                         f"({type(value).__name__})")
    return value


def _fields_by_section() -> dict[str, list[dataclasses.Field[Any]]]:
    sections: dict[str, list[dataclasses.Field[Any]]] = {}
    for f in fields(TxmLiveConfig):
        sections.setdefault(f.metadata["section"], []).append(f)
    return sections


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _to_toml(cfg: TxmLiveConfig) -> str:
    lines = ["# txm-live configuration (txm-live config --print). Omitted keys keep their defaults.", ""]
    for section, flds in _fields_by_section().items():
        if section == "windows":
            continue
        lines.append(f"[{section}]")
        for f in flds:
            value = getattr(cfg, f.name)
            text = f"{f.metadata['key']} = {_toml_value(value)}" if value is not None else f"# {f.metadata['key']} ="
            lines.append(f"{text:<40} # {f.metadata['help']}")
        lines.append("")
    try:
        windows = cfg.edge_windows()
    except (ImportError, ValueError) as exc:  # unknown element/edge: still print the rest, say why
        lines.append(f"# [windows.*]: no default windows for {cfg.element} {list(cfg.edges)}: {exc}")
        windows = ()
    for win in windows:
        lines.append(f"[windows.{win.edge}]                           # eV; pre/post relative to e0")
        lines.append(f"e0 = {_toml_value(win.e0)}")
        lines.append(f"pre = {_toml_value(list(win.pre))}")
        lines.append(f"post = {_toml_value(list(win.post))}")
        if win.post_order is not None:
            lines.append(f"post_order = {_toml_value(win.post_order)}")
        lines.append("")
    if not windows:
        lines += ["# [windows.K]                           # per-edge window overrides; need element and edges",
                  "# e0 = 7112.0                          # eV",
                  "# pre = [-150.0, -30.0]                # eV relative to e0",
                  "# post = [40.0, 200.0]",
                  "# post_order = 1                       # 0, 1 or 2: this edge's post-edge model", ""]
    return "\n".join(lines)


def _parse(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Flatten a parsed TOML document into TxmLiveConfig field values."""
    sections = _fields_by_section()
    values: dict[str, Any] = {}

    def take(section: str, table: Mapping[str, Any]) -> None:
        by_key = {f.metadata["key"]: f for f in sections.get(section, [])}
        for key, value in table.items():
            if isinstance(value, dict) and f"{section}.{key}" in sections:
                take(f"{section}.{key}", value)
                continue
            if key not in by_key:
                raise ValueError(f"{source}: unknown key {key!r} in [{section}]; known: {sorted(by_key)}")
            f = by_key[key]
            try:
                _check_type(f, value)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
            values[f.name] = tuple(value) if isinstance(value, list) else value

    for section, table in data.items():
        if section == "windows":
            if not isinstance(table, dict):
                raise ValueError(f"{source}: [windows] must be a table of edges, got {table!r}")
            values["windows"] = tuple(_window_override(edge, w, source) for edge, w in table.items())
        elif section in sections:
            if not isinstance(table, dict):
                raise ValueError(f"{source}: [{section}] must be a table (a [{section}] section), "
                                 f"got {section} = {table!r}")
            take(section, table)
        else:
            raise ValueError(f"{source}: unknown section [{section}]; known: {sorted(sections)}")
    return values


def default_toml() -> str:
    """The default configuration as TOML text."""
    return TxmLiveConfig().to_toml()


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> TxmLiveConfig:
    """Load a configuration from ``path`` (TOML) and apply keyword ``overrides``.

    Parameters
    ----------
    path : path-like, optional
        TOML file. Without it, the defaults are used.
    **overrides
        Field values of :class:`TxmLiveConfig` (e.g. ``out="run1"``, ``seed=3``); ``None``
        values are ignored so unset command-line flags never override the file.

    Returns
    -------
    TxmLiveConfig

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a TOML syntax error, an unknown section or key, or an invalid value (the message
        names the file and the key).
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{p}: invalid TOML: {exc}") from exc
        values = _parse(data, str(p))
    try:
        cfg = TxmLiveConfig(**values)
        if cfg.windows:  # an override that does not make a valid window is an error now, not later
            cfg.edge_windows()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}" if path is not None else str(exc)) from exc
    return cfg.replace(**overrides)
