"""A self-signed test CA and a server keystore for 127.0.0.1, made with the JDK's ``keytool``.

Kafka's SASL_SSL listener and Cassandra's client encryption read the PKCS12 keystore; clients
trust ``ca.pem``. The server certificate names only ``IP:127.0.0.1`` (no ``localhost``), so a
client that reaches the service as ``localhost`` fails hostname verification: the tests use
that to show verification is on. The files are made once per run folder and kept across
restarts (``.complete`` marks a finished set), like the downloaded jars.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ._core import HOST, PrerequisiteError, ServiceError, java_executable

STORE_PASSWORD = "liveagg-test-keystore"
"""Password of the test keystores; they protect throwaway keys, so it is no secret."""
_VALIDITY_DAYS = "3650"


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA certificate and the server keystore are."""

    ca_file: Path  # PEM, what clients trust
    keystore: Path  # PKCS12: the server's key, its certificate and the CA's
    keystore_password: str = STORE_PASSWORD


def keytool() -> str:
    """``keytool`` next to the ``java`` the harness runs, else the one on the PATH."""
    beside = Path(java_executable()).resolve().parent / "keytool"
    if beside.exists():
        return str(beside)
    found = shutil.which("keytool")
    if not found:
        raise PrerequisiteError("keytool not found (it comes with the JDK): set JAVA_HOME")
    return found


def ensure_tls(folder: Path, log_file: Path) -> TlsFiles:
    """The CA and keystore under ``folder``, made with ``keytool`` when missing."""
    files = TlsFiles(ca_file=folder / "ca.pem", keystore=folder / "server.p12")
    if (folder / ".complete").exists():
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tool = keytool()
    store = ["-storetype", "PKCS12", "-storepass", STORE_PASSWORD, "-keypass", STORE_PASSWORD]
    ca, server = str(folder / "ca.p12"), str(files.keystore)
    csr, cert = str(folder / "server.csr"), str(folder / "server.pem")
    steps = [
        # The CA: a key pair whose certificate may sign others (basic constraints CA:true).
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-dname",
         "CN=liveagg test CA", "-ext", "bc:c", "-validity", _VALIDITY_DAYS, "-keystore", ca,
         *store],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass", STORE_PASSWORD,
         "-file", str(files.ca_file)],
        # The server's key pair, a signing request, and its certificate signed by the CA.
        ["-genkeypair", "-alias", "server", "-keyalg", "RSA", "-keysize", "2048", "-dname",
         f"CN={HOST}", "-validity", _VALIDITY_DAYS, "-keystore", server, *store],
        ["-certreq", "-alias", "server", "-keystore", server, "-storepass", STORE_PASSWORD,
         "-file", csr],
        ["-gencert", "-alias", "ca", "-keystore", ca, "-storepass", STORE_PASSWORD, "-infile",
         csr, "-outfile", cert, "-rfc", "-validity", _VALIDITY_DAYS, "-ext", f"SAN=ip:{HOST}",
         "-ext", "EKU=serverAuth"],
        # The chain goes back into the keystore: first the CA, then the signed certificate.
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_file), "-keystore",
         server, *store],
        ["-importcert", "-noprompt", "-alias", "server", "-file", cert, "-keystore", server,
         *store],
    ]  # fmt: skip
    with log_file.open("ab") as log:
        log.write(f"--- making a test CA and keystore in {folder}\n".encode())
        for args in steps:
            log.flush()
            result = subprocess.run(
                [tool, *args], stdout=log, stderr=subprocess.STDOUT, check=False, timeout=120
            )
            if result.returncode != 0:
                raise ServiceError(
                    f"keytool {args[0]} failed (exit {result.returncode}); see {log_file}"
                )
    (folder / ".complete").touch()
    return files
