"""Fewer round trips, same result: PIPELINING (RFC 2920), CHUNKING (RFC
3030), SIZE (RFC 1870) and the QUIT nobody waits for.

The servers here are aiosmtpd extended with BDAT (tests/servers.py), so the
bytes and envelope they receive are checked, and the reports compared with
those of a relay that offers none of the extensions."""

from __future__ import annotations

import io
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pymail import relay
from pymail.errors import PermanentFailure
from pymail.relay import Envelope, deliver
from pymail.settings import Settings
from servers import PASSWORD, USER, Server, start_server

BOTH = ("PIPELINING", "CHUNKING")
# Line-leading dots, a bare "." line, a line without CR, 8-bit text: what
# DATA must stuff and BDAT must not.
TEXT = (b"Subject: dots\r\n\r\n.first\r\n..second\r\n.\r\nmid . dot\r\n"
        b"\xe4\xbd\xa0\xe5\xa5\xbd\r\n")


@pytest.fixture
def start(cert: Any) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(*extensions: str, **kwargs: Any) -> Server:
        made.append(start_server(cert=cert, extensions=extensions, **kwargs))
        return made[-1]
    yield make
    for srv in made:
        srv.stop()


def settings_for(srv: Server, ca_file: Path) -> Settings:
    """pymail's own choice of mechanism: no smtp-auth."""
    return Settings({"smtp": f"smtps://127.0.0.1:{srv.port}",
                     "smtp-auth-user": USER, "smtp-auth-password": PASSWORD,
                     "ssl-ca-file": str(ca_file)}, {}, {})


def rc_for(srv: Server, ca_file: Path, extra: str = "") -> str:
    return (f"set from={USER}\nset smtp=smtps://127.0.0.1:{srv.port}\n"
            f"set smtp-auth-user={USER}\nset smtp-auth-password={PASSWORD}\n"
            f"set ssl-ca-file={ca_file}\n{extra}")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# The bytes arrive as they were, whichever way they travel -------------------

@pytest.mark.parametrize("extensions", [(), ("PIPELINING",), ("CHUNKING",),
                                        BOTH])
def test_message_arrives_byte_exact(start, ca_file, extensions):
    srv = start(*extensions)
    envelope = Envelope(USER, ["a@example.org", "b@example.org"])
    outcome = deliver(settings_for(srv, ca_file), envelope, pieces(TEXT, 7))
    [got] = srv.messages
    assert got.data == TEXT
    assert got.mail_from == USER
    assert got.rcpt_tos == ["a@example.org", "b@example.org"]
    assert outcome.accepted == ["a@example.org", "b@example.org"]
    assert outcome.reply and outcome.reply.startswith("250")


def test_pipelining_sends_mail_rcpt_and_bdat_in_one_group(start, ca_file):
    srv = start(*BOTH)
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            [TEXT])
    # When MAIL was read, the rest of the group had already arrived...
    assert srv.handler.pipelined == [True]
    # ...and the whole message went as one chunk, the last.
    assert srv.handler.bdat_commands == [f"BDAT {len(TEXT)} LAST"]


def test_without_pipelining_commands_go_one_at_a_time(start, ca_file):
    srv = start("CHUNKING")
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            [TEXT])
    assert srv.handler.pipelined == [False]
    assert srv.messages[0].data == TEXT


def test_message_without_final_line_break_gets_one(start, ca_file):
    srv = start(*BOTH)
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            [b"Subject: x\r\n\r\nno end"])
    assert srv.messages[0].data == b"Subject: x\r\n\r\nno end\r\n"


def test_large_message_goes_in_bounded_chunks(start, ca_file, monkeypatch):
    monkeypatch.setattr(relay, "BDAT_CHUNK", 1000)
    srv = start(*BOTH)
    body = b"".join(b"line %05d of the message\r\n" % n for n in range(400))
    data = b"Subject: big\r\n\r\n" + body
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            pieces(data, 333))
    assert srv.messages[0].data == data
    sizes = [int(c.split()[1]) for c in srv.handler.bdat_commands]
    assert max(sizes) <= 1000
    assert sum(sizes) == len(data)
    assert [c.endswith("LAST") for c in srv.handler.bdat_commands] == \
        [False] * (len(sizes) - 1) + [True]


def test_bdat_pieces_split_at_the_size_and_end_with_last():
    data = b"abcdefghij\r\n" * 10
    got = list(relay.bdat_pieces(pieces(data, 7), size=25))
    assert b"".join(p for p, _ in got) == data
    assert all(len(p) <= 25 for p, _ in got)
    assert [last for _, last in got] == [False] * (len(got) - 1) + [True]
    # A message of exactly n chunks: the nth is the last.
    assert list(relay.bdat_pieces([b"ab\r\n", b"cd\r\n"], size=4)) == [
        (b"ab\r\n", False), (b"cd\r\n", True)]
    assert list(relay.bdat_pieces([])) == [(b"", True)]


# Refusals are reported exactly as without pipelining -------------------------

def report(start: Callable[..., Server], ca_file: Path, mailrc: Any,
           run: Any, extensions: tuple[str, ...], **replies: Any) -> Any:
    srv = start(*extensions)
    for name, value in replies.items():
        setattr(srv.handler, name, value)
    mailrc(rc_for(srv, ca_file))
    result = run("-s", "report", "a@example.org", "b@example.org",
                 input=b"body\n")
    err = result.err.replace(str(srv.port), "PORT")
    return result.code, err, srv


@pytest.mark.parametrize("replies", [
    {"rcpt_replies": {"b@example.org": "550 5.1.1 no such user"}},
    {"rcpt_replies": {"b@example.org": "450 4.2.1 try later"}},
    {"rcpt_replies": {"a@example.org": "550 5.1.1 no such user",
                      "b@example.org": "550 5.1.1 no such user"}},
    {"mail_reply": "553 5.7.1 sender not allowed"},
    {"mail_reply": "451 4.3.0 busy"},
    {"data_reply": "554 5.6.0 content rejected"},
], ids=["one-refused", "one-deferred", "all-refused", "mail-refused",
        "mail-deferred", "data-refused"])
def test_refusals_reported_as_without_pipelining(start, ca_file, mailrc, run,
                                                 home, replies):
    plain_code, plain_err, plain = report(start, ca_file, mailrc, run, (),
                                          **replies)
    dead = home / "dead.letter"
    plain_kept = dead.read_bytes().count(b"\nFrom ") + 1 if dead.exists() else 0
    dead.unlink(missing_ok=True)
    code, err, fast = report(start, ca_file, mailrc, run, BOTH, **replies)
    kept = dead.read_bytes().count(b"\nFrom ") + 1 if dead.exists() else 0
    assert (code, err, kept) == (plain_code, plain_err, plain_kept)
    assert [m.rcpt_tos for m in fast.messages] == \
        [m.rcpt_tos for m in plain.messages]
    assert fast.handler.pipelined == [True]
    assert code != 0


def test_refused_recipient_with_pipelining_and_data(start, ca_file, mailrc,
                                                    run):
    code, err, srv = report(start, ca_file, mailrc, run, ("PIPELINING",),
                            rcpt_replies={"a@example.org": "550 5.1.1 nobody"})
    assert code == 69
    assert "recipient a@example.org refused" in err and "550 5.1.1 nobody" in err
    assert [m.rcpt_tos for m in srv.messages] == [["b@example.org"]]


def test_refused_chunk_is_reported_and_kept(start, ca_file, mailrc, run, home,
                                            monkeypatch, tmp_path):
    monkeypatch.setattr(relay, "BDAT_CHUNK", 4096)
    srv = start(*BOTH)
    srv.handler.bdat_replies = {2: "552 5.3.4 message too big for policy"}
    attachment = tmp_path / "data.bin"
    attachment.write_bytes(bytes(range(256)) * 200)
    mailrc(rc_for(srv, ca_file))
    result = run("-s", "big", "-a", str(attachment), "a@example.org",
                 input=b"see attached\n")
    assert result.code == 69
    assert "message refused" in result.err and "552 5.3.4" in result.err
    assert srv.messages == []
    assert b"Subject: big" in (home / "dead.letter").read_bytes()


def test_connection_is_usable_after_a_refused_pipelined_message(
        start, ca_file):
    from pymail.relay import Connection
    srv = start(*BOTH)
    srv.handler.rcpt_replies = {"gone@example.org": "550 5.1.1 gone"}
    connection = Connection(settings_for(srv, ca_file))
    connection.open()
    try:
        first = connection.send(Envelope(USER, ["gone@example.org"]), [TEXT])
        second = connection.send(Envelope(USER, ["a@example.org"]), [TEXT])
    finally:
        connection.close()
    assert first.accepted == [] and "gone@example.org" in first.refused
    assert second.accepted == ["a@example.org"]
    assert [m.data for m in srv.messages] == [TEXT]


# SIZE (RFC 1870) -------------------------------------------------------------

def test_message_over_the_relays_size_is_refused_before_upload(start,
                                                               ca_file):
    srv = start(*BOTH, size_limit=100)
    with pytest.raises(PermanentFailure) as caught:
        deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
                [b"x" * 198 + b"\r\n"], size=200)
    assert "200 bytes" in caught.value.message
    assert "at most" in caught.value.message and "100 bytes" in \
        caught.value.message
    # Nothing was sent: not even MAIL.
    assert "MAIL" not in srv.handler.commands
    assert srv.handler.bdat_commands == []


def test_size_is_declared_in_mail_from(start, ca_file):
    srv = start(*BOTH, size_limit=10_000)
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            [TEXT], size=len(TEXT))
    assert srv.handler.mail_options == [[f"SIZE={len(TEXT)}"]]
    assert srv.messages[0].data == TEXT


# Round trips ------------------------------------------------------------------

def transcript(run: Any, *args: str) -> list[str]:
    result = run("-v", "-s", "t", *args, "a@example.org", input=b"body\n")
    assert result.code == 0, result.err
    return [line for line in result.err.splitlines() if ">>>" in line]


def test_plain_login_takes_one_command(start, ca_file, mailrc, run):
    srv = start(*BOTH)
    mailrc(rc_for(srv, ca_file))
    sent = transcript(run)
    auth = [line for line in sent if "AUTH" in line]
    assert len(auth) == 1 and auth[0].endswith("AUTH PLAIN ****")
    # One EHLO on an implicit TLS connection.
    assert sum("EHLO" in line.upper() for line in sent) == 1
    assert PASSWORD not in "".join(sent)


def test_starttls_says_ehlo_again_once(cert, ca_file, mailrc, run):
    srv = start_server(cert=cert, tls="starttls", extensions=BOTH)
    try:
        mailrc(rc_for(srv, ca_file, "set smtp-use-starttls\n").replace(
            "smtps://", "smtp://"))
        sent = transcript(run)
    finally:
        srv.stop()
    assert sum("EHLO" in line.upper() for line in sent) == 2
    assert srv.handler.pipelined == [True]


def test_quit_reply_is_not_awaited(raw_tls, mailrc, run, ca_file):
    """A relay that answers QUIT only after the client hangs up: waiting
    for its reply would hang until the timeout."""
    script = ["220 hi", "250-x\r\n250-PIPELINING\r\n250 CHUNKING", "250 ok\r\n"
              "250 ok\r\n250 2.0.0 queued"]
    srv = raw_tls(script)
    mailrc(f"set from={USER}\nset smtp=smtps://127.0.0.1:{srv.port}\n"
           f"set ssl-ca-file={ca_file}\nset socket-connect-timeout=60\n")
    done = threading.Event()
    result: list[Any] = []

    def go() -> None:
        result.append(run("-s", "t", "a@example.org", input=b"body\n"))
        done.set()
    # The scripted server reads one line per reply: the group's first line
    # gets all three replies, then it reads on without answering QUIT.
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert done.wait(30), "pymail waited for the reply to QUIT"
    assert result[0].code == 0, result[0].err
    heard = b"".join(srv.heard)
    assert heard.upper().startswith(b"EHLO") and b"MAIL FROM" in heard


def test_pipelined_group_is_logged_in_the_transcript(start, ca_file, mailrc,
                                                     run):
    srv = start(*BOTH)
    mailrc(rc_for(srv, ca_file))
    sent = transcript(run)
    group = [re.sub(r".*>>> ", "", line) for line in sent]
    i = next(n for n, line in enumerate(group) if line.startswith("MAIL"))
    assert group[i + 1].startswith("RCPT TO:<a@example.org>")
    assert re.fullmatch(r"BDAT \d+ LAST", group[i + 2])
    assert group[-1] == "QUIT"


def test_cli_send_through_pipelining_relay_keeps_attachment_exact(
        start, ca_file, mailrc, run, tmp_path, monkeypatch):
    import email
    from email import policy
    monkeypatch.setattr(relay, "BDAT_CHUNK", 10_000)
    srv = start(*BOTH)
    blob = bytes(range(256)) * 300
    (tmp_path / "blob.bin").write_bytes(blob)
    mailrc(rc_for(srv, ca_file))
    result = run("-s", "blob", "-a", str(tmp_path / "blob.bin"),
                 "a@example.org", input=b".hidden dot line\n")
    assert result.code == 0, result.err
    [got] = srv.messages
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    parts = list(parsed.iter_parts())
    assert parts[0].get_content().replace("\r\n", "\n") == \
        ".hidden dot line\n"
    assert parts[1].get_content() == blob
    assert len(srv.handler.bdat_commands) > 1


def test_sendmail_entry_pipelines_too(start, ca_file, mailrc, monkeypatch):
    from pymail.sendmail import main as sendmail_main
    srv = start(*BOTH)
    mailrc(rc_for(srv, ca_file))
    message = b"To: a@example.org\nSubject: cron\n\n.dot\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(message)))
    with pytest.raises(SystemExit) as exited:
        sendmail_main(["-t"], program="sendmail")
    assert not exited.value.code
    assert srv.handler.pipelined == [True]
    assert srv.messages[0].data.endswith(b"\r\n.dot\r\n")


# Batches: one connection, one login, one round trip per message ------------

def test_flush_uses_one_login_and_pipelines_each_message(start, ca_file, mailrc,
                                                         run, tmp_path, home):
    import json

    from servers import free_port
    queue = tmp_path / "queue"
    offline = f"set pymail-queue={queue}\nset socket-connect-timeout=2\n"
    srv = start(*BOTH)
    mailrc(rc_for(srv, ca_file, offline).replace(str(srv.port),
                                                 str(free_port())))
    recipients = [f"user{n}@example.org" for n in range(6)]
    for n, rcpt in enumerate(recipients):
        assert run("-s", f"n{n}", rcpt, input=b"queued\n").code == 0
    ids = [json.loads(p.read_text())["id"]
           for p in sorted(queue.glob("*.json"))]
    assert len(ids) == 6
    srv.handler.rcpt_replies = {"user3@example.org": "550 5.1.1 gone"}
    mailrc(rc_for(srv, ca_file, offline))
    result = run("--flush", *ids)
    assert "user3@example.org" in result.err and "550 5.1.1 gone" in result.err
    assert len(srv.handler.logins) == 1
    assert srv.handler.commands.count("EHLO") == 1
    assert srv.handler.pipelined == [True] * 6
    assert sorted(m.rcpt_tos[0] for m in srv.messages) == \
        [r for r in recipients if r != "user3@example.org"]
    assert list(queue.glob("*.json")) == []
    assert b"user3@example.org" in (home / "dead.letter").read_bytes()


def test_flush_declares_each_queued_message_size(start, ca_file, mailrc, run,
                                                 tmp_path):
    import json

    from servers import free_port
    queue = tmp_path / "queue"
    offline = f"set pymail-queue={queue}\nset socket-connect-timeout=2\n"
    srv = start(*BOTH, size_limit=1_000_000)
    mailrc(rc_for(srv, ca_file, offline).replace(str(srv.port),
                                                 str(free_port())))
    assert run("-s", "sized", "a@example.org", input=b"queued\n").code == 0
    [meta] = [json.loads(p.read_text()) for p in queue.glob("*.json")]
    mailrc(rc_for(srv, ca_file, offline))
    assert run("--flush", meta["id"]).code == 0
    [got] = srv.messages
    assert srv.handler.mail_options == [[f"SIZE={len(got.data)}"]]


def queue_messages(run: Any, mailrc: Any, srv: Server, ca_file: Path,
                   queue: Path, messages: list[tuple[str, str]]) -> list[str]:
    """Queue (sender, recipient) messages while the relay is away; their
    ids, oldest first."""
    import json

    from servers import free_port
    offline = f"set pymail-queue={queue}\nset socket-connect-timeout=2\n"
    mailrc(rc_for(srv, ca_file, offline).replace(str(srv.port),
                                                 str(free_port())))
    for sender, rcpt in messages:
        assert run("-r", sender, "-s", rcpt, rcpt, input=b"q\n").code == 0
    entries = [json.loads(p.read_text()) for p in queue.glob("*.json")]
    mailrc(rc_for(srv, ca_file, offline))
    return [e["id"] for e in sorted(entries, key=lambda e: e["created"])]


def test_flush_writes_small_messages_in_one_batch(start, ca_file, mailrc, run,
                                                  tmp_path):
    srv = start(*BOTH)
    queue = tmp_path / "queue"
    ids = queue_messages(run, mailrc, srv, ca_file, queue,
                         [(USER, f"u{n}@example.org") for n in range(5)])
    assert run("--flush", *ids).code == 0
    # Behind the first MAIL, the four other messages had already arrived.
    assert srv.handler.ahead[0] == 4
    assert [m.rcpt_tos for m in srv.messages] == \
        [[f"u{n}@example.org"] for n in range(5)]
    assert list(queue.glob("*.json")) == []


def test_failures_in_a_batch_touch_only_their_message(start, ca_file, mailrc,
                                                      run, tmp_path, home):
    import json
    srv = start(*BOTH)
    queue = tmp_path / "queue"
    ids = queue_messages(run, mailrc, srv, ca_file, queue, [
        (USER, "ok1@example.org"),
        ("banned@example.com", "ok2@example.org"),
        (USER, "gone@example.org"),
        (USER, "later@example.org"),
        (USER, "spam@example.org"),
        (USER, "ok3@example.org")])
    srv.handler.mail_replies = {"banned@example.com": "553 5.7.1 not you"}
    srv.handler.rcpt_replies = {"gone@example.org": "550 5.1.1 gone",
                                "later@example.org": "451 4.3.0 later"}
    srv.handler.data_replies = {"spam@example.org": "554 5.7.1 spam"}
    result = run("--flush", *ids)
    assert srv.handler.ahead[0] == 5
    assert [m.rcpt_tos for m in srv.messages] == [["ok1@example.org"],
                                                  ["ok3@example.org"]]
    dead = (home / "dead.letter").read_bytes()
    for refused in (b"553 5.7.1 not you", b"550 5.1.1 gone",
                    b"554 5.7.1 spam"):
        assert refused in dead
        assert refused.decode() in result.err
    # The temporary refusal stays queued, with its reason.
    [left] = [json.loads(p.read_text()) for p in queue.glob("*.json")]
    assert left["recipients"] == ["later@example.org"]
    assert "451 4.3.0 later" in left["last_error"]


def test_unwritable_dead_letter_in_a_batch_settles_the_others(
        start, ca_file, mailrc, run, tmp_path, home):
    import json
    srv = start(*BOTH)
    queue = tmp_path / "queue"
    dead = tmp_path / "dead-is-a-directory"
    dead.mkdir()
    ids = queue_messages(run, mailrc, srv, ca_file, queue,
                         [(USER, f"u{n}@example.org") for n in range(4)])
    mailrc(rc_for(srv, ca_file, f"set pymail-queue={queue}\n"
                  f"set DEAD={dead}\n"))
    srv.handler.rcpt_replies = {"u1@example.org": "550 5.1.1 gone"}
    result = run("--flush", *ids)
    assert result.code == 73, result.err
    assert "cannot write" in result.err and "stays in the queue" in result.err
    assert srv.handler.ahead[0] == 3  # one batch
    delivered = ["u0@example.org", "u2@example.org", "u3@example.org"]
    assert [m.rcpt_tos[0] for m in srv.messages] == delivered
    # Only the refused message is left, and nothing is sent twice.
    [left] = [json.loads(p.read_text()) for p in queue.glob("*.json")]
    assert left["id"] == ids[1] and left["recipients"] == ["u1@example.org"]
    assert len(list(queue.glob("*.eml"))) == 1
    run("--flush", *ids[1:])
    assert [m.rcpt_tos[0] for m in srv.messages] == delivered


def test_connection_lost_mid_batch_keeps_the_unanswered(raw_tls, mailrc, run,
                                                        ca_file, tmp_path,
                                                        cert):
    import json
    srv = start_server(cert=cert, extensions=BOTH)
    queue = tmp_path / "queue"
    try:
        ids = queue_messages(run, mailrc, srv, ca_file, queue,
                             [(USER, f"u{n}@example.org") for n in range(3)])
    finally:
        srv.stop()
    # Answers the first message of the batch in full, then hangs up.
    raw = raw_tls(["220 hi", "250-x\r\n250-PIPELINING\r\n250 CHUNKING",
                   "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 queued", None])
    mailrc(f"set from={USER}\nset smtp=smtps://127.0.0.1:{raw.port}\n"
           f"set ssl-ca-file={ca_file}\nset pymail-queue={queue}\n")
    result = run("--flush", *ids)
    assert result.code == 0, result.err
    left = sorted((json.loads(p.read_text()) for p in queue.glob("*.json")),
                  key=lambda e: e["created"])
    assert [e["id"] for e in left] == ids[1:]
    assert all("closed the connection" in e["last_error"] for e in left)
    assert all(e["attempts"] == 2 for e in left)


def test_cli_send_over_the_relays_size_is_kept_not_uploaded(start, ca_file,
                                                            mailrc, run, home,
                                                            tmp_path):
    srv = start(*BOTH, size_limit=5000)
    (tmp_path / "big.bin").write_bytes(b"\x00" * 6000)
    mailrc(rc_for(srv, ca_file))
    result = run("-s", "too big", "-a", str(tmp_path / "big.bin"),
                 "a@example.org", input=b"see attached\n")
    assert result.code == 69
    assert "accepts at most" in result.err and "5000 bytes" in result.err
    assert "MAIL" not in srv.handler.commands
    assert b"Subject: too big" in (home / "dead.letter").read_bytes()


def test_cli_declares_the_exact_size(start, ca_file, mailrc, run, tmp_path):
    srv = start(*BOTH, size_limit=10_000_000)
    (tmp_path / "a.txt").write_bytes(b"attached\n" * 100)
    mailrc(rc_for(srv, ca_file))
    assert run("-s", "sized", "-a", str(tmp_path / "a.txt"), "a@example.org",
               input=b"body\n").code == 0
    [got] = srv.messages
    assert srv.handler.mail_options == [[f"SIZE={len(got.data)}"]]


def test_replies_are_acknowledged_at_once(start, ca_file, monkeypatch):
    """Before each reply is read, delayed ACKs are turned off (see
    relay.quick_ack): Postfix's greeting otherwise waits up to 40 ms."""
    import socket
    seen: list[int] = []
    real = relay.quick_ack

    def spy(sock: Any) -> None:
        real(sock)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))
    monkeypatch.setattr(relay, "quick_ack", spy)
    srv = start(*BOTH)
    deliver(settings_for(srv, ca_file), Envelope(USER, ["a@example.org"]),
            [TEXT])
    # The greeting, EHLO, AUTH and the group's three replies.
    assert len(seen) >= 6
    assert all(seen)
