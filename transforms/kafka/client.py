"""Kafka's client, shared by the Kafka source (:mod:`.source`) and the Kafka sinks
(:mod:`.sink`): confluent-kafka imported with an install hint, and the connection
check a run makes once, where the pipeline is built.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from liveagg.settings import ConnectionFailed, revealed

_LOGGER = logging.getLogger(__name__)


def confluent_kafka() -> Any:
    """Import confluent-kafka, or say how to install it."""
    try:
        import confluent_kafka as ck
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Kafka source and sink need confluent-kafka: pip install 'liveagg[kafka]'"
        ) from e
    return ck


_CHECK_TIMEOUT_S = 10.0
#: librdkafka errors that no retry fixes: a refused login, a failed TLS handshake.
_REFUSED = ("_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED")


def check_kafka(config: Mapping[str, Any], what: str, topic: str | None = None) -> bool:
    """Connect once from where the pipeline is built, so that a refused login, a failed TLS
    handshake, an unknown setting or (with ``topic``, a topic to read) a topic that does not
    exist fails the run at once, in one line that names Kafka, instead of failing every
    worker after its timeouts. True when the brokers answered.

    Brokers that do not answer from here are left to the workers (they may be reachable only
    from there). One check per distinct settings and topic in a process.
    """
    return _check_kafka(tuple(sorted(config.items())), what, topic)


def topic_partitions(metadata: Any, topic: str, where: str) -> list[int]:
    """The partitions of ``topic`` in a metadata answer, or a ValueError that says why there
    are none."""
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        reason = found.error if found is not None and found.error else "it does not exist"
        raise ValueError(
            f"cannot read Kafka topic {topic!r} at {where}: {reason}; create it or check the "
            "topic name"
        )
    return sorted(found.partitions)


class _InfoLogger:
    """librdkafka's log lines at INFO at most (shown with ``-v``): during the check its
    connection failures are expected, and the one that matters is raised."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        _LOGGER.log(min(level, logging.INFO), msg, *args)


@functools.lru_cache(maxsize=64)
def _check_kafka(items: tuple[tuple[str, Any], ...], what: str, topic: str | None) -> bool:
    ck = confluent_kafka()
    config = revealed(dict(items))
    where = config.get("bootstrap.servers")
    errors: list[Any] = []
    # A metadata request for a topic may create it on a broker that auto-creates topics;
    # a producer allows that by default (librdkafka's allow.auto.create.topics).
    settings = {
        **config,
        "allow.auto.create.topics": False,
        "error_cb": errors.append,
        "logger": _InfoLogger(),
    }
    try:
        client = ck.Producer(settings)
    except ck.KafkaException as e:
        raise ConnectionFailed(
            f"{what}: Kafka client settings refused: {e.args[0].str()}"
        ) from None
    deadline = time.monotonic() + _CHECK_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            metadata = client.list_topics(topic, timeout=0.5)
        except ck.KafkaException:
            client.poll(0)  # delivers the errors to error_cb
        else:
            if topic is not None:
                try:
                    topic_partitions(metadata, topic, where)
                except ValueError as e:
                    raise ConnectionFailed(str(e)) from None
            return True
        refused = [e for e in errors if e.name() in _REFUSED]
        if refused:
            raise ConnectionFailed(
                f"{what}: Kafka at {where} refused the connection: {refused[0].str()}; check "
                "the security settings (--kafka-config, LIVEAGG_KAFKA_CONFIG_*)"
            )
        if any(e.name() == "_ALL_BROKERS_DOWN" for e in errors):
            break
    _LOGGER.info("%s: Kafka at %s does not answer from here; the workers will try", what, where)
    return False
