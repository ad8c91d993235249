"""Beam's own trigger transcripts, run through liveagg's streaming operator.

Beam specifies its triggers with transcripts, ``apache_beam/testing/data/trigger_transcripts.yaml``
in the SDK, read here from the installed package. A transcript gives a WindowFn, a trigger, an
accumulation mode, allowed lateness and a list of actions (``input``, ``watermark``,
``clock``), some followed by an ``expect``: the panes that action must emit. Beam's
``TestStreamTranscriptTest`` (apache_beam/transforms/trigger_test.py,
``BaseTestStreamTranscriptTest._execute``) turns each into a TestStream: every input goes to
each of two keys (six for the ``Default`` trigger in accumulating mode, with the input in
different orders and bundles), an action without ``expect`` must emit nothing, and each key's
panes are matched by ``_windowed_value_info_check``. This module does the same through
:class:`~liveagg.transforms.streaming.StreamingAggregate`, with that very check, on a view
that sums ``2 ** i`` over its messages so that each pane names its elements exactly.

A transcript applies (:func:`inapplicable` says why not) when

* its WindowFn is ``FixedWindows``, ``SlidingWindows`` or ``Sessions``;
* its trigger is liveagg's, ``AfterWatermark(early=AfterProcessingTime(e), late=AfterCount(1))``
  with or without ``early``, or ``Default``: ``DefaultTrigger`` fires when the watermark passes
  the end of the window and then on every late bundle (transforms/trigger.py,
  ``DefaultTrigger.should_fire``: ``watermark >= window.end`` in any time domain), which is
  ``AfterWatermark(late=AfterCount(1))``;
* its accumulation mode is ``accumulating`` (the transcripts' default);
* it has no ``state`` action (those inspect Beam's internal state).

Attributes liveagg rows do not carry are not compared: ``timestamp`` (the timestamp combiner
plays no part), ``final`` and ``nonspeculative_index``. Beam's check ignores an expected
attribute that the actual pane lacks.

``fixed_drop_late_data_after_allowed_lateness`` is adapted: its trigger is
``AfterWatermark(early=AfterCount(3), late=AfterCount(1))``, but no window holds 3 elements
before the watermark passes its end, so it runs without early panes. Every transcript also
runs through plain Beam with liveagg's trigger in the same pipeline
(:mod:`tests.support.beam_panes`), and Beam's panes must meet the transcript too: that shows
the adaptation, and ``Default`` as ``AfterWatermark(late=AfterCount(1))``, change nothing.
Beyond the transcript, liveagg's panes and ``too_late`` dead letters must equal Beam's
(:func:`~tests.support.beam_panes.compare`): the late inputs this transcript drops are dead
letters in liveagg.

The transcripts whose ``error`` says how a wrong expectation fails check the check: both
branches must fail them with that message.

Inapplicable (:data:`INAPPLICABLE`): the custom WindowFn transcripts (their point is the
output timestamp), ``early_late_sessions`` (``early=AfterCount(2)``, ``late=AfterCount(3)``),
``discarding_early_fixed`` (discarding mode, ``early=AfterCount(2)``), ``garbage_collection``
(``AfterCount(2)``, discarding, ``state``) and ``bad_output`` (its ``windowfn`` key is
misspelt, so it runs in the global window, which liveagg has not). No sliding or session
transcript applies.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import apache_beam
import pytest
import yaml
from apache_beam.transforms.trigger_test import _windowed_value_info_check

from tests.support.beam_panes import Action, Pane, Run, Windowing, compare, run

TRANSCRIPTS = Path(apache_beam.__file__).parent / "testing" / "data" / "trigger_transcripts.yaml"

#: Transcripts run with liveagg's trigger in place of theirs, and why that changes nothing.
ADAPTED = {
    "fixed_drop_late_data_after_allowed_lateness": (
        "its early AfterCount(3) never fires: no window holds 3 elements before the watermark "
        "passes its end"
    ),
}

_WINDOW_FNS = [
    (r"FixedWindows\((\d+)\)", lambda m: {"kind": "fixed", "size": int(m[1])}),
    (
        r"SlidingWindows\((\d+),\s*(\d+)\)",
        lambda m: {"kind": "sliding", "size": int(m[1]), "period": int(m[2])},
    ),
    (r"Sessions\((\d+)\)", lambda m: {"kind": "session", "gap": int(m[1])}),
]
_LIVEAGG_TRIGGER = re.compile(
    r"AfterWatermark\((?:early=AfterProcessingTime\((\d+)\),\s*)?late=AfterCount\(1\)\)"
)


def load() -> list[dict[str, Any]]:
    with TRANSCRIPTS.open() as f:
        return list(yaml.safe_load_all(f))


def inapplicable(spec: dict[str, Any]) -> str | None:
    """Why liveagg cannot run the transcript, or None if it can (see the module doc)."""
    window_fn = spec.get("window_fn", "GlobalWindows")
    if not any(re.fullmatch(p, window_fn) for p, _ in _WINDOW_FNS):
        return f"window_fn {window_fn}"
    trigger = spec.get("trigger_fn", "Default")
    adapted = spec["name"] in ADAPTED
    if trigger != "Default" and not _LIVEAGG_TRIGGER.fullmatch(trigger) and not adapted:
        return f"trigger {trigger}"
    mode = spec.get("accumulation_mode", "accumulating")
    if mode != "accumulating":
        return f"accumulation_mode {mode}"
    if any("state" in action for action in spec["transcript"]):
        return "inspects Beam's state"
    return None


#: Every transcript that does not apply, with why (checked against :func:`inapplicable`).
_CUSTOM = "window_fn CustomTimestampingFixedWindowsWindowFn(10)"
INAPPLICABLE = {
    "timestamp_combiner_custom_timestamping_eow": _CUSTOM,
    "timestamp_combiner_custom_timestamping_earliest": _CUSTOM,
    "early_late_sessions": "trigger AfterWatermark(early=AfterCount(2), late=AfterCount(3))",
    "discarding_early_fixed": "trigger AfterWatermark(early=AfterCount(2))",
    "garbage_collection": "trigger AfterCount(2)",
    "bad_output": "window_fn GlobalWindows",
}
APPLICABLE = [s for s in load() if inapplicable(s) is None]


def windowing(spec: dict[str, Any]) -> Windowing:
    """The transcript's windowing, with liveagg's trigger (early panes if it has them)."""
    match = _LIVEAGG_TRIGGER.fullmatch(spec.get("trigger_fn", "Default"))
    early = int(match[1]) if match and match[1] else None
    lateness = spec.get("allowed_lateness", 0)
    for pattern, fields in _WINDOW_FNS:
        m = re.fullmatch(pattern, spec["window_fn"])
        if m:
            return Windowing("transcript", lateness=lateness, early=early, **fields(m))
    raise ValueError(f"{spec['name']}: window_fn {spec['window_fn']}")


def keys_and_bundles(spec: dict[str, Any], values: list[int]) -> list[list[tuple[str, int]]]:
    """The bundles one ``input`` sends, as Beam's harness sends them: to two keys, or for
    the ``Default`` trigger in accumulating mode, to six keys in different orders and
    bundles (``BaseTestStreamTranscriptTest._execute``; a fixed shuffle here)."""
    if spec.get("trigger_fn", "Default") != "Default":
        return [[(key, v) for v in values] for key in ("key1", "key2")]
    shuffled = list(values)
    random.Random(0).shuffle(shuffled)
    return [
        [("original", v) for v in values],
        [("reversed", v) for v in reversed(values)],
        [("reshuffled", v) for v in shuffled],
        *([("one-element-bundles", v)] for v in values),
        *([("one-element-bundles-reversed", v)] for v in reversed(values)),
        *(
            [("two-element-bundles", v) for v in values[i : i + 2]]
            for i in range(0, len(values), 2)
        ),
    ]


def to_stream(spec: dict[str, Any]) -> tuple[list[Action], list[tuple[list[int], list]]]:
    """The transcript as stream actions, and per action its steps and the panes it expects
    (an action without ``expect`` expects none, as in Beam's harness)."""
    actions: list[Action] = []
    checks: list[tuple[list[int], list]] = []
    for entry in spec["transcript"]:
        ((kind, arg),) = entry.items()
        if kind == "expect":
            checks[-1] = (checks[-1][0], arg)
            continue
        first = len(actions)
        if kind == "input":
            actions += [("elements", bundle) for bundle in keys_and_bundles(spec, arg)]
        elif kind == "watermark":
            actions.append(("watermark", arg))
        elif kind == "clock":
            actions.append(("clock", arg))
        else:
            raise ValueError(f"{spec['name']}: unknown action {kind!r}")
        checks.append((list(range(first, len(actions))), []))
    return actions, checks


def info(pane: Pane, times: dict[tuple[str, int], int]) -> dict[str, Any]:
    """A pane as Beam's ``_windowed_value_info``, for the attributes liveagg rows carry."""
    start, end = pane.window
    return {
        "window": [start // 1_000_000, (end - 1) // 1_000_000],
        "values": sorted(times[(pane.key, i)] for i in pane.idents),
        "index": pane.index,
        "early": pane.timing == "EARLY",
        "late": pane.timing == "LATE",
    }


def check(result: Run, checks: list[tuple[list[int], list]], branch: str) -> None:
    """Each action's panes, per key, against what the transcript expects of it."""
    outcome = result.views["transcript"]
    panes: list[Pane] = getattr(outcome, branch)
    times = {(e.key, e.ident): e.time_us // 1_000_000 for e in result.stream.elements}
    keys = sorted({e.key for e in result.stream.elements})
    for steps, expected in checks:
        for key in keys:
            actual = [info(p, times) for p in panes if p.key == key and p.step in steps]
            _windowed_value_info_check(actual, expected, f"{key} ({branch})")


def test_the_selection_is_the_documented_one() -> None:
    """A Beam upgrade that adds or changes transcripts shows here."""
    found = {s["name"]: inapplicable(s) for s in load()}
    assert {n: r for n, r in found.items() if r is not None} == INAPPLICABLE
    assert sorted(n for n, r in found.items() if r is None) == [
        "bad_expected_values",
        "bad_expected_window",
        "fixed_default",
        "fixed_default_late_data",
        "fixed_drop_late_data_after_allowed_lateness",
        "known_late_data_no_watermark_hold_possible",
        "known_late_data_watermark",
        "missing_output",
        "missing_output_at_end",
        "timestamp_combiner_earliest",
        "timestamp_combiner_latest",
    ]


@pytest.mark.parametrize(
    "spec", [s for s in APPLICABLE if "error" not in s], ids=lambda s: s["name"]
)
def test_transcript(spec: dict[str, Any]) -> None:
    actions, checks = to_stream(spec)
    w = windowing(spec)
    result = run(actions, [w])
    check(result, checks, "beam")  # liveagg's trigger in Beam meets the transcript
    check(result, checks, "liveagg")
    assert [str(m) for m in compare(result, w)] == []


@pytest.mark.parametrize("spec", [s for s in APPLICABLE if "error" in s], ids=lambda s: s["name"])
def test_a_transcript_that_expects_wrong_panes_fails(spec: dict[str, Any]) -> None:
    actions, checks = to_stream(spec)
    result = run(actions, [windowing(spec)])
    for branch in ("beam", "liveagg"):
        with pytest.raises(AssertionError, match=spec["error"]):
            check(result, checks, branch)
