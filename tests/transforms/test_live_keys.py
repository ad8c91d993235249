"""``live_keys/<view>`` stays a count of keys with open windows when a job starts from state."""

from __future__ import annotations

import uuid

from apache_beam.metrics.execution import MetricsContainer, MetricsEnvironment
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory

from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.live_keys import LiveKeys


def test_a_restored_cells_keys_are_adopted_once_then_opens_and_closes_count() -> None:
    """A job restored from a checkpoint: its counter starts at 0 while its first cell holds
    3 keys. Without adoption, their closing counted the counter down to -3."""
    sampler = statesampler.StateSampler("", CounterFactory())
    statesampler.set_current_tracker(sampler)
    step = sampler.scoped_state("step", "process", metrics_container=MetricsContainer("step"))
    sampler.start()
    try:
        with step:
            run = uuid.uuid4().hex  # the operator's token: this pipeline's
            live = LiveKeys("v", run)
            live.loaded(("v", 0, 7), 3)  # restored: three keys with open windows
            live.loaded(("v", 0, 7), 3)  # read again in a later bundle: already counted
            live.inc()  # a new key opens a window in that cell
            for _ in range(4):  # then all four close
                live.dec()
            live.loaded(("v", 0, 9), 0)  # a cell with no keys
            LiveKeys("v", run).loaded(("v", 0, 7), 5)  # another instance, same run: counted
            container = MetricsEnvironment.current_container()
            value = container.get_counter(MetricName(NAMESPACE, "live_keys/v")).get_cumulative()
            assert value == 0
            LiveKeys("v", uuid.uuid4().hex).loaded(("v", 0, 7), 2)  # another run's job: its own
            value = container.get_counter(MetricName(NAMESPACE, "live_keys/v")).get_cumulative()
            assert value == 2
    finally:
        sampler.stop()
        statesampler.set_current_tracker(None)
