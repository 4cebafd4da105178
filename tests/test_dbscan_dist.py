"""Distributed exact DBSCAN (``txm_live.dbscan(..., client=)``) on a real LocalCluster equals the
single-process engine and scikit-learn, label for label, border points across slabs included.

One LocalCluster per module (2 worker processes, 1 thread each, 127.0.0.1, dashboard off).
"""

from __future__ import annotations

import numpy as np
import pytest
import txm_live_test_helpers as helpers

pytest.importorskip("distributed")

from txm_live.dbscan import dbscan  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with helpers.local_client(2) as c:
        yield c


def _contested_borders(units: int, ms: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points along x (eps = 0.4): every 2.0 a unit of two clusters A and B, each a blob of ``ms``
    points plus a core "tip" 0.35 from a lone border point between them (0.7 from each other).
    The border point is within eps of both tips and of nothing else (3 neighbours < ms), so it
    is a border point reachable from two clusters: it must join the lower-numbered one.
    Returns the shuffled points and the positions of the border points and of the two tips.
    """
    rng = np.random.default_rng(seed)
    rows, kind = [], []
    for k in range(units):
        x0 = 2.0 * k
        for side in (-1.0, 1.0):
            rows.append(np.column_stack([np.full(ms, x0 + 0.7 * side), rng.uniform(-5e-3, 5e-3, (ms, 2))]))
            kind += ["blob"] * ms
            rows.append([[x0 + 0.35 * side, 0.0, 0.0]])
            kind.append("tipA" if side < 0 else "tipB")
        rows.append([[x0, 0.0, 0.0]])
        kind.append("border")
    X = np.concatenate([np.asarray(r, dtype=np.float64) for r in rows])
    kind = np.asarray(kind)
    perm = rng.permutation(len(X))  # which of A and B has the lower first index varies
    X, kind = X[perm], kind[perm]
    return X, np.flatnonzero(kind == "border"), np.flatnonzero(kind == "tipA"), np.flatnonzero(kind == "tipB")


def test_a_million_points_on_two_workers_equal_the_single_engine(client) -> None:
    from txm_live.dbscan_dist import dbscan_distributed

    eps, ms = 0.15, 8
    X = helpers.blobs(1_000_000, 3, seed=7)
    ref, ref_core = dbscan(X, eps=eps, min_samples=ms, return_core=True)
    got, core, prof = dbscan_distributed(X, eps=eps, min_samples=ms, client=client, return_core=True,
                                         return_profile=True)
    assert ref.max() >= 10 and (ref < 0).any()  # many clusters, noise and border points
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(core, ref_core)
    # one slab per worker thread, each on its own worker; every point owned once
    assert len(prof.slabs) == 2 and len({s.worker for s in prof.slabs}) == 2
    assert sum(s.owned for s in prof.slabs) == X.shape[0]
    assert sum(s.points for s in prof.slabs) == round(X.shape[0] * (1 + prof.halo_fraction))
    assert 0 < prof.halo_fraction < 0.15  # one cut, 4 eps wide, at a sparse plane
    assert prof.bytes_to_workers >= X.nbytes
    # many slabs: clusters cut several times
    five = dbscan_distributed(X, eps=eps, min_samples=ms, client=client, n_partitions=5, return_profile=True)
    np.testing.assert_array_equal(five[0], ref)
    assert len(five[1].slabs) == 5


def test_border_points_reachable_from_two_slabs_join_the_lower_cluster(client, monkeypatch) -> None:
    """Border points whose two core neighbours (of different clusters) lie on both sides of a
    slab cut: cuts between the left tip and the border point, exactly at the border point (it
    then belongs to the right slab) and between the border point and the right tip. The label is
    the lower-numbered cluster, as in scikit-learn and the single engine. The cuts are placed
    there on purpose (the automatic ones avoid such dense planes), then the automatic ones."""
    from sklearn.cluster import DBSCAN

    import txm_live.dbscan_dist as dd

    ms = 5
    X, border, tip_a, tip_b = _contested_borders(units=90, ms=ms, seed=4)
    ref = DBSCAN(eps=0.4, min_samples=ms).fit_predict(X)
    np.testing.assert_array_equal(dbscan(X, eps=0.4, min_samples=ms), ref)
    border, tip_a, tip_b = (i[np.argsort(X[i, 0])] for i in (border, tip_a, tip_b))  # unit by unit
    xb, xa, xt = X[border, 0], X[tip_a, 0], X[tip_b, 0]
    np.testing.assert_array_equal(ref[border], np.minimum(ref[tip_a], ref[tip_b]))
    assert (ref[tip_a] != ref[tip_b]).all() and (ref[border] >= 0).all()
    assert (ref[tip_a] < ref[tip_b]).any() and (ref[tip_a] > ref[tip_b]).any()  # both sides win somewhere
    # every third unit cut at one of: left tip | border (-0.1), at the border, border | right tip (+0.1)
    cuts = np.asarray([xb[k] + (-0.1, 0.0, 0.1)[(k // 3) % 3] for k in range(1, xb.size - 1, 3)])
    assert ((xa[1:-1:3] < cuts) & (cuts <= xt[1:-1:3])).all()
    monkeypatch.setattr(dd, "_boundaries", lambda x, n_parts, h, rng: cuts)
    got, prof = dd.dbscan_distributed(X, eps=0.4, min_samples=ms, client=client, return_profile=True)
    assert len(prof.slabs) == cuts.size + 1
    np.testing.assert_array_equal(got, ref)
    monkeypatch.undo()
    for parts in (2, 5):
        np.testing.assert_array_equal(dd.dbscan_distributed(X, eps=0.4, min_samples=ms, client=client,
                                                            n_partitions=parts), ref)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_small_sets_equal_sklearn_for_any_number_of_slabs(client, d) -> None:
    from sklearn.cluster import DBSCAN

    from txm_live.dbscan_dist import dbscan_distributed

    rng = np.random.default_rng(d)
    X = helpers.blobs(3000, d, seed=d)
    X[:200] = np.round(X[:200], 1)  # duplicated coordinates, some exactly on grid planes
    for eps, ms in ((0.3, 4), (0.8, 12)):
        ref = DBSCAN(eps=eps, min_samples=ms).fit_predict(X)
        for parts in (1, 2, int(rng.integers(3, 9))):
            got, core = dbscan_distributed(X, eps=eps, min_samples=ms, client=client, n_partitions=parts,
                                           return_core=True)
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(core, DBSCAN(eps=eps, min_samples=ms).fit(X).core_sample_indices_)


def test_degenerate_inputs(client) -> None:
    import txm_live
    from txm_live.dbscan_dist import dbscan_distributed

    X = helpers.blobs(500, 2, seed=1)
    np.testing.assert_array_equal(txm_live.dbscan(X, eps=0.5, min_samples=5, client=client),
                                  dbscan(X, eps=0.5, min_samples=5))  # the public entry point
    # fewer points than min_samples; eps wider than the data (one slab); nothing dense
    np.testing.assert_array_equal(dbscan_distributed(X[:3], eps=0.5, min_samples=5, client=client), [-1] * 3)
    labels, core = dbscan_distributed(X[:0], eps=0.5, min_samples=5, client=client, return_core=True)
    assert labels.shape == core.shape == (0,)
    np.testing.assert_array_equal(dbscan_distributed(X, eps=100.0, min_samples=5, client=client), np.zeros(500))
    np.testing.assert_array_equal(dbscan_distributed(X, eps=1e-6, min_samples=3, client=client), -np.ones(500))
    with pytest.raises(ValueError, match="n_partitions"):
        dbscan_distributed(X, eps=0.5, min_samples=5, client=client, n_partitions=0)
    with pytest.raises(ValueError, match="eps"):
        dbscan_distributed(X, eps=-1.0, min_samples=5, client=client)
