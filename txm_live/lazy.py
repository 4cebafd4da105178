"""Lazy public names for a package: imported from their module on first use.

``import txm_live.callbacks`` and ``import txm_live.sim`` stay light (no bluesky, ophyd, tiled or
zmq) until one of their public names is used; both packages get their module ``__getattr__`` and
``__dir__`` from :func:`lazy_exports`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], module_globals: Mapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` (PEP 562) for lazily imported names.

    Parameters
    ----------
    package : str
        Name of the package the functions belong to (for the ``AttributeError`` message).
    exports : mapping of str to str
        Public name -> absolute name of the module that defines it.
    module_globals : mapping
        The package's ``globals()``, listed by ``__dir__`` next to the lazy names.

    Returns
    -------
    (__getattr__, __dir__)
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(module_globals) | set(exports))

    return __getattr__, __dir__
