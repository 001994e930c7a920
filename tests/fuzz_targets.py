"""Fuzz targets for the parsers that read untrusted text: the mail.rc
language, address lists, and the header block that -t reads from stdin.

Each target takes bytes and must end in a result or a PymailError (which
pymail reports as one line and an exit code), never in any other exception.
tests/test_fuzz.py runs them briefly with hypothesis; for a long run with
atheris (pip install atheris):

    python tests/fuzz_targets.py mailrc -max_total_time=600
"""

from __future__ import annotations

import sys
from pathlib import Path

from pymail.addresses import expand, parse_list
from pymail.errors import PymailError
from pymail.message import Draft, Message
from pymail.rcfile import Interpreter, RcState, logical_lines
from pymail.request import Request
from pymail.send import parse_input, senders_of
from pymail.settings import Settings


class _NoSource(Interpreter):
    """`source` would read whatever file the input names; not here."""

    def _source(self, name: str, where: str) -> None:
        return None


def fuzz_mailrc(data: bytes) -> RcState | None:
    state = RcState()
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        _NoSource(state, terminal=False).run(logical_lines(text, "fuzz.rc"))
    except PymailError:
        return None
    return state


def fuzz_addresses(data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        mailboxes = expand(parse_list([text], "fuzz"), {"ops": ["a@b.c"]},
                           "fuzz")
    except PymailError:
        return
    for mailbox in mailboxes:
        assert "@" in mailbox.addr
        assert not any(c in mailbox.addr for c in "\r\n\0")


def fuzz_header_block(data: bytes) -> bytes | None:
    """What `pymail -t` does with stdin, up to the bytes on the wire."""
    settings = Settings({"from": "bot@example.com"}, {}, {})
    request = Request(to=(), read_headers=True)
    try:
        parsed = parse_input(request, settings, data)
        senders, _ = senders_of(request, parsed, settings)
        to = expand(parse_list(parsed.to, "To"), {}, "To")
        cc = expand(parse_list(parsed.cc, "Cc"), {}, "Cc")
        draft = Draft(sender=senders, to=to, cc=cc, subject=parsed.subject,
                      body=parsed.body, extra_headers=parsed.headers)
        wire = Message(draft).as_bytes()
    except PymailError:
        return None
    head = wire.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        # Every line is a field or the continuation of one: nothing typed
        # into a value can start a header of its own.
        assert line[:1] in (b" ", b"\t") or b":" in line, line
        assert not line.lower().startswith(b"bcc:"), line
    return wire


TARGETS = {"mailrc": fuzz_mailrc, "addresses": fuzz_addresses,
           "headers": fuzz_header_block}


if __name__ == "__main__":  # pragma: no cover - run by hand under atheris
    import atheris  # type: ignore[import-not-found]

    target = TARGETS[sys.argv.pop(1)]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
