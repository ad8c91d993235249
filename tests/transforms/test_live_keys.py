"""``live_keys/<view>`` stays a count of keys with open windows when a job starts from state."""

from __future__ import annotations

import uuid

from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.live_keys import LiveKeys
from tests.support.operator_state import counter_value, step_metrics


def test_a_restored_cells_keys_are_adopted_once_then_opens_and_closes_count() -> None:
    """A job restored from a checkpoint: its counter starts at 0 while its first cell holds
    3 keys. Without adoption, their closing counted the counter down to -3."""
    with step_metrics() as container:
        run = uuid.uuid4().hex  # the operator's token: this pipeline's
        live = LiveKeys("v", run)
        live.loaded(("v", 0, 7), 3)  # restored: three keys with open windows
        live.loaded(("v", 0, 7), 3)  # read again in a later bundle: already counted
        live.inc()  # a new key opens a window in that cell
        for _ in range(4):  # then all four close
            live.dec()
        live.loaded(("v", 0, 9), 0)  # a cell with no keys
        LiveKeys("v", run).loaded(("v", 0, 7), 5)  # another instance, same run: counted
        assert counter_value(container, NAMESPACE, "live_keys/v") == 0
        LiveKeys("v", uuid.uuid4().hex).loaded(("v", 0, 7), 2)  # another run's job: its own
        assert counter_value(container, NAMESPACE, "live_keys/v") == 2
