"""Apache Cassandra, one node, from the ``cassandra-all`` jar and its Maven dependencies."""

from __future__ import annotations

import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _maven
from ._core import HOST, PrerequisiteError, Service, ServiceError, env_str, java_executable
from ._tls import STORE_PASSWORD, ensure_tls

USERNAME = "liveagg"
"""The login role the harness creates; every test connects as it."""
PASSWORD = "liveagg-cassandra-test-password"
"""Its password. A test password: tests grep every output of a run for it."""
_DEFAULT_SUPERUSER = ("cassandra", "cassandra")  # CassandraRoleManager's default role


@dataclass(frozen=True)
class CassandraConnection:
    """Where CQL clients connect, and as whom.

    The node takes plain and TLS connections on one port (client encryption ``optional``);
    ``ca_file`` is the CA that signed its certificate.
    """

    contact_points: tuple[str, ...]
    port: int
    local_dc: str = "datacenter1"
    protocol_version: int = 5
    username: str = USERNAME
    password: str = PASSWORD
    ca_file: str | None = None

    def env(self) -> dict[str, str]:
        """What ``liveagg run`` reads for this node when no option is given."""
        return {
            "LIVEAGG_CASSANDRA_HOSTS": ",".join(self.contact_points),
            "LIVEAGG_CASSANDRA_PORT": str(self.port),
            "LIVEAGG_CASSANDRA_LOCAL_DC": self.local_dc,
            "LIVEAGG_CASSANDRA_USERNAME": self.username,
            "LIVEAGG_CASSANDRA_PASSWORD": self.password,
        }

    def tls_env(self) -> dict[str, str]:
        """:meth:`env` plus the settings of a TLS connection that checks the CA and host."""
        if self.ca_file is None:
            raise ServiceError("this Cassandra connection has no CA file")
        return {
            **self.env(),
            "LIVEAGG_CASSANDRA_TLS": "true",
            "LIVEAGG_CASSANDRA_CA_FILE": self.ca_file,
        }

    def cluster_kwargs(self, *, tls: bool = False) -> dict[str, Any]:
        """Arguments for ``cassandra.cluster.Cluster``, logged in as :attr:`username`.

        The protocol version and a load-balancing policy are given explicitly: left out, the
        driver warns on every connect while it negotiates them.
        """
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy

        profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(self.local_dc))
        kwargs: dict[str, Any] = {
            "contact_points": list(self.contact_points),
            "port": self.port,
            "protocol_version": self.protocol_version,
            "execution_profiles": {EXEC_PROFILE_DEFAULT: profile},
            "auth_provider": PlainTextAuthProvider(self.username, self.password),
        }
        if tls:
            kwargs["ssl_context"] = ssl.create_default_context(cafile=self.ca_file)
        return kwargs


def _cluster_class() -> Any:
    try:
        from cassandra.cluster import Cluster
    except ImportError:
        raise PrerequisiteError(
            "the cassandra health check needs cassandra-driver: "
            "pip install 'cassandra-driver>=3.29'"
        ) from None
    return Cluster


# The module exports and opens that Cassandra 5.0's conf/jvm17-server.options passes: without
# them Java 17 refuses the reflective access Cassandra does at startup.
_JAVA17_MODULE_FLAGS = [
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

_LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="{level}"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


class Cassandra(Service):
    """A single Cassandra node sized for a 2-core test machine.

    Startup is made quick by skipping the gossip settle wait and shortening the ring delay,
    which is safe only because the node is alone. Data starts empty on every start.

    Security is on: ``PasswordAuthenticator`` (the health check creates the login role
    :data:`USERNAME`), and client encryption with ``optional: true``, so the native port takes
    TLS and plain connections alike; the certificate is signed by a test CA made with
    ``keytool`` (``run/cassandra/tls/``).
    """

    name = "cassandra"
    port_settings = (
        ("native", "LIVEAGG_CASSANDRA_PORT", 19042),
        ("storage", "LIVEAGG_CASSANDRA_STORAGE_PORT", 19700),
    )
    default_start_timeout_s = 180.0
    stop_timeout_s = 60.0

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    def connection(self) -> CassandraConnection:
        return CassandraConnection(
            contact_points=(HOST,),
            port=self.ports()["native"],
            ca_file=str(self.tls_dir / "ca.pem"),
        )

    def check_prerequisites(self) -> None:
        java_executable()
        _cluster_class()

    def cassandra_yaml(self) -> str:
        ports = self.ports()
        d = self.run_dir
        return f"""\
cluster_name: liveagg-integration
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
listen_address: {HOST}
rpc_address: {HOST}
native_transport_port: {ports["native"]}
storage_port: {ports["storage"]}
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{HOST}:{ports["storage"]}"
endpoint_snitch: SimpleSnitch
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
client_encryption_options:
  enabled: true
  optional: true
  keystore: {d / "tls" / "server.p12"}
  keystore_password: {STORE_PASSWORD}
  store_type: PKCS12
  require_client_auth: false
data_file_directories:
  - {d / "data"}
commitlog_directory: {d / "commitlog"}
saved_caches_directory: {d / "saved_caches"}
hints_directory: {d / "hints"}
cdc_raw_directory: {d / "cdc_raw"}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 4
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
hinted_handoff_enabled: false
auto_snapshot: false
"""

    def prepare(self) -> None:
        _maven.resolve_jars(self.name, self.log_file)
        ensure_tls(self.tls_dir, self.log_file)
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        (self.run_dir / "cassandra.yaml").write_text(self.cassandra_yaml())
        level = env_str("LIVEAGG_CASSANDRA_LOG_LEVEL", "INFO")
        (self.run_dir / "logback.xml").write_text(_LOGBACK.format(level=level))

    def command(self) -> list[str]:
        heap = env_str("LIVEAGG_CASSANDRA_HEAP", "1g")
        d = self.run_dir
        return [
            java_executable(),
            "-Xms512m",
            f"-Xmx{heap}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxGCPauseMillis=300",
            "-XX:+ExitOnOutOfMemoryError",
            *_JAVA17_MODULE_FLAGS,
            "-Djava.net.preferIPv4Stack=true",
            f"-Dcassandra.config=file://{d / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{d / 'logback.xml'}",
            f"-Dcassandra.logdir={d}",
            f"-Dcassandra.storagedir={d}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.load_ring_state=false",
            # The default superuser, through which the health check creates the test role,
            # is made this long after the node starts (CassandraRelevantProperties:
            # SUPERUSER_SETUP_DELAY_MS, 10000 by default).
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            str(_maven.jar_dir(self.name) / "*"),
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def health(self) -> str:
        """``SELECT release_version FROM system.local`` as the test role, over TLS.

        On a fresh node the role does not exist yet: it is created through the default
        superuser, which the node makes only once it is up (``setupDefaultRole``; until then
        that login fails too, and the node is not healthy yet).
        """
        from cassandra import AuthenticationFailed
        from cassandra.cluster import NoHostAvailable

        conn = self.connection()
        try:
            row = self._query(conn, "SELECT release_version FROM system.local")
        except NoHostAvailable as e:
            if not all(isinstance(x, AuthenticationFailed) for x in e.errors.values()):
                raise
            superuser = CassandraConnection(
                conn.contact_points, conn.port, username=_DEFAULT_SUPERUSER[0],
                password=_DEFAULT_SUPERUSER[1], ca_file=conn.ca_file,
            )  # fmt: skip
            self._query(
                superuser,
                f"CREATE ROLE IF NOT EXISTS {USERNAME} WITH PASSWORD = '{PASSWORD}' "
                "AND LOGIN = true",
            )
            row = self._query(conn, "SELECT release_version FROM system.local")
        return f"Cassandra {row.release_version}, login {conn.username} over TLS"

    @staticmethod
    def _query(conn: CassandraConnection, cql: str) -> Any:
        cluster = _cluster_class()(
            **conn.cluster_kwargs(tls=True), connect_timeout=5, control_connection_timeout=5
        )
        try:
            return cluster.connect().execute(cql).one()
        finally:
            cluster.shutdown()
