"""A throw-away CA and a server certificate for localhost, made with the
openssl command, so every client verifies the relay as it would a real one."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "localhost"
DAYS = "2"
CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
SERVER_EXTENSIONS = f"""\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:{HOST}, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make(directory: Path) -> Certificates:
    """Write ca.pem, server.pem and server.key (RSA 2048) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = (directory / name
                      for name in ("server.key", "server.csr", "server.pem"))
    ca_ext, server_ext = directory / "ca.ext", directory / "server.ext"
    ca_ext.write_text(CA_EXTENSIONS)
    server_ext.write_text(SERVER_EXTENSIONS)

    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
             ca_key, "-out", directory / "ca.csr", "-subj",
             "/CN=pymail benchmark CA")
    _openssl("x509", "-req", "-in", directory / "ca.csr", "-signkey", ca_key,
             "-days", DAYS, "-extfile", ca_ext, "-out", ca)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={HOST}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-days", DAYS, "-extfile", server_ext,
             "-out", cert)
    key.chmod(0o600)
    ca_key.chmod(0o600)
    return Certificates(ca, cert, key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True,
                   capture_output=True)
