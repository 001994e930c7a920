"""`pymail --demo`: one real send, end to end, with nothing configured.

Starts an SMTP relay on 127.0.0.1 that speaks implicit TLS with a
certificate from a throw-away CA and wants AUTH, writes a mail.rc in the
form people already have for heirloom mailx, runs the installed pymail
command against it, and shows what the relay received.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymail.errors import EX_UNAVAILABLE, ConfigError

DEMO_USER = "demo@example.com"
DEMO_PASSWORD = "demo-app-password"
SUBJECT = "pymail demo: 磁盘告警 disk alert"
BODY = "Hello from pymail.\n这是一封测试邮件 (a test message).\n"


def run_demo() -> int:
    """Run the demo; returns pymail's exit status."""
    try:
        import trustme
        from aiosmtpd.controller import Controller
    except ImportError as exc:
        raise ConfigError("the demo needs aiosmtpd and trustme",
                          hint="in pymail's clone, run pip install '.[demo]' with "
                          "the pip of pymail's venv") from exc

    import logging
    import ssl

    # aiosmtpd logs a deprecation note for every login; not the user's concern.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    received: list[Any] = []
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    port = _free_port()
    controller = Controller(_Handler(received), hostname="127.0.0.1", port=port,
                            ssl_context=context, server_hostname="127.0.0.1",
                            authenticator=_check_login, auth_require_tls=False)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(prefix="pymail-demo-") as tmp:
            return _send(Path(tmp), ca, port, received)
    finally:
        controller.stop()


def _send(tmp: Path, ca: Any, port: int, received: list[Any]) -> int:
    ca_file = tmp / "demo-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rc = tmp / "mail.rc"
    rc.write_text(
        f"set from={DEMO_USER}\n"
        f"set smtp=smtps://127.0.0.1:{port}\n"
        f"set smtp-auth-user={DEMO_USER}\n"
        f"set smtp-auth-password={DEMO_PASSWORD}\n"
        "set smtp-auth=login\n"
        f"set ssl-ca-file={ca_file}\n")
    rc.chmod(0o600)
    print(f"A TLS relay with AUTH is listening on 127.0.0.1:{port}.")
    print("pymail reads this mail.rc (password masked):\n")
    for line in rc.read_text().splitlines():
        if "password" in line:
            line = line.split("=", 1)[0] + "=****"
        print("    " + line)
    command = _pymail_command()
    print(f"\n$ echo ... | {' '.join(command[-1:])} -s '{SUBJECT}' "
          "ops@example.org\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYMAIL_")}
    env.update(MAILRC=str(rc), HOME=str(tmp))
    result = subprocess.run([*command, "-n", "-s", SUBJECT, "ops@example.org"],
                            input=BODY.encode(), env=env, check=False)
    if result.returncode != 0 or not received:
        print(f"pymail exited {result.returncode}; the relay received nothing.")
        return result.returncode or EX_UNAVAILABLE
    envelope = received[0]
    print(f"pymail exited 0. The relay received, from <{envelope.mail_from}> "
          f"to {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}:\n")
    text = envelope.original_content.decode("ascii", "replace")
    print("    " + "\n    ".join(text.replace("\r\n", "\n").splitlines()))
    from email import message_from_bytes, policy

    parsed = message_from_bytes(envelope.original_content, policy=policy.default)
    body = parsed.get_body()
    print("\nDecoded, as a mail client shows it:")
    print(f"    Subject: {parsed['subject']}")
    text = body.get_content() if body is not None else ""
    print("    " + "\n    ".join(text.splitlines()))
    print("\nNext: put your relay in ~/.mailrc or /etc/mail.rc "
          "(see examples/mail.rc.sample).")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pymail_command() -> list[str]:
    """The pymail on PATH (what cron runs), else this interpreter's."""
    found = shutil.which("pymail")
    return [found] if found else [sys.executable, "-m", "pymail"]


class _Handler:
    def __init__(self, received: list[Any]) -> None:
        self.received = received

    async def handle_DATA(self, server: Any, session: Any,
                          envelope: Any) -> str:
        self.received.append(envelope)
        return "250 2.0.0 accepted by the pymail demo relay"


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    ok = (getattr(data, "login", b"") == DEMO_USER.encode()
          and getattr(data, "password", b"") == DEMO_PASSWORD.encode())
    return AuthResult(success=ok)
