"""`pymail --check`: why does mail not arrive? Each step of a delivery up
to AUTH, one line each, then QUIT without sending anything.

It replaces the old recipe's `openssl s_client` and `certutil` steps: it
shows the TLS version, the certificate (subject, issuer, expiry, SHA-256
fingerprint) and whether it is trusted.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from pymail import trust
from pymail.errors import EX_OK, EX_PROTOCOL, PymailError
from pymail.relay import Connection, classify
from pymail.settings import Settings


class Report:
    """Prints the steps; remembers the exit status of the first failure."""

    def __init__(self) -> None:
        self.code = EX_OK

    def ok(self, step: str, detail: str) -> None:
        print(f"ok    {step:<12} {detail}")

    def fail(self, step: str, error: PymailError) -> int:
        print(f"FAIL  {step:<12} {error.line()}")
        self.code = self.code or error.code
        return self.code


def check(settings: Settings) -> int:
    """Run the steps; returns 0 when every one passed."""
    report = Report()
    try:
        connection = Connection(settings)
    except PymailError as error:
        return report.fail("settings", error)
    relay = connection.relay
    mode = ("implicit TLS" if relay.implicit_tls else
            "STARTTLS" if relay.starttls else "no TLS")
    login = f"login {connection.user}" if connection.user else "no login"
    report.ok("settings", f"{relay.address} ({mode}), {login}")

    if not _resolve(connection, report) or not _tcp(connection, report):
        return report.code
    try:
        context = trust.make_context(settings)
    except PymailError as error:
        return report.fail("trust", error)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("connect", lambda: connection.connect(context))]
    if relay.implicit_tls:
        steps.append(("tls", lambda: _show_tls(connection, report)))
    steps.append(("ehlo", lambda: _greet(connection, report)))
    if relay.starttls:
        steps.append(("starttls", lambda: _secure(connection, context,
                                                  report)))
    if connection.user:
        steps.append(("auth", lambda: _login(connection, report)))
    try:
        for step, run in steps:
            try:
                with connection.errors(step):
                    run()
            except PymailError as error:
                if isinstance(error.__cause__, ssl.SSLCertVerificationError):
                    _untrusted(connection, report, error)
                    return report.code
                pinned = "tls-fingerprint" in error.message
                return report.fail("certificate" if pinned else step, error)
            if step == "connect":
                report.ok("greeting", "the relay answered 220")
    finally:
        connection.close()
    print("nothing was sent")
    return report.code


def _resolve(connection: Connection, report: Report) -> bool:
    relay = connection.relay
    try:
        found = socket.getaddrinfo(relay.host, relay.port,
                                   type=socket.SOCK_STREAM)
    except OSError as exc:
        error = classify(exc, relay, connection.settings)
        if error is not None:
            report.fail("resolve", error)
        return False
    addresses = sorted({str(info[4][0]) for info in found})
    report.ok("resolve", f"{relay.host} is {', '.join(addresses)}")
    return True


def _tcp(connection: Connection, report: Report) -> bool:
    relay = connection.relay
    started = time.monotonic()
    try:
        with socket.create_connection((relay.host, relay.port),
                                      timeout=connection.settings.timeout()):
            pass
    except OSError as exc:
        error = classify(exc, relay, connection.settings)
        if error is not None:
            report.fail("tcp", error)
        return False
    elapsed = (time.monotonic() - started) * 1000
    report.ok("tcp", f"connected to {relay.address} in {elapsed:.0f} ms")
    return True


def _show_tls(connection: Connection, report: Report) -> None:
    session = connection.session
    sock = session.sock if session is not None else None
    if not isinstance(sock, ssl.SSLSocket):
        return
    cipher = sock.cipher()
    report.ok("tls", f"{sock.version()}, {cipher[0] if cipher else '?'}")
    der = sock.getpeercert(binary_form=True)
    if connection.pin:
        report.ok("certificate", "matches tls-fingerprint")
    elif der is not None:
        report.ok("certificate", describe(sock.getpeercert() or {}, der))


def describe(cert: dict[str, Any], der: bytes) -> str:
    """Subject, issuer, expiry and fingerprint of a verified certificate."""
    names = [value for kind, value in cert.get("subjectAltName", ())
             if kind in ("DNS", "IP Address")]
    subject = _name(cert.get("subject", ()), prefer="commonName")
    if names:
        subject = f"{subject} for {', '.join(names)}"
    issuer = _name(cert.get("issuer", ()))
    expiry = cert.get("notAfter")
    left = ""
    if expiry:
        ends = datetime.fromtimestamp(ssl.cert_time_to_seconds(expiry),
                                      timezone.utc)
        days = (ends - datetime.now(timezone.utc)).days
        left = f", expires {ends:%Y-%m-%d} ({days} days)"
    return (f"{subject}, issued by {issuer}{left}, trusted; "
            f"SHA-256 {trust.pretty(trust.digest(der))}")


def _name(parts: Any, prefer: str = "organizationName") -> str:
    fields = {key: value for rdn in parts for key, value in rdn}
    other = "commonName" if prefer == "organizationName" else \
        "organizationName"
    return fields.get(prefer) or fields.get(other) or "?"


def _greet(connection: Connection, report: Report) -> None:
    connection.greet()
    session = connection.session
    assert session is not None
    features = " ".join(sorted(name.upper() for name in
                               session.esmtp_features))
    report.ok("ehlo", features or "(no extensions)")


def _secure(connection: Connection, context: ssl.SSLContext,
            report: Report) -> None:
    connection.secure(context)
    _show_tls(connection, report)
    session = connection.session
    assert session is not None
    features = " ".join(sorted(name.upper() for name in
                               session.esmtp_features))
    report.ok("ehlo", f"after STARTTLS: {features}")


def _login(connection: Connection, report: Report) -> None:
    connection.login()
    report.ok("auth", f"{connection.user} accepted")


def _untrusted(connection: Connection, report: Report,
               error: PymailError) -> None:
    """Say why the certificate is not trusted, and show it, so that it can
    be checked and pinned. Nothing more is sent to such a relay."""
    report.fail("certificate", error)
    relay = connection.relay
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    timeout = connection.settings.timeout()
    session: smtplib.SMTP
    try:
        if relay.implicit_tls:
            session = smtplib.SMTP_SSL(relay.host, relay.port, timeout=timeout,
                                       context=context)
        else:
            session = smtplib.SMTP(relay.host, relay.port, timeout=timeout)
            session.starttls(context=context)
        sock = session.sock
        der = sock.getpeercert(binary_form=True) if isinstance(
            sock, ssl.SSLSocket) else None
        session.close()
    except (OSError, smtplib.SMTPException):
        return
    if der:
        fingerprint = trust.pretty(trust.digest(der))
        print(f"      {'':<12} its SHA-256 fingerprint is {fingerprint}; if "
              "you trust it, set tls-fingerprint to that")
    report.code = report.code or EX_PROTOCOL
