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

Differences of a known cause are allowed while the cause is listed: liveagg's documented
deviations in :data:`DEVIATIONS`, Beam's own quirks in :data:`BEAMS_OWN`. Anything else
fails, including the defects the operator once had (a late first pane ``ON_TIME``, a too-late
message used because its key held no state, ``pane_index`` going on after a session merge,
``EARLY`` panes sooner than ``emit.early`` after a key's first data): each has a small
stream that must match Beam exactly (:data:`MATCHING`), and each deviation and quirk a small
stream that shows it and nothing else.

Two of the keys, ``a`` and ``q``, share a state bucket, so the bucket's shared timers are
exercised; ``b`` has a bucket of its own.

Streams whose Beam branch stalls (:class:`~tests.support.beam_panes.BeamStalled`, a
watermark-hold leak of Beam's Python trigger driver around late sessions) are rejected: there
is nothing to compare against. liveagg alone must finish them.

Watermarks sit at half seconds and event times, window bounds and lateness at whole seconds:
at a watermark exactly at end + allowed lateness, Beam's Python driver keeps the element
(``input_watermark > window.end + self.allowed_lateness`` drops it, transforms/trigger.py) but
Beam's Java runners drop it (``LateDataDroppingDoFnRunner.canDropDueToExpiredWindow``:
``window.maxTimestamp().plus(allowedLateness).isBefore(inputWM)``), as liveagg does. The two
Beams disagree there, so the streams leave that instant out.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from liveagg.transforms.plan import encode_key
from liveagg.transforms.windowstate import bucket_of
from tests.support.beam_panes import (
    BASE,
    BEAM_EARLY_TWICE,
    BEAM_STALE_SESSION,
    WATERMARK_FLOOR_LAG,
    Action,
    BeamStalled,
    Mismatch,
    Pane,
    Run,
    Windowing,
    compare,
    floors,
    run,
)

#: liveagg's documented deviations from Beam, with where they are documented and why.
DEVIATIONS = {
    WATERMARK_FLOOR_LAG: (
        "docs/semantics.md, Too late: a stateful DoFn sees the watermark only through the "
        "timers it fires, so data for a window its key holds no state for is judged on the "
        "latest timer the operator fired, which lags the watermark until the next one fires"
    ),
}
#: Differences that are Beam's (its Python DirectRunner's), not liveagg's: see beam_panes.
BEAMS_OWN = {BEAM_STALE_SESSION, BEAM_EARLY_TWICE}


def mismatches(result: Run, windowings: list[Windowing]) -> list[Mismatch]:
    return [m for w in windowings for m in compare(result, w)]


def assert_like_beam(found: list[Mismatch]) -> None:
    """Fails on any difference that is neither a documented deviation nor Beam's own."""
    new = [m for m in found if m.kind not in DEVIATIONS and m.kind not in BEAMS_OWN]
    if new:
        raise AssertionError("liveagg differs from Beam:\n" + "\n".join(map(str, new)))


# ---------------------------------------------------------------------------------------
# Random streams.

#: "a" and "q" share a state bucket (and its timers); "b" has its own.
KEYS = ("a", "q", "b")
#: A key with an element before each watermark advance, in some streams (:func:`streams`).
STEADY = "z"


def test_two_keys_share_a_bucket() -> None:
    """What :data:`KEYS` says of them; a change of the bucket function shows here."""
    a, q, b = (bucket_of(encode_key((k,))) for k in KEYS)
    assert a == q != b


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
    1-15s (to half seconds), processing-time advances of 1-6s.

    In half the streams a steady key, :data:`STEADY`, sends one element 1s before each
    watermark advance reaches: its windows close as the watermark moves, so the operator's
    timers fire and its floor follows the watermark, and late data is judged on a floor that
    knows (without it, most late data comes before any timer has fired: the floor's lag)."""
    keys = KEYS[: draw(st.integers(1, len(KEYS)))]
    steady = draw(st.booleans())
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
            if steady:
                actions.append(("elements", [(STEADY, BASE + wm - 1)]))
            actions.append(("watermark", BASE + wm + 0.5))
        else:
            actions.append(("clock", draw(st.integers(1, 6))))
    return actions


@settings(
    max_examples=400,
    derandomize=False,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
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
    assert_like_beam(found)


# ---------------------------------------------------------------------------------------
# Small streams: the rules liveagg once broke, and each named difference.


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
#: Streams where liveagg and Beam must give the same panes and drop the same elements.
MATCHING = {
    # Key "b" fires [0, 10) at 20.5, so the operator knows the watermark passed 10: "a"
    # opens [0, 10) late, LATE#0 in both.
    "late_first_pane": (
        FIXED,
        _s(("elements", [("b", 1)]), ("watermark", 20.5), ("elements", [("a", 5)])),
    ),
    # "b"'s [10, 20) expires at 20.5 (no lateness): "a" never held [0, 10), and its message
    # is too late all the same: Beam drops it, liveagg dead-letters it.
    "too_late_without_state": (
        Windowing("fixed", "fixed", size=10),
        _s(("elements", [("b", 11)]), ("watermark", 20.5), ("elements", [("a", 5)])),
    ),
    # [0, 5) fires, then merges into [0, 7): LATE#0 in both.
    "session_merge_index": (
        Windowing("session", "session", gap=5, lateness=30),
        _s(("elements", [("a", 0)]), ("watermark", 10.5), ("elements", [("a", 2)])),
    ),
    # [0, 10) gets data at processing time 0, [10, 20) at 3: EARLY panes at 5 and 8.
    "early_per_window": (
        Windowing("fixed", "fixed", size=10, early=5),
        _s(
            ("elements", [("a", 1)]),
            ("clock", 3),
            ("elements", [("a", 11)]),
            ("clock", 2),
            ("clock", 3),
        ),
    ),
    # "a" and "q" share a bucket and [0, 10): "a"'s data at 0, "q"'s at 3; EARLY panes at 5
    # for "a" alone and at 8 for "q".
    "early_per_key": (
        Windowing("fixed", "fixed", size=10, early=5),
        _s(
            ("elements", [("a", 1)]),
            ("clock", 3),
            ("elements", [("q", 2)]),
            ("clock", 2),
            ("clock", 3),
        ),
    ),
}


@pytest.mark.parametrize("name", MATCHING)
def test_a_stream_both_agree_on(name: str) -> None:
    w, actions = MATCHING[name]
    result = run(actions, [w])
    assert [str(m) for m in compare(result, w)] == []
    out = result.views[w.name]
    assert out.beam, "the stream shows nothing"
    if name == "too_late_without_state":
        assert out.too_late == {("a", 0)}


def test_the_floor_lags_until_a_timer_fires() -> None:
    """No timer has fired: the operator cannot know that the watermark passed [0, 10)'s
    end + 30 or [10, 20)'s end. "a" at 5 is used where Beam drops it, "q" at 15 opens its
    window ON_TIME where Beam gives LATE. Their timers then fire at once, and "b" at 6, in a
    bucket that never held [0, 10), is too late."""
    actions = _s(
        ("watermark", 40.5),
        ("elements", [("a", 5), ("q", 15)]),
        ("elements", [("b", 6)]),
    )
    result = run(actions, [FIXED])
    found = compare(result, FIXED)
    assert sorted((m.kind, m.key, m.window) for m in found) == [
        (WATERMARK_FLOOR_LAG, "a", (BASE * 10**6, (BASE + 10) * 10**6)),
        (WATERMARK_FLOOR_LAG, "q", ((BASE + 10) * 10**6, (BASE + 20) * 10**6)),
    ]
    assert_like_beam(found)
    assert floors(result, FIXED)[2] == (BASE + 40) * 10**6 - 1  # [0, 10)'s expiry
    assert result.views["fixed"].too_late == {("b", 0)}


def test_the_rules_liveagg_once_broke_are_caught() -> None:
    """Where the floor knew the watermark had passed, a late first pane ``ON_TIME`` and a
    too-late message used are defects, not the floor's lag."""
    w, actions = MATCHING["late_first_pane"]
    result = run(actions, [w])
    (late,) = [i for i, p in enumerate(result.views["fixed"].liveagg) if p.key == "a"]

    def on_time(out: Any) -> None:
        out.liveagg[late] = replace(out.liveagg[late], timing="ON_TIME")

    assert tampered(result, w, on_time) == [
        "late_first_pane: fixed 'a' [0, 10): beam LATE@2[0] | liveagg ON_TIME@2[0]"
    ]
    w, actions = MATCHING["too_late_without_state"]
    result = run(actions, [w])

    def used(out: Any) -> None:
        out.too_late.clear()
        window = (BASE * 10**6, (BASE + 10) * 10**6)
        out.liveagg.append(Pane("a", window, "ON_TIME", 0, 1, 2))

    assert tampered(result, w, used) == [
        "too_late_accepted: fixed 'a' [0, 10): used, too late for Beam: a#0 at 5 (step 2)"
    ]


def tampered(result: Run, w: Windowing, change: Any) -> list[str]:
    """The mismatches found once ``change`` has altered liveagg's outcome; they must fail."""
    copy = deepcopy(result)
    change(copy.views[w.name])
    found = compare(copy, w)
    with pytest.raises(AssertionError, match="liveagg differs from Beam"):
        assert_like_beam(found)
    return [str(m) for m in found]


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
    """Early, on-time, late and too-late panes on all three windowings."""
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

    assert tampered(result, w, lambda out: out.liveagg.pop()) == [
        "unexplained: fixed 'a': a#1 at 2 (step 2) is neither used nor a dead letter",
        "unexplained: fixed 'a' [0, 10): beam ON_TIME@1[0] LATE@2[0, 1] | liveagg ON_TIME@1[0]",
    ]
    assert tampered(
        result, w, lambda out: out.liveagg.__setitem__(0, replace(out.liveagg[0], value=3))
    ) == [
        "unexplained: fixed 'a' [0, 10): beam ON_TIME@1[0] LATE@2[0, 1] "
        "| liveagg ON_TIME@1[0, 1] LATE@2[0, 1]",
    ]
    assert tampered(result, w, lambda out: out.too_late.add(("a", 1))) == [
        "unexplained: fixed 'a': a#1 at 2 (step 2) is both used and too_late",
        "unexplained: fixed 'a': a#1 at 2 (step 2) is too_late, but Beam used it",
    ]
    assert tampered(
        result, w, lambda out: out.liveagg.__setitem__(1, replace(out.liveagg[1], value=7))
    ) == [
        "unexplained: fixed 'a' [0, 10): liveagg holds element 2, which was never sent",
    ]
