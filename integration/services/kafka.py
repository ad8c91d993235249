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
from ._tls import STORE_PASSWORD, ensure_tls

USERNAME = "liveagg"
"""The user of the SASL_SSL listener, for PLAIN and both SCRAM mechanisms."""
PASSWORD = "liveagg-kafka-sasl-test-password"
"""Its password. A test password: tests grep every output of a run for it."""
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka clients connect: a PLAINTEXT listener, and a SASL_SSL one beside it."""

    bootstrap_servers: str
    secure_bootstrap_servers: str | None = None  # SASL_SSL: PLAIN, SCRAM-SHA-256/512
    username: str = USERNAME
    password: str = PASSWORD
    ca_file: str | None = None  # PEM of the CA that signed the broker's certificate

    def client_config(self) -> dict[str, str]:
        """The librdkafka / confluent-kafka setting for this broker."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def env(self) -> dict[str, str]:
        """What ``liveagg run`` reads for this broker when no option is given."""
        return {"LIVEAGG_KAFKA_BOOTSTRAP": self.bootstrap_servers}

    def secure_settings(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """librdkafka settings for the SASL_SSL listener, without ``bootstrap.servers``."""
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism {mechanism!r}; the broker offers {', '.join(MECHANISMS)}")
        if self.secure_bootstrap_servers is None or self.ca_file is None:
            raise ServiceError("this Kafka has no SASL_SSL listener")
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_file,
        }

    def secure_client_config(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """A confluent-kafka client's settings for the SASL_SSL listener."""
        settings = self.secure_settings(mechanism)
        return {"bootstrap.servers": str(self.secure_bootstrap_servers), **settings}

    def secure_env(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """What ``liveagg run`` reads to use the SASL_SSL listener: the bootstrap servers and
        each setting as ``LIVEAGG_KAFKA_CONFIG_<KEY>`` (dots as underscores)."""
        settings = self.secure_settings(mechanism)
        env = {
            "LIVEAGG_KAFKA_CONFIG_" + key.upper().replace(".", "_"): value
            for key, value in settings.items()
        }
        return {"LIVEAGG_KAFKA_BOOTSTRAP": str(self.secure_bootstrap_servers), **env}


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

    Besides the PLAINTEXT listener, a SASL_SSL one on its own port takes the user
    :data:`USERNAME` with PLAIN (from the listener's JAAS settings) and SCRAM-SHA-256/512
    (credentials written into the KRaft metadata when the log dir is formatted); its
    certificate is signed by a test CA made with ``keytool`` (``run/kafka/tls/``).
    """

    name = "kafka"
    port_settings = (
        ("broker", "LIVEAGG_KAFKA_PORT", 19092),
        ("controller", "LIVEAGG_KAFKA_CONTROLLER_PORT", 19093),
        ("sasl_ssl", "LIVEAGG_KAFKA_SASL_SSL_PORT", 19094),
    )
    default_start_timeout_s = 90.0
    stop_timeout_s = 30.0

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    def connection(self) -> KafkaConnection:
        ports = self.ports()
        return KafkaConnection(
            bootstrap_servers=f"{HOST}:{ports['broker']}",
            secure_bootstrap_servers=f"{HOST}:{ports['sasl_ssl']}",
            ca_file=str(self.tls_dir / "ca.pem"),
        )

    def check_prerequisites(self) -> None:
        java_executable()
        _admin_client_class()

    def server_properties(self) -> str:
        ports = self.ports()
        broker, controller, secure = ports["broker"], ports["controller"], ports["sasl_ssl"]
        tls = self.tls_dir
        plain_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USERNAME}="{PASSWORD}";'
        )
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller}
listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller},SASL_SSL://{HOST}:{secure}
advertised.listeners=PLAINTEXT://{HOST}:{broker},SASL_SSL://{HOST}:{secure}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms={",".join(MECHANISMS)}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain_jaas}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location={tls / "server.p12"}
listener.name.sasl_ssl.ssl.keystore.password={STORE_PASSWORD}
listener.name.sasl_ssl.ssl.key.password={STORE_PASSWORD}
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
        ensure_tls(self.tls_dir, self.log_file)
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
        for mechanism in MECHANISMS[1:]:  # SCRAM credentials live in the KRaft metadata
            cmd += ["--add-scram", f"{mechanism}=[name={USERNAME},password={PASSWORD}]"]
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
        """A metadata request through confluent-kafka on each listener; the broker must
        advertise our ports, and the SASL_SSL one must take the test user (SCRAM-SHA-512)."""
        admin_client = _admin_client_class()
        conn = self.connection()
        described = []
        for config, address in (
            (conn.client_config(), conn.bootstrap_servers),
            (conn.secure_client_config(), conn.secure_bootstrap_servers),
        ):
            # librdkafka's connection errors while the broker boots go to logging, not stderr.
            admin = admin_client({**config, "socket.timeout.ms": 3000, "logger": _LOGGER})
            metadata = admin.list_topics(timeout=5)
            brokers = {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
            if address not in brokers:
                raise ServiceError(f"metadata lists brokers {sorted(brokers)}, not {address}")
            described.append(f"{len(metadata.topics)} topic(s)")
        return f"cluster {metadata.cluster_id}, {described[0]}, SASL_SSL answers"
