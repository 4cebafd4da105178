"""Property-based fuzz test: hostile document streams never hurt the live callback.

Mutations of a valid small run (drop, duplicate, reorder documents; bad dtypes, shapes, energies
and pixel sizes; bad references; documents of a foreign run; non-dict documents; schema-invalid
start metadata; ragged event pages) are fed to a real :class:`XanesLiveCallback`. Properties:

* feeding, ``wait()`` and ``close()`` never raise and never hang (generous timeouts);
* no thread, process or shared-memory segment is left behind;
* every error is named (``"<TxmLiveError subclass>: ..."``);
* the run ends in a result whose phase map equals the unmutated run's, or that names an error
  (a mutation may not change the map silently); a run whose start was lost is reported in the
  callback's own errors.

Bounded for CI: 10x12-pixel frames, 14 energies, a deterministic stand-in analysis (the subject
is the ingest, not the clustering), 500 derandomized examples (about a minute on 2 cores).
"""

from __future__ import annotations

import copy
import os
import re
import threading
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import txm_live.cube as cube_module
import txm_live.errors as errors_module
import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.callbacks.live import XanesLiveCallback

H, W, ENERGIES, WINDOW, PIXEL_NM = helpers.H, helpers.W, helpers.ENERGIES, helpers.WINDOW, helpers.PIXEL_NM
make_run, step_analysis = helpers.make_run, helpers.step_analysis
ERROR_NAMES = set(errors_module.__all__)


CREATED_SEGMENTS: list[str] = []  # names of the shared-memory segments the cubes created


def _recording_segment(nbytes: int, _original=cube_module._reserved_segment):  # noqa: ANN001, ANN202
    shm = _original(nbytes)
    CREATED_SEGMENTS.append(shm.name)
    return shm


cube_module._reserved_segment = _recording_segment  # this module's tests only run the callback


def run_callback(docs: list[tuple[str, dict]]) -> XanesLiveCallback:
    # the cube in shared memory (as with the analysis process) to check it is always released
    cb = helpers.small_callback(switch_interval=None, session_options={"shared_memory": True})
    helpers.feed(cb, docs)
    return cb


BASE = make_run(0)
BASE_PAGES = make_run(0, pages=True)
FOREIGN = make_run(1)
_baseline = run_callback(BASE).results + run_callback(BASE_PAGES).results
assert len(_baseline) == 2 and all(r.errors == () and r.l3 is not None for r in _baseline), _baseline
np.testing.assert_array_equal(_baseline[0].l3.labels, _baseline[1].l3.labels)
BASE_LABELS = _baseline[0].l3.labels
assert CREATED_SEGMENTS or not os.path.isdir("/dev/shm"), "the cubes were not in shared memory"
assert len(np.unique(BASE_LABELS)) >= 3  # the map has structure a wrong frame would change


# ------------------------------------------------------------------------------- mutations
def _event_indices(docs, names=("event",)):
    return [i for i, (n, d) in enumerate(docs)
            if n in names and isinstance(d, dict) and isinstance(d.get("data"), dict)]


def _with_data(docs, i, **changes):
    name, doc = docs[i]
    doc = dict(doc)
    doc["data"] = dict(doc["data"], **changes)
    docs[i] = (name, doc)


BAD_IMAGES = [
    np.full((H, W), "x"), np.zeros((H, W - 1), np.uint16), np.zeros((H, W), bool), np.zeros((H, W), complex),
    np.zeros((2, H, W), np.uint16), np.full((H, W), np.nan), "not-a-datum", None, 7, [[1, 2], [3]],
]
BAD_ENERGIES = [float("nan"), float("inf"), None, "abc", -5.0, 1e9, [6200.0], {"x": 1}]
NON_DOCS = [None, [], "text", 42, ("a", "b"), b"bytes"]


def mutate(docs: list[tuple[str, dict]], op: tuple, data) -> list[tuple[str, dict]]:  # noqa: ANN001
    docs = list(docs)
    kind = op[0]
    n = len(docs)
    if kind == "drop":
        del docs[op[1] % n]
    elif kind == "duplicate":
        i = op[1] % n
        docs.insert(op[2] % (n + 1), docs[i])
    elif kind == "swap":
        i, j = op[1] % n, op[2] % n
        docs[i], docs[j] = docs[j], docs[i]
    elif kind == "image":
        evs = _event_indices(docs)
        if evs:
            i = evs[op[1] % len(evs)]
            if "camera_image" in docs[i][1]["data"]:
                _with_data(docs, i, camera_image=BAD_IMAGES[op[2] % len(BAD_IMAGES)])
    elif kind == "energy":
        evs = [i for i in _event_indices(docs) if "mono_energy" in docs[i][1]["data"]]
        if evs:
            _with_data(docs, evs[op[1] % len(evs)], mono_energy=BAD_ENERGIES[op[2] % len(BAD_ENERGIES)])
    elif kind == "pixel_size":
        evs = [i for i in _event_indices(docs) if "camera_pixel_size" in docs[i][1]["data"]]
        if evs:
            _with_data(docs, evs[op[1] % len(evs)], camera_pixel_size=PIXEL_NM * (10.0, 0.1, -1.0, 0.0)[op[2] % 4])
    elif kind == "reference":
        i = op[1] % n
        name, doc = docs[i]
        if not isinstance(doc, dict):
            return docs
        field = {"event": "descriptor", "event_page": "descriptor", "descriptor": "run_start",
                 "stop": "run_start", "start": "uid"}.get(name)
        if field is not None:
            docs[i] = (name, dict(doc, **{field: (str(uuid.uuid4()), None, 5)[op[2] % 3]}))
    elif kind == "missing_key":
        i = op[1] % n
        name, doc = docs[i]
        if not isinstance(doc, dict):
            return docs
        keys = sorted(doc)
        if keys:
            doc = dict(doc)
            del doc[keys[op[2] % len(keys)]]
            docs[i] = (name, doc)
    elif kind == "foreign":
        pos = op[1] % (n + 1)
        if op[2] % 2:  # a whole foreign run before or after the target run
            docs = FOREIGN + docs if pos < n // 2 else docs + FOREIGN
        else:  # stray foreign documents inside the run
            docs[pos:pos] = [FOREIGN[k % len(FOREIGN)] for k in range(op[2] % 5 + 1)]
    elif kind == "non_dict":
        i = op[1] % n
        docs[i] = (docs[i][0], NON_DOCS[op[2] % len(NON_DOCS)])
    elif kind == "bad_name":
        docs.insert(op[1] % (n + 1), (("nonsense", "", None, 3)[op[2] % 4], {"uid": "x"}))
    elif kind == "start_md":
        name, doc = docs[0]
        if name == "start" and isinstance(doc, dict):
            bad = ({"scan_id": "abc"}, {"scan_id": -3.5}, {"sample": 12}, {"txm_live": "nope"},
                   {"txm_live": {"energies": "abc"}}, {"txm_live": {"image_shape": [0, -1]}},
                   {"txm_live": {"pixel_size_nm": "big"}}, {"time": "yesterday"})[op[2] % 8]
            docs[0] = (name, dict(doc, **bad))
    elif kind == "ragged":
        pages = _event_indices(docs, ("event_page",))
        if pages:
            i = pages[op[1] % len(pages)]
            page = copy.copy(docs[i][1])
            key = sorted(page["data"])[op[2] % len(page["data"])]
            page["data"] = dict(page["data"], **{key: list(page["data"][key])[:-1]})
            docs[i] = ("event_page", page)
    return docs


KINDS = ["drop", "duplicate", "swap", "image", "energy", "pixel_size", "reference", "missing_key", "foreign",
         "non_dict", "bad_name", "start_md", "ragged"]
ops = st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000), st.integers(0, 10_000))


def _leaked_segments() -> list[str]:
    """Segments created by the cubes that still exist (other processes' segments do not count)."""
    return [name for name in CREATED_SEGMENTS if os.path.exists(os.path.join("/dev/shm", name.lstrip("/")))]


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pages=st.booleans(), mutations=st.lists(ops, min_size=1, max_size=3), data=st.data())
def test_hostile_document_streams_never_hurt_the_callback(pages, mutations, data):
    docs = BASE_PAGES if pages else BASE
    target_uid = docs[0][1]["uid"]
    for op in mutations:
        docs = mutate(docs, op, data)
    snapshot = copy.deepcopy(docs)
    threads = set(threading.enumerate())
    CREATED_SEGMENTS.clear()

    cb = run_callback(docs)  # neither feeding, wait() nor close() raises; timeouts bound a hang

    assert set(threading.enumerate()) <= threads, "threads left behind"
    assert _leaked_segments() == [], "shared memory left behind"
    for (n1, d1), (n2, d2) in zip(docs, snapshot):  # documents are never mutated
        assert n1 == n2
        if isinstance(d1, dict):
            assert d1.keys() == d2.keys()
    named = list(cb.errors)
    for r in cb.results:
        named += list(r.errors)
    for msg in named:  # "Name: ..." or, for repeated errors, "Name xN: <first message>"
        assert re.sub(r" x\d+$", "", msg.split(":", 1)[0]) in ERROR_NAMES, msg
    target = [r for r in cb.results if r.run_uid == target_uid]
    if not target:
        assert cb.errors, "the run vanished without an error"
        return
    for r in target:
        if not r.errors:
            assert r.l3 is not None, "no map and no error"
            np.testing.assert_array_equal(r.l3.labels, BASE_LABELS, err_msg="map changed silently")
