"""pymail --check against a healthy relay, an untrusted certificate, a
refused password and a port nobody listens on. It never sends a message."""

from __future__ import annotations

import hashlib
import ssl

from conftest import recipe
from servers import PASSWORD, free_port, start_server


def verified(port: int, ca_file, scheme: str = "smtps") -> str:
    return recipe(port, scheme=scheme).replace(
        "set ssl-verify=ignore", f"set ssl-ca-file={ca_file}")


def test_healthy_relay(server, mailrc, run, ca_file):
    mailrc(verified(server.port, ca_file))
    result = run("--check")
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    steps = [line.split()[1] for line in lines if line.startswith("ok")]
    assert steps == ["settings", "resolve", "tcp", "greeting", "tls",
                     "certificate", "ehlo", "auth"]
    assert "TLSv1.3" in result.out or "TLSv1.2" in result.out
    assert "for localhost, 127.0.0.1, issued by" in result.out
    assert "trusted" in result.out
    assert "expires" in result.out and "SHA-256" in result.out
    assert "AUTH" in result.out and "accepted" in result.out
    assert "nothing was sent" in result.out
    assert server.messages == []
    assert PASSWORD not in result.out + result.err


def test_starttls_relay(starttls_server, mailrc, run, ca_file):
    rc = verified(starttls_server.port, ca_file, scheme="smtp").replace(
        "#set smtp-use-starttls", "set smtp-use-starttls")
    mailrc(rc)
    result = run("--check")
    assert result.code == 0, result.out
    assert "after STARTTLS:" in result.out and "AUTH" in result.out
    assert starttls_server.messages == []


def test_untrusted_certificate(rogue_cert, mailrc, run, ca_file):
    srv = start_server(cert=rogue_cert)
    try:
        mailrc(verified(srv.port, ca_file))
        result = run("--check")
    finally:
        srv.stop()
    assert result.code == 76
    assert "FAIL  certificate" in result.out and "not trusted" in result.out
    der = ssl.PEM_cert_to_DER_cert(
        rogue_cert.cert_chain_pems[0].bytes().decode())
    digest = hashlib.sha256(der).hexdigest().upper()
    assert digest[:2] + ":" + digest[2:4] in result.out
    assert "tls-fingerprint" in result.out
    assert srv.handler.logins == []  # no password to an untrusted relay


def test_refused_password(server, mailrc, run, ca_file):
    mailrc(verified(server.port, ca_file) + "set smtp-auth-password=Wr0ng\n")
    result = run("--check")
    assert result.code == 77
    assert "FAIL  auth" in result.out and "535" in result.out
    assert "app password" in result.out
    assert "Wr0ng" not in result.out


def test_nothing_listening(mailrc, run, ca_file):
    mailrc(verified(free_port(), ca_file))
    result = run("--check")
    assert result.code == 75
    assert "ok    resolve" in result.out
    assert "FAIL  tcp" in result.out and "refused" in result.out


def test_no_relay_configured(run):
    result = run("--check")
    assert result.code == 78
    assert "FAIL  settings" in result.out and "set smtp=" in result.out


def test_pinned_fingerprint_mismatch(server, mailrc, run):
    mailrc(recipe(server.port).replace("set ssl-verify=ignore",
                                       "set tls-fingerprint=" + "ab" * 32))
    result = run("--check")
    assert result.code == 76
    assert "FAIL  certificate" in result.out
    assert "does not match tls-fingerprint" in result.out
