"""``liveagg.settings``: the run's settings from the environment, in one place below every
layer that uses them (the command line, the pipelines, the runners, the sources and sinks):
where each service is and how to log in (:class:`Connections`), and where each runner sends
the job (:class:`FlinkSettings`, :class:`SparkSettings`, :class:`PrismSettings`). The command
line's options go over them.

Every ``LIVEAGG_*`` variable is read by :func:`env_text` or :func:`env_value`, so all follow
one rule: unset or blank means the setting's default, a value is taken without the spaces
around it, and one that does not parse fails naming the variable, its value and what is
accepted. Credentials alone are taken as they are, spaces and all (a password may hold any
character).

Credentials are held as :class:`Secret`, whose ``repr`` and ``str`` hide the value, so that no
log line, error message or ``repr`` of a transform shows them. They reach the workers inside
the pickled transforms (the pipeline proto), never in the pipeline options: Beam's Flink runner
copies those into the job's configuration that Flink's REST API shows, and an SDK worker that
``sdk_worker_main`` starts logs them (docs/flink.md, "Credentials").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

KAFKA_CONFIG_ENV_PREFIX = "LIVEAGG_KAFKA_CONFIG_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_text(name: str, default: str | None = None) -> str | None:
    """The environment variable ``name`` without surrounding spaces; ``default`` when it is
    unset or blank (so ``NAME=`` in a shell or a compose file means "not set")."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_value(name: str, parse: Callable[[str], T], default: T, expected: str) -> T:
    """The environment variable ``name`` read by :func:`env_text` and parsed by ``parse``.

    A value that ``parse`` rejects (``ValueError``) fails here, naming the variable, the value
    and ``expected``, what is accepted (``"an integer, e.g. 9042"``): the parser's own message
    would not say which variable to fix.
    """
    text = env_text(name)
    if text is None:
        return default
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not {expected}") from None


def env_int(name: str, default: int) -> int:
    return env_value(name, int, default, f"an integer, e.g. {default}")


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable (``1``/``true``/``yes``/``on`` or ``0``/``false``/...)."""
    return env_value(name, _flag, default, "true or false (1/0, yes/no, on/off)")


def _env_secret(name: str) -> Secret | None:
    """A credential, taken as it is (see the module docstring); None when unset or empty."""
    return secret(os.environ.get(name))


class ConnectionFailed(RuntimeError):
    """A service refused the run's connection settings: credentials, TLS, an unknown client
    setting. The message is one line that names the service and what to check."""


class Secret:
    """A credential. ``repr`` and ``str`` hide it; :meth:`reveal` gives it to a client library.

    It pickles with its value: that is how a worker gets it (see the module docstring).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


def secret(value: str | Secret | None) -> Secret | None:
    """``value`` as a :class:`Secret` (None and empty stay None)."""
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value) if value else None


def reveal(value: str | Secret | None) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


def is_secret_setting(key: str) -> bool:
    """Whether a librdkafka setting holds a credential (passwords, secrets, private keys)."""
    key = key.lower()
    return any(word in key for word in ("password", "secret", "key.pem", "oauthbearer.config"))


def kafka_settings(items: Iterable[tuple[str, str]]) -> dict[str, str | Secret]:
    """librdkafka settings, the credentials among them as :class:`Secret`."""
    return {k: Secret(v) if is_secret_setting(k) else v for k, v in items}


def parse_kafka_setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (``--kafka-config``) -> ``(KEY, VALUE)``; the value may hold ``=``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(
            f"--kafka-config expects KEY=VALUE (a librdkafka setting, e.g. "
            f"security.protocol=SASL_SSL), got {text.split('=')[0]!r}"
        )
    return key, value


def kafka_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str | Secret]:
    """``LIVEAGG_KAFKA_CONFIG_<KEY>`` variables as librdkafka settings: the key lowercased,
    ``_`` read as ``.`` (``LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD`` -> ``sasl.password``).

    librdkafka's settings are dotted lowercase names without ``_``, so the mapping is exact.
    """
    environ = os.environ if environ is None else environ
    items = [
        (name[len(KAFKA_CONFIG_ENV_PREFIX) :].lower().replace("_", "."), value)
        for name, value in sorted(environ.items())
        if name.startswith(KAFKA_CONFIG_ENV_PREFIX) and len(name) > len(KAFKA_CONFIG_ENV_PREFIX)
    ]
    return kafka_settings(items)


def revealed(config: Mapping[str, Any]) -> dict[str, Any]:
    """Client settings with every :class:`Secret` replaced by its value, for the client."""
    return {k: reveal(v) for k, v in config.items()}


@dataclass(frozen=True)
class CassandraTls:
    """TLS to Cassandra: the CA that signed the nodes' certificates (default: the system's),
    an optional client certificate and key (PEM), and whether a node's certificate must name
    the address it was reached at (on by default, as in every TLS client)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "Cassandra TLS: a client certificate needs its key and a key its certificate "
                "(--cassandra-cert-file and --cassandra-key-file)"
            )

    @classmethod
    def from_env(cls) -> CassandraTls | None:
        """``LIVEAGG_CASSANDRA_TLS`` and the files; a CA or certificate file implies TLS."""
        files = {
            "ca_file": env_text("LIVEAGG_CASSANDRA_CA_FILE"),
            "cert_file": env_text("LIVEAGG_CASSANDRA_CERT_FILE"),
            "key_file": env_text("LIVEAGG_CASSANDRA_KEY_FILE"),
        }
        on = env_flag("LIVEAGG_CASSANDRA_TLS", any(files.values()))
        if not on:
            return None
        return cls(**files, verify_hostname=env_flag("LIVEAGG_CASSANDRA_TLS_VERIFY_HOSTNAME", True))

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for the driver; a missing file fails here, naming it."""
        import ssl

        for what, path in (("CA", self.ca_file), ("cert", self.cert_file), ("key", self.key_file)):
            if path is not None and not os.path.isfile(path):
                raise ConnectionFailed(f"Cassandra TLS: {what} file {path} does not exist")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.check_hostname = self.verify_hostname
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as e:
            raise ConnectionFailed(f"Cassandra TLS: cannot load the certificates: {e}") from None
        return context


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in text.split(",") if h.strip())
    if not hosts:
        raise ValueError(text)
    return hosts


@dataclass(frozen=True)
class Connections:
    """Connection settings of a run: command-line options, else environment variables.

    The environment variables are those the client libraries already honour where one exists
    (``AWS_ACCESS_KEY_ID``, ``STORAGE_EMULATOR_HOST``), else ``LIVEAGG_*``. Passwords come
    from the environment only (a command line is visible to every user of the machine) and
    are kept as :class:`Secret`.
    """

    kafka_bootstrap: str | None = field(default_factory=lambda: env_text("LIVEAGG_KAFKA_BOOTSTRAP"))
    # librdkafka settings for every Kafka client of the run (source, sinks, dead letters,
    # intermediate topic): LIVEAGG_KAFKA_CONFIG_* under --kafka-config.
    kafka_config: Mapping[str, str | Secret] = field(default_factory=kafka_config_from_env)
    cassandra_hosts: tuple[str, ...] = field(
        default_factory=lambda: env_value(
            "LIVEAGG_CASSANDRA_HOSTS", _hosts, ("127.0.0.1",), "a comma-separated host list"
        )
    )
    cassandra_port: int = field(default_factory=lambda: env_int("LIVEAGG_CASSANDRA_PORT", 9042))
    cassandra_local_dc: str | None = field(
        default_factory=lambda: env_text("LIVEAGG_CASSANDRA_LOCAL_DC")
    )
    cassandra_replication: int = 1
    cassandra_username: str | None = field(
        default_factory=lambda: env_text("LIVEAGG_CASSANDRA_USERNAME")
    )
    cassandra_password: Secret | None = field(
        default_factory=lambda: _env_secret("LIVEAGG_CASSANDRA_PASSWORD"), repr=False
    )
    cassandra_tls: CassandraTls | None = field(default_factory=CassandraTls.from_env)
    s3_endpoint: str | None = field(default_factory=lambda: env_text("LIVEAGG_S3_ENDPOINT"))
    s3_access_key_id: str | None = field(default_factory=lambda: env_text("AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: Secret | None = field(
        default_factory=lambda: _env_secret("AWS_SECRET_ACCESS_KEY"), repr=False
    )
    s3_region: str | None = field(default_factory=lambda: env_text("AWS_DEFAULT_REGION"))
    gcs_endpoint: str | None = field(default_factory=lambda: env_text("STORAGE_EMULATOR_HOST"))
    gcs_project: str | None = field(default_factory=lambda: env_text("GOOGLE_CLOUD_PROJECT"))

    def __post_init__(self) -> None:
        # Plain strings given by a caller become Secrets, so the rule holds for every source.
        object.__setattr__(self, "cassandra_password", secret(self.cassandra_password))
        object.__setattr__(self, "s3_secret_access_key", secret(self.s3_secret_access_key))
        config = self.kafka_config
        object.__setattr__(
            self,
            "kafka_config",
            {
                k: v if isinstance(v, Secret) else kafka_settings([(k, v)])[k]
                for k, v in config.items()
            },
        )


# --- runners --------------------------------------------------------------------------------
# Each runner profile (liveagg.runners) is one of these plus the run's own flags; the command
# line's --flink-*, --spark-* and --prism-* options go over these defaults.


@dataclass(frozen=True)
class FlinkSettings:
    """Where a Flink run goes: ``LIVEAGG_FLINK_*``, else an embedded Flink 1.19 with Beam's
    job server for it (docs/flink.md)."""

    master: str = field(default_factory=lambda: env_text("LIVEAGG_FLINK_MASTER", "[local]"))
    version: str = field(default_factory=lambda: env_text("LIVEAGG_FLINK_VERSION", "1.19"))
    worker_pool: str | None = field(default_factory=lambda: env_text("LIVEAGG_FLINK_WORKER_POOL"))
    job_endpoint: str | None = field(default_factory=lambda: env_text("LIVEAGG_FLINK_JOB_ENDPOINT"))
    job_server_jar: str | None = field(
        default_factory=lambda: env_text("LIVEAGG_FLINK_JOB_SERVER_JAR")
    )


@dataclass(frozen=True)
class SparkSettings:
    """Where a Spark run goes: ``LIVEAGG_SPARK_*``, else ``local[2]`` (docs/runners.md)."""

    master: str = field(default_factory=lambda: env_text("LIVEAGG_SPARK_MASTER", "local[2]"))
    job_endpoint: str | None = field(default_factory=lambda: env_text("LIVEAGG_SPARK_JOB_ENDPOINT"))
    job_server_jar: str | None = field(
        default_factory=lambda: env_text("LIVEAGG_SPARK_JOB_SERVER_JAR")
    )


@dataclass(frozen=True)
class PrismSettings:
    """The Prism binary: ``LIVEAGG_PRISM_LOCATION``, else the one Beam downloads."""

    location: str | None = field(default_factory=lambda: env_text("LIVEAGG_PRISM_LOCATION"))
