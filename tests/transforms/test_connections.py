"""Connection settings without a service: secrets stay hidden, environment variables and
options combine as documented, and bad settings are errors that say what is accepted."""

from __future__ import annotations

import pickle
import ssl
from pathlib import Path

import pytest

from liveagg.cli import _connections, build_parser
from liveagg.transforms.sinks import (
    CassandraTls,
    ConnectionFailed,
    Connections,
    Secret,
    kafka_config_from_env,
    parse_kafka_setting,
    revealed,
)

PASSWORD = "pw-4Jd9sLq2"


@pytest.fixture(autouse=True)
def _no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it reads: none may come from the shell that runs it."""
    import os

    for name in list(os.environ):
        if name.startswith(("LIVEAGG_CASSANDRA_", "LIVEAGG_KAFKA_CONFIG_", "AWS_")):
            monkeypatch.delenv(name)


def test_a_secret_hides_in_repr_and_str_and_pickles_with_its_value() -> None:
    secret = Secret(PASSWORD)
    assert (
        PASSWORD not in repr(secret) and PASSWORD not in str(secret) and PASSWORD not in f"{secret}"
    )
    assert pickle.loads(pickle.dumps(secret)).reveal() == PASSWORD
    assert Secret(PASSWORD) == secret and hash(Secret(PASSWORD)) == hash(secret)


def test_connections_hold_credentials_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_CASSANDRA_USERNAME", "writer")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PASSWORD + "-aws")
    monkeypatch.setenv("LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD", PASSWORD + "-kafka")
    connections = Connections(kafka_config={"ssl.key.password": PASSWORD + "-key"})
    assert PASSWORD not in repr(connections)
    assert connections.cassandra_username == "writer"
    assert isinstance(connections.cassandra_password, Secret)
    assert connections.cassandra_password.reveal() == PASSWORD
    assert isinstance(connections.s3_secret_access_key, Secret)
    # An explicit kafka_config replaces the environment's; its password becomes a Secret.
    assert revealed(connections.kafka_config) == {"ssl.key.password": PASSWORD + "-key"}
    assert PASSWORD not in repr(connections.kafka_config)
    assert revealed(Connections().kafka_config) == {"sasl.password": PASSWORD + "-kafka"}


def test_kafka_settings_from_the_environment() -> None:
    config = kafka_config_from_env(
        {
            "LIVEAGG_KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
            "LIVEAGG_KAFKA_CONFIG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none",
            "LIVEAGG_KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_SECRET": "s",
            "LIVEAGG_KAFKA_CONFIG_": "ignored: no key",
            "LIVEAGG_KAFKA_BOOTSTRAP": "not a setting",
        }
    )
    assert revealed(config) == {
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "sasl.oauthbearer.client.secret": "s",
    }
    assert isinstance(config["sasl.oauthbearer.client.secret"], Secret)
    assert isinstance(config["security.protocol"], str)


def test_kafka_setting_option_syntax() -> None:
    assert parse_kafka_setting("sasl.jaas=a=b") == ("sasl.jaas", "a=b")
    assert parse_kafka_setting("client.id=") == ("client.id", "")
    with pytest.raises(ValueError, match=r"expects KEY=VALUE .* got 'sasl\.password'"):
        parse_kafka_setting("sasl.password")
    with pytest.raises(ValueError, match="expects KEY=VALUE"):
        parse_kafka_setting("=x")


def test_options_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVEAGG_KAFKA_CONFIG_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("LIVEAGG_CASSANDRA_USERNAME", "env-user")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_CA_FILE", "/env/ca.pem")
    args = build_parser().parse_args(
        [
            *("run", "--views", "v.json", "--kafka-config", "sasl.mechanism=SCRAM-SHA-512"),
            *("--cassandra-username", "option-user", "--cassandra-no-verify-hostname"),
        ]
    )
    connections = _connections(args)
    assert revealed(connections.kafka_config) == {
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": PASSWORD,
    }
    assert connections.cassandra_username == "option-user"
    assert connections.cassandra_tls == CassandraTls(ca_file="/env/ca.pem", verify_hostname=False)


def test_cassandra_tls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CassandraTls.from_env() is None
    monkeypatch.setenv("LIVEAGG_CASSANDRA_TLS", "yes")
    assert CassandraTls.from_env() == CassandraTls()
    monkeypatch.setenv("LIVEAGG_CASSANDRA_TLS", "false")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_CA_FILE", "/ca.pem")
    assert CassandraTls.from_env() is None  # said off, whatever the files
    monkeypatch.delenv("LIVEAGG_CASSANDRA_TLS")
    assert CassandraTls.from_env() == CassandraTls(ca_file="/ca.pem")  # a CA file implies TLS
    monkeypatch.setenv("LIVEAGG_CASSANDRA_TLS_VERIFY_HOSTNAME", "maybe")
    with pytest.raises(ValueError, match=r"LIVEAGG_CASSANDRA_TLS_VERIFY_HOSTNAME='maybe'"):
        CassandraTls.from_env()
    with pytest.raises(ValueError, match="a client certificate needs its key"):
        CassandraTls(cert_file="/c.pem")


def test_cassandra_tls_context_verifies_host_names_by_default(tmp_path: Path) -> None:
    assert CassandraTls().ssl_context().check_hostname is True
    context = CassandraTls(verify_hostname=False).ssl_context()
    assert context.check_hostname is False and context.verify_mode == ssl.CERT_REQUIRED
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConnectionFailed, match=rf"Cassandra TLS: CA file {missing} does not exist"):
        CassandraTls(ca_file=str(missing)).ssl_context()
    missing.write_text("not a certificate")
    with pytest.raises(ConnectionFailed, match="Cassandra TLS: cannot load the certificates"):
        CassandraTls(ca_file=str(missing)).ssl_context()
