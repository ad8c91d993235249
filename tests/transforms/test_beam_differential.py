"""liveagg's streaming panes against plain Beam's, on random TestStreams.

Each example is one TestStream (bundles of elements for up to three keys at event times
around the watermark, so early, on-time, late and too-late ones; watermark advances;
processing-time advances for early panes) and three views of it, fixed, sliding and session
windows, each with or without allowed lateness and early panes. One pipeline runs it through
plain Beam (``WindowInto`` with ``AfterWatermark(early=AfterProcessingTime(e),
late=AfterCount(1))``, accumulating, ``CombinePerKey(sum)``) and through
:class:`~liveagg.transforms.streaming.StreamingAggregate`, on Beam's Python DirectRunner
(:mod:`tests.support.beam_panes`). :func:`~tests.support.beam_panes.compare` then names every
difference: per (key, window) the panes (timing, index, elements, the step that caused them),
per element used by both, or dropped by Beam and a ``too_late`` dead letter in liveagg.

Differences of a known cause are allowed while the cause is listed: liveagg's known defects in
:data:`KNOWN_DEFECTS`, Beam's own quirks in :data:`BEAMS_OWN`. Anything else fails. Each known
defect also has a small stream that shows it (:data:`PINNED`), marked ``xfail(strict=True)``:
once a defect is fixed its pinned stream passes, the strict xfail fails, and the entry comes
out of :data:`KNOWN_DEFECTS`, which removes the mark and makes the random streams hold liveagg
to Beam there too.

Streams whose Beam branch stalls (:class:`~tests.support.beam_panes.BeamStalled`, a
watermark-hold leak of Beam's Python trigger driver around late sessions) are rejected: there
is nothing to compare against. liveagg alone must finish them.

Watermarks sit at half seconds and event times, window bounds and lateness at whole seconds:
at a watermark exactly at end + allowed lateness, Beam's Python driver keeps the element
(``input_watermark > window.end + self.allowed_lateness`` drops it, transforms/trigger.py) but
Beam's Java runners drop it (``LateDataDroppingDoFnRunner.canDropDueToExpiredWindow``:
``window.maxTimestamp().plus(allowedLateness).isBefore(inputWM)``), as liveagg does for a window
its key holds. The two Beams disagree there, so the streams leave that instant out.
"""

from __future__ import annotations

import contextlib
from copy import deepcopy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from tests.support.beam_panes import (
    BASE,
    BEAM_EARLY_TWICE,
    BEAM_STALE_SESSION,
    EARLY_PER_BUCKET,
    LATE_FIRST_PANE,
    SESSION_MERGE_INDEX,
    TOO_LATE_ACCEPTED,
    Action,
    BeamStalled,
    Mismatch,
    Run,
    Windowing,
    compare,
    run,
)

#: liveagg's known deviations from Beam, with the SPEC rule or Beam behaviour they break.
KNOWN_DEFECTS = {
    LATE_FIRST_PANE: (
        "SPEC 2: a pane's timing is LATE whenever the watermark had passed the window's end, "
        "even for the window's first pane; liveagg gives ON_TIME"
    ),
    TOO_LATE_ACCEPTED: (
        "SPEC 2: a message is too late when the watermark had passed its window's end plus "
        "allowed_lateness, whether or not its key held state for that window; liveagg uses it"
    ),
    SESSION_MERGE_INDEX: "Beam restarts pane_index at 0 after sessions merge; liveagg continues",
    EARLY_PER_BUCKET: (
        "Beam's AfterProcessingTime fires a window's EARLY pane emit.early after its first new "
        "element; liveagg's early timer is per state bucket and can fire sooner"
    ),
}
#: Differences that are Beam's (its Python DirectRunner's), not liveagg's: see beam_panes.
BEAMS_OWN = {BEAM_STALE_SESSION, BEAM_EARLY_TWICE}


class KnownDeviation(AssertionError):
    """liveagg differs from Beam only by known defects."""


def mismatches(result: Run, windowings: list[Windowing]) -> list[Mismatch]:
    return [m for w in windowings for m in compare(result, w)]


def assert_like_beam(found: list[Mismatch]) -> None:
    """Fails on any difference not of a known cause; raises :class:`KnownDeviation` for
    known defects of liveagg."""
    new = [m for m in found if m.kind not in KNOWN_DEFECTS and m.kind not in BEAMS_OWN]
    if new:
        raise AssertionError("liveagg differs from Beam:\n" + "\n".join(map(str, new)))
    known = [m for m in found if m.kind in KNOWN_DEFECTS]
    if known:
        raise KnownDeviation("known defects:\n" + "\n".join(map(str, known)))


# ---------------------------------------------------------------------------------------
# Random streams.

KEYS = ("a", "b", "c")


@st.composite
def windowings(draw: Any) -> list[Windowing]:
    lateness = st.sampled_from([0, 4, 12])
    early = st.sampled_from([None, 2, 5])
    return [
        Windowing(
            "fixed",
            "fixed",
            size=draw(st.sampled_from([5, 10])),
            lateness=draw(lateness),
            early=draw(early),
        ),
        Windowing(
            "sliding",
            "sliding",
            size=10,
            period=draw(st.sampled_from([4, 5])),
            lateness=draw(lateness),
            early=draw(early),
        ),
        Windowing(
            "session",
            "session",
            gap=draw(st.sampled_from([3, 6])),
            lateness=draw(lateness),
            early=draw(early),
        ),
    ]


@st.composite
def streams(draw: Any) -> list[Action]:
    """Bundles of 1-3 elements from -25s to +20s around the watermark, watermark advances of
    1-15s (to half seconds), processing-time advances of 1-6s."""
    keys = KEYS[: draw(st.integers(1, len(KEYS)))]
    wm = 0
    actions: list[Action] = [("watermark", BASE + 0.5)]
    for _ in range(draw(st.integers(2, 10))):
        kind = draw(st.sampled_from(["elements", "elements", "watermark", "clock"]))
        if kind == "elements":
            bundle = st.tuples(st.sampled_from(keys), st.integers(-25, 20))
            sent = draw(st.lists(bundle, min_size=1, max_size=3))
            actions.append(("elements", [(k, BASE + wm + d) for k, d in sent]))
        elif kind == "watermark":
            wm += draw(st.integers(1, 15))
            actions.append(("watermark", BASE + wm + 0.5))
        else:
            actions.append(("clock", draw(st.integers(1, 6))))
    return actions


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(views=windowings(), actions=streams())
def test_liveagg_panes_are_beams(views: list[Windowing], actions: list[Action]) -> None:
    try:
        result = run(actions, views)
    except BeamStalled:
        event("rejected: Beam stalls")
        reject()
    found = mismatches(result, views)
    for kind in sorted({m.kind for m in found}):
        event(kind)
    with contextlib.suppress(KnownDeviation):
        assert_like_beam(found)


# ---------------------------------------------------------------------------------------
# One small stream per known difference.


def _s(*actions: Action) -> list[Action]:
    """Actions with times in seconds after :data:`BASE`."""
    out: list[Action] = []
    for kind, arg in actions:
        if kind == "elements":
            arg = [(k, BASE + t) for k, t in arg]
        elif kind == "watermark":
            arg = BASE + arg
        out.append((kind, arg))
    return out


FIXED = Windowing("fixed", "fixed", size=10, lateness=30)
PINNED = {
    # [0, 10) has passed its end, not its end + lateness: Beam LATE#0, liveagg ON_TIME#0.
    LATE_FIRST_PANE: (FIXED, _s(("watermark", 20.5), ("elements", [("a", 5)]))),
    # [0, 10) has passed its end + lateness; key "a" never held it: Beam drops, liveagg uses.
    TOO_LATE_ACCEPTED: (
        Windowing("fixed", "fixed", size=10, lateness=0),
        _s(("watermark", 20.5), ("elements", [("a", 5)])),
    ),
    # [0, 5) fires, then merges into [0, 7): Beam LATE#0, liveagg LATE#1.
    SESSION_MERGE_INDEX: (
        Windowing("session", "session", gap=5, lateness=30),
        _s(("elements", [("a", 0)]), ("watermark", 10.5), ("elements", [("a", 2)])),
    ),
    # [0, 10) gets data at processing time 0, [10, 20) at 3: Beam fires their EARLY panes at
    # 5 and 8, liveagg both at 5.
    EARLY_PER_BUCKET: (
        Windowing("fixed", "fixed", size=10, early=5),
        _s(
            ("elements", [("a", 1)]),
            ("clock", 3),
            ("elements", [("a", 11)]),
            ("clock", 2),
            ("clock", 3),
        ),
    ),
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            kind,
            marks=pytest.mark.xfail(strict=True, raises=KnownDeviation, reason=why),
        )
        if (why := KNOWN_DEFECTS.get(kind))
        else kind
        for kind in PINNED
    ],
)
def test_pinned_stream(kind: str) -> None:
    """Each stream shows one difference, and nothing else."""
    w, actions = PINNED[kind]
    found = compare(run(actions, [w]), w)
    assert {m.kind for m in found} <= {kind}, "\n".join(map(str, found))
    assert_like_beam(found)


def test_beams_stale_session_is_named() -> None:
    """[0, 5) expires (end + lateness 9 < 9.5); 4's proto-session [4, 9) has not: Beam's
    Python driver merges them into [0, 9), Beam's Java runners and liveagg keep [4, 9)."""
    w = Windowing("session", "session", gap=5, lateness=4)
    actions = _s(("elements", [("a", 0)]), ("watermark", 9.5), ("elements", [("a", 4)]))
    found = compare(run(actions, [w]), w)
    assert [m.kind for m in found] == [BEAM_STALE_SESSION]


def test_beams_early_pane_twice_is_named() -> None:
    """[0, 6) and [6, 12) each arm an early timer; 2 merges them into [0, 12), and Beam's
    Python driver fires an EARLY pane for each timer: the same pane twice."""
    w = Windowing("session", "session", gap=6, early=2)
    actions = _s(
        ("elements", [("a", 0), ("a", 6)]),
        ("elements", [("a", 2)]),
        ("clock", 3),
    )
    found = compare(run(actions, [w]), w)
    assert [m.kind for m in found] == [BEAM_EARLY_TWICE]


def test_streams_both_agree_on() -> None:
    """Early, on-time, late and too-late panes where liveagg has no known defect."""
    views = [
        Windowing("fixed", "fixed", size=10, lateness=5, early=3),
        Windowing("sliding", "sliding", size=10, period=5, lateness=5, early=3),
        Windowing("session", "session", gap=4, lateness=5, early=3),
    ]
    actions = _s(
        ("watermark", 0.5),
        ("elements", [("a", 1), ("a", 2), ("b", 12)]),
        ("clock", 3),  # EARLY panes
        ("elements", [("a", 2)]),
        ("watermark", 11.5),  # ON_TIME panes of the windows of "a"
        ("elements", [("a", 2)]),  # late, within lateness: a LATE pane
        ("watermark", 30.5),
        ("elements", [("a", 0)]),  # too late: key "a" held its windows
    )
    result = run(actions, views)
    assert mismatches(result, views) == []
    fixed = result.views["fixed"]
    assert [(p.key, p.timing, p.index, sorted(p.idents)) for p in fixed.beam] == [
        ("a", "EARLY", 0, [0, 1]),
        ("b", "EARLY", 0, [0]),
        ("a", "ON_TIME", 1, [0, 1, 2]),
        ("a", "LATE", 2, [0, 1, 2, 3]),
        ("b", "ON_TIME", 1, [0]),
    ]
    assert fixed.too_late == {("a", 4)}


def test_a_difference_of_no_known_cause_fails() -> None:
    """The comparison catches a lost pane, a pane with the wrong elements, a dead letter for
    an element Beam used, and an element liveagg never sent."""
    w = Windowing("fixed", "fixed", size=10, lateness=5)
    actions = _s(("elements", [("a", 1)]), ("watermark", 10.5), ("elements", [("a", 2)]))
    result = run(actions, [w])
    assert compare(result, w) == []

    def tampered(change: Any) -> list[str]:
        copy = deepcopy(result)
        change(copy.views["fixed"])
        found = compare(copy, w)
        with pytest.raises(AssertionError) as failure:
            assert_like_beam(found)
        assert not isinstance(failure.value, KnownDeviation)
        return [str(m) for m in found]

    assert tampered(lambda out: out.liveagg.pop()) == [
        "unexplained: fixed 'a': a#1 at 2 (step 2) is neither used nor a dead letter",
        "unexplained: fixed 'a' [0, 10): beam ON_TIME@1[0] LATE@2[0, 1] | liveagg ON_TIME@1[0]",
    ]
    assert tampered(lambda out: out.liveagg.__setitem__(0, replace(out.liveagg[0], value=3))) == [
        "unexplained: fixed 'a' [0, 10): beam ON_TIME@1[0] LATE@2[0, 1] "
        "| liveagg ON_TIME@1[0, 1] LATE@2[0, 1]",
    ]
    assert tampered(lambda out: out.too_late.add(("a", 1))) == [
        "unexplained: fixed 'a': a#1 at 2 (step 2) is both used and too_late",
        "unexplained: fixed 'a': a#1 at 2 (step 2) is too_late, but Beam used it",
    ]
    assert tampered(lambda out: out.liveagg.__setitem__(1, replace(out.liveagg[1], value=7))) == [
        "unexplained: fixed 'a' [0, 10): liveagg holds element 2, which was never sent",
    ]
