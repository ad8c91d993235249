"""The Kafka sink without a broker: its settings and how rows become keys and values."""

from __future__ import annotations

import pytest

from liveagg.spec import Sink
from liveagg.transforms.kafka.sink import GroupingKey, encode_json
from liveagg.transforms.sinks import Connections, build_sink


def test_sink_needs_bootstrap_servers_and_encodes_huge_integers() -> None:
    with pytest.raises(ValueError, match="kafka sink to topic 'out': no Kafka bootstrap"):
        build_sink(Sink("kafka", {"topic": "out"}), Connections(kafka_bootstrap=None))
    row = {"key": "a", "total": 2**70, "mean": float("nan")}
    assert encode_json(row) == b'{"key":"a","total":1180591620717411303424,"mean":null}'
    assert GroupingKey(["b", "a"])({"a": 1, "b": "x", "n": 3}) == b'["x",1]'
    assert GroupingKey([])({"a": 1}) == b"[]"
