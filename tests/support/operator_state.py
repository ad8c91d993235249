"""Stand-ins for the runner's side of the window operator, to drive its methods directly: a
bucket's bag state, a timer family and the metrics scope of a running step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.metrics.execution import MetricsContainer, MetricsEnvironment
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.timestamp import Timestamp

from liveagg.transforms.windowstate import Bucket, BucketCoder


class Cell:
    """A bucket's bag state as the operator sees it: read, add, clear. ``cached``: reads
    return the very objects added, as the SDK's state cache does; otherwise each read
    decodes what a runner would have stored."""

    def __init__(self, cached: bool = True) -> None:
        self.cached = cached
        self.parts: list[object] = []
        self.coder = BucketCoder()

    def read(self) -> list[object]:
        if self.cached:
            return list(self.parts)
        return [self.coder.decode(self.coder.encode(part)) for part in self.parts]

    def add(self, value: object) -> None:
        self.parts.append(value)

    def clear(self) -> None:
        self.parts = []

    @property
    def value(self) -> Bucket:
        return Bucket.load(self)


class Timers:
    """A TimerParam that records each tag's timer, as the runner keeps them."""

    def __init__(self) -> None:
        self.due: dict[str, int] = {}

    def set(self, ts: Timestamp, dynamic_timer_tag: str = "") -> None:
        self.due[dynamic_timer_tag] = ts.micros

    def clear(self, dynamic_timer_tag: str = "") -> None:
        self.due.pop(dynamic_timer_tag, None)

    def take(self, tag: str, at: int) -> bool:
        """Whether the timer ``tag`` is still set for ``at``, and so fires now (then it is no
        longer set). A firing earlier in the same watermark advance may have set it again,
        for later, or cleared it: the latest set wins, as for any Beam timer, so a list of
        due timers made before the first firing must not fire or drop it."""
        if self.due.get(tag) != at:
            return False
        del self.due[tag]
        return True


@contextmanager
def step_metrics(step: str = "step") -> Iterator[MetricsContainer]:
    """The metrics container of a running step, set as a Beam worker sets it, so that
    ``Metrics.counter(...)`` in the code driven inside lands where it can be read."""
    sampler = statesampler.StateSampler("", CounterFactory())
    statesampler.set_current_tracker(sampler)
    scope = sampler.scoped_state(step, "process", metrics_container=MetricsContainer(step))
    sampler.start()
    try:
        with scope:
            yield MetricsEnvironment.current_container()
    finally:
        sampler.stop()
        statesampler.set_current_tracker(None)


def counter_value(container: MetricsContainer, namespace: str, name: str) -> int:
    """A counter's cumulative value in ``container``."""
    return container.get_counter(MetricName(namespace, name)).get_cumulative()
