"""Warnings about how pymail is set up (a readable password file, checks
turned off): shown where a person will read them, not mailed by cron on
every run.

Such a warning goes to stderr when stderr is a terminal or under -v, and to
the delivery log (`pymail-log`) when there is one.
"""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

from pymail import logs
from pymail.settings import Settings

log = logs.Logger("pymail")


def setup_logging(verbose: bool, debug: bool) -> None:
    """-v shows notes and the SMTP dialogue; warnings are always shown."""
    logs.configure(logs.DEBUG if debug else
                   logs.INFO if verbose else logs.WARNING)


def advise(settings: Settings, text: str) -> None:
    """Show a warning to a person, or record it in the delivery log."""
    if sys.stderr is not None and (sys.stderr.isatty() or
                                   log.isEnabledFor(logs.INFO)):
        print(f"pymail: warning: {text}", file=sys.stderr)
    record(settings, f"warning: {text}", warning=True)


def record(settings: Settings, line: str, *, warning: bool) -> None:
    """One line to the delivery log (`pymail-log`): syslog (facility mail)
    or a file created 0600. Nothing when there is none."""
    target = settings.delivery_log()
    if not target:
        return
    if target == "syslog":
        import syslog

        syslog.openlog("pymail", syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_WARNING if warning else syslog.LOG_INFO,
                      line)
        return
    from pymail.deadletter import append_private

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        append_private(Path(target), [f"{stamp} {line}\n".encode()])
    except OSError as exc:
        log.info("cannot write the delivery log %s: %s", target,
                 exc.strerror or exc)


def check_secrets(settings: Settings) -> None:
    """Warn about a password on the command line, and about files holding
    a password that other users can read."""
    seen: set[str] = set()
    for source, name in settings.secrets:
        if source in seen:
            continue
        seen.add(source)
        if source == "-S":
            # Not left to advise(): whoever typed it is there to read it.
            print(f"pymail: warning: the password given with -S {name}=... "
                  "can be seen by other users in `ps`; put "
                  "PYMAIL_SMTP_AUTH_PASSWORD=... in /etc/pymail.env "
                  "(chmod 600) or set pymail-password-command",
                  file=sys.stderr)
            continue
        path = Path(source)
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if not mode & (stat.S_IRWXG | stat.S_IRWXO):
            continue
        fix = f"run `chmod 600 {path}`"
        if name not in ("smtp-auth-password", "password") or \
                not path.name.endswith(".env"):
            fix += (", or move the password to /etc/pymail.env "
                    "(PYMAIL_SMTP_AUTH_PASSWORD=..., chmod 600) so that the "
                    "mail.rc can stay readable")
        advise(settings, f"{path} holds a password ({name}) and other users "
               f"can read it (mode {stat.S_IMODE(mode):04o}): {fix}")

