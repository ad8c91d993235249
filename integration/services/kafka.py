"""Apache Kafka, one KRaft node (broker and controller in one JVM), from Maven Central jars."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _maven
from ._core import HOST, PrerequisiteError, Service, ServiceError, env_str, java_executable, tail


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka clients connect."""

    bootstrap_servers: str

    def client_config(self) -> dict[str, str]:
        """The librdkafka / confluent-kafka setting for this broker."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def env(self) -> dict[str, str]:
        """What ``liveagg run`` reads for this broker when no option is given."""
        return {"LIVEAGG_KAFKA_BOOTSTRAP": self.bootstrap_servers}


_LOGGER = logging.getLogger(__name__)


def _cluster_id() -> str:
    """A KRaft cluster id as ``kafka-storage.sh random-uuid`` makes it (base64url, 22 chars)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka refuses ids that look like a command-line flag.
            return cid


def _admin_client_class() -> Any:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        raise PrerequisiteError(
            "the kafka health check needs confluent-kafka: pip install 'confluent-kafka>=2.3'"
        ) from None
    return AdminClient


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class Kafka(Service):
    """Kafka in KRaft mode: ``StorageTool format`` on a fresh log dir, then ``kafka.Kafka``.

    Internal topics get one partition and replication factor 1 so the first consumer group
    is ready in a second rather than after creating 50 offset partitions.
    """

    name = "kafka"
    port_settings = (
        ("broker", "LIVEAGG_KAFKA_PORT", 19092),
        ("controller", "LIVEAGG_KAFKA_CONTROLLER_PORT", 19093),
    )
    default_start_timeout_s = 90.0
    stop_timeout_s = 30.0

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def connection(self) -> KafkaConnection:
        return KafkaConnection(bootstrap_servers=f"{HOST}:{self.ports()['broker']}")

    def check_prerequisites(self) -> None:
        java_executable()
        _admin_client_class()

    def server_properties(self) -> str:
        ports = self.ports()
        broker, controller = ports["broker"], ports["controller"]
        return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller}
listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}
advertised.listeners=PLAINTEXT://{HOST}:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={self.data_dir}
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
"""

    def _java(self, heap: str, log_config: str = "log4j2.properties") -> list[str]:
        return [
            java_executable(),
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.run_dir / log_config}",
            "-cp",
            str(_maven.jar_dir(self.name) / "*"),
        ]

    def prepare(self) -> None:
        """Resolve the jars, write the config, and format an empty log dir (fresh each start)."""
        _maven.resolve_jars(self.name, self.log_file)
        (self.run_dir / "server.properties").write_text(self.server_properties())
        level = env_str("LIVEAGG_KAFKA_LOG_LEVEL", "INFO")
        (self.run_dir / "log4j2.properties").write_text(_LOG4J2.format(level=level))
        # The format tool logs its whole configuration at INFO: keep only its warnings.
        (self.run_dir / "log4j2-tools.properties").write_text(_LOG4J2.format(level="WARN"))
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cmd = [
            *self._java("256m", "log4j2-tools.properties"),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(self.run_dir / "server.properties"),
        ]
        with self.log_file.open("ab") as log:
            log.write(b"--- formatting the KRaft log dir\n")
            log.flush()
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"kafka StorageTool format failed (exit {result.returncode}); last lines of "
                f"{self.log_file}:\n{tail(self.log_file)}"
            )

    def command(self) -> list[str]:
        heap = env_str("LIVEAGG_KAFKA_HEAP", "512m")
        return [*self._java(heap), "kafka.Kafka", str(self.run_dir / "server.properties")]

    def health(self) -> str:
        """A metadata request through confluent-kafka; the broker must advertise our port."""
        admin_client = _admin_client_class()
        conn = self.connection()
        # librdkafka's connection errors while the broker boots go to logging, not stderr.
        admin = admin_client({**conn.client_config(), "socket.timeout.ms": 3000, "logger": _LOGGER})
        metadata = admin.list_topics(timeout=5)
        brokers = {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
        if conn.bootstrap_servers not in brokers:
            raise ServiceError(f"metadata lists brokers {sorted(brokers)}, not {conn}")
        return f"cluster {metadata.cluster_id}, {len(metadata.topics)} topic(s)"
