"""The ``live_keys/<view>`` metric: grouping keys holding open windows, across restores.

The window operator counts a key up when it opens its first window and down when its last
closes. A Beam counter starts from zero in every job, and on Flink in every attempt of it
(Beam's ``DoFnOperator.open`` makes a new ``FlinkMetricContainer`` for each task attempt,
``DoFnOperator.java`` 526 in Beam 2.62), while a job started from a checkpoint or savepoint
holds the keys of its state: counting opens and closes alone counted the closes of restored
keys and went negative. So the counter also *adopts* a state cell's keys: the first time a
worker process of this run loads a cell (a bucket of keys), it adds the keys the cell holds;
from then on it counts opens and closes. Each cell belongs to one Flink subtask, and a
subtask's bundles go to one SDK worker process: Beam's ``SimpleStageBundleFactory.getBundle``
uses its stage's one environment unless ``--load_balance_bundles`` is set
(``DefaultJobBundleFactory.java`` 479-501 in Beam 2.62), so each cell is adopted once per
attempt.

What the figure is: the keys with open windows in the cells the job has touched since it
(or its last attempt) started. A cell is touched by its keys' messages and by its windows'
timers, so after a restore the figure climbs to the true count as the cells are first
touched; it never counts a key twice or goes negative.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from apache_beam.metrics import Metrics

from liveagg.transforms.deadletter import NAMESPACE


class LiveKeys:
    """The view's ``live_keys`` counter, with :meth:`loaded` to adopt a cell's keys."""

    _adopted: ClassVar[set[tuple[str, Any]]] = set()  # (token, state key), this process
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, view: str, token: str) -> None:
        """``token`` names the operator of one built pipeline: a process's cells of another
        run's are not this one's."""
        self._counter = Metrics.counter(NAMESPACE, f"live_keys/{view}")
        self._token = token

    def loaded(self, state_key: Any, keys: int) -> None:
        """A cell holding ``keys`` open keys was read: count them if this process has not."""
        seen = (self._token, state_key)
        if seen in LiveKeys._adopted:
            return
        with LiveKeys._lock:
            if seen in LiveKeys._adopted:
                return
            LiveKeys._adopted.add(seen)
        if keys:
            self._counter.inc(keys)

    def inc(self) -> None:
        """A key opened its first window."""
        self._counter.inc()

    def dec(self) -> None:
        """A key's last window closed."""
        self._counter.dec()
