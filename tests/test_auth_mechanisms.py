"""AUTH mechanisms beyond LOGIN and PLAIN: CRAM-MD5, and XOAUTH2 and
OAUTHBEARER with a token printed by pymail-password-command (Gmail and
Office 365), against aiosmtpd with those mechanisms added."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult

from conftest import recipe
from servers import PASSWORD, USER, Recorder, start_server

TOKEN = "ya29.a0-test-token"


class MechanismRecorder(Recorder):
    """Adds CRAM-MD5, XOAUTH2 and OAUTHBEARER to the test relay."""

    seen: list[str]

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        text = base64.b64decode(args[1]).decode()
        self.seen.append(text)
        ok = text == f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01"
        if not ok:
            challenge = base64.b64encode(b'{"status":"400"}').decode()
            await server.push(f"334 {challenge}")
            await server._reader.readline()
        return AuthResult(success=ok, handled=False)

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]
                               ) -> AuthResult:
        text = base64.b64decode(args[1]).decode()
        self.seen.append(text)
        ok = text.startswith(f"n,a={USER},\x01host=127.0.0.1\x01port=") and \
            text.endswith(f"\x01auth=Bearer {TOKEN}\x01\x01")
        return AuthResult(success=ok, handled=False)

    async def auth_CRAM__MD5(self, server: Any, args: list[str]) -> AuthResult:
        challenge = b"<12345.67890@relay.example>"
        await server.push("334 " + base64.b64encode(challenge).decode())
        line = (await server._reader.readline()).strip()
        user, digest = base64.b64decode(line).decode().split(" ")
        expected = hmac.new(PASSWORD.encode(), challenge, hashlib.md5
                            ).hexdigest()
        self.seen.append(user)
        return AuthResult(success=(user, digest) == (USER, expected),
                          handled=False)


@pytest.fixture
def relay(cert: Any):
    handler = MechanismRecorder()
    handler.seen = []
    srv = start_server(cert=cert, handler=handler)
    yield srv
    srv.stop()


def token_rc(port: int, mechanism: str, tmp_path: Any,
             token: str = TOKEN) -> str:
    vault = tmp_path / "token"
    vault.write_text(token + "\n")
    return recipe(port).replace(
        "set smtp-auth=login", f"set smtp-auth={mechanism}").replace(
        f"set smtp-auth-password={PASSWORD}",
        f"set pymail-password-command='cat {vault}'")


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_oauth_token_from_the_password_command(relay, mailrc, run, tmp_path,
                                               mechanism):
    mailrc(token_rc(relay.port, mechanism, tmp_path))
    result = run("-v", "-s", "oauth", "ops@example.org", input=b"hi\n")
    assert result.code == 0, result.err
    assert len(relay.messages) == 1
    assert f"AUTH {mechanism.upper()} ****" in result.err
    assert TOKEN not in result.err


def test_refused_token_is_one_attempt(relay, mailrc, run, tmp_path):
    mailrc(token_rc(relay.port, "xoauth2", tmp_path, token="expired"))
    result = run("-s", "oauth", "ops@example.org", input=b"hi\n")
    assert result.code == 77
    assert len(relay.handler.seen) == 1  # no fallback to PLAIN with a token
    assert "expired" not in result.err


def test_cram_md5(relay, mailrc, run):
    mailrc(recipe(relay.port).replace("smtp-auth=login", "smtp-auth=cram-md5"))
    result = run("-s", "cram", "ops@example.org", input=b"hi\n")
    assert result.code == 0, result.err
    assert relay.handler.seen == [USER]


def test_a_mechanism_the_relay_does_not_offer_is_named(server, mailrc, run):
    # The plain test relay offers LOGIN and PLAIN only.
    mailrc(recipe(server.port).replace("smtp-auth=login",
                                       "smtp-auth=cram-md5"))
    result = run("-s", "x", "ops@example.org", input=b"hi\n")
    assert result.code == 77
    assert "offers LOGIN PLAIN, not CRAM-MD5" in result.err
