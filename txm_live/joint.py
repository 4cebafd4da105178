"""Joint normalization of overlapping edges: moving a normalization to another edge's e0.

:func:`txm_live.edges.join_windows` lets an edge (e.g. Fe L2, whose pre-edge is the L3 white-line
tail) be normalized with the ranges of the lowest edge of its group (Fe L3): one pre-edge line
below the group and one edge step, so ``norm = (mu - pre_line(E)) / step`` is one curve across
the group. The normalization is computed at the lowest edge's e0;
:func:`rebase_normalized` re-expresses its per-pixel polynomials about the analysed edge's own
e0, so that everything downstream (``c0 + c1 (E - e0)`` with the window's e0) holds unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from math import comb

import numpy as np

from txm_live.normalize import Normalized

__all__ = ["rebase_normalized"]


def rebase_normalized(nz: Normalized, e0: float) -> Normalized:
    """The same normalization with its polynomials written about ``e0`` instead of ``nz.e0``.

    Parameters
    ----------
    nz : Normalized
        A normalization computed at ``nz.e0`` (its ``norm``, ``edge_step`` and errors are kept).
    e0 : float
        New reference energy (eV).

    Returns
    -------
    Normalized
        ``e0`` replaced; ``pre_coefficients`` such that ``c0' + c1 (E - e0)`` is the same line;
        for ``method="athena"`` the post-edge polynomial re-expanded about ``e0`` (binomial
        shift), so :meth:`~txm_live.normalize.Normalized.post_edge_line` is unchanged. The
        ``edge_step`` stays the step evaluated at the original ``nz.e0``.

    Notes
    -----
    Vectorized over pixels (a few multiply-adds per coefficient); the dtypes are kept.
    """
    e0 = float(e0)
    if not np.isfinite(e0):
        raise ValueError(f"e0 must be finite, got {e0!r}")
    d = e0 - float(nz.e0)  # x_old = x_new + d
    if d == 0.0:
        return nz
    pre = nz.pre_coefficients.copy()
    pre[0] = nz.pre_coefficients[0] + nz.pre_coefficients[1] * pre.dtype.type(d)
    post = nz.post_coefficients
    if nz.method == "athena":
        old = np.asarray(post, dtype=np.float64)
        new = np.zeros_like(old)
        n = old.shape[0]
        for k in range(n):  # sum_k c_k (x + d)^k = sum_j (sum_{k>=j} c_k C(k, j) d^(k-j)) x^j
            for j in range(k + 1):
                new[j] += old[k] * (comb(k, j) * d ** (k - j))
        post = new.astype(post.dtype)
    return replace(nz, e0=e0, pre_coefficients=pre, post_coefficients=post)
