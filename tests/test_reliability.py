"""No message is ever lost: dead.letter with its envelope and --resend, the
queue and --flush, partial acceptance, deadlines, signals, the delivery log.
All against real servers on 127.0.0.1 that fail on purpose."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Result, recipe
from pymail import maintenance
from servers import (
    PASSWORD,
    RawServer,
    Recorder,
    Server,
    StreamServer,
    free_port,
    start_server,
)

BODY = b"backup of /srv failed at 03:00\n"
TO = "ops@example.org"


def send(run: Callable[..., Result], *args: str, to: str = TO) -> Result:
    return run("-s", "backup", *args, to, input=BODY)




@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue"


def queue_rc(port: int, queue_dir: Path, extra: str = "") -> str:
    return recipe(port, extra=f"set pymail-queue={queue_dir}\n"
                  "set socket-connect-timeout=2\n" + extra)


def queued(queue_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(queue_dir.glob("*.json"))]


# dead.letter and --resend -------------------------------------------------

def test_dead_letter_records_the_whole_envelope(mailrc, run, home):
    mailrc(recipe(free_port()))
    result = send(run, "-c", "cc@example.org", "-b", "hidden@example.org")
    assert result.code == 75
    kept = (home / "dead.letter").read_bytes()
    assert kept.startswith(b"From bot@example.com ")
    assert b"X-Pymail-Envelope-From: <bot@example.com>" in kept
    for address in (TO, "cc@example.org", "hidden@example.org"):
        assert f"X-Pymail-Envelope-To: <{address}>".encode() in kept
    assert b"X-Pymail-Error: connection to" in kept
    assert (home / "dead.letter").stat().st_mode & 0o777 == 0o600


def test_resend_delivers_to_the_original_envelope(server, mailrc, run, home):
    mailrc(recipe(free_port()))
    assert send(run, "-b", "hidden@example.org").code == 75
    assert send(run, to="second@example.org").code == 75
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 0, result.err
    assert "resent 2 of 2" in result.out
    first, second = server.messages
    assert first.rcpt_tos == [TO, "hidden@example.org"]
    assert second.rcpt_tos == ["second@example.org"]
    assert b"X-Pymail" not in first.data
    assert b"hidden@example.org" not in first.data
    assert BODY.replace(b"\n", b"\r\n") in first.data
    # Each entry leaves dead.letter once it is delivered.
    assert not (home / "dead.letter").exists()


def resend_to(cert: Any, mailrc: Callable[[str], Path],
              run: Callable[..., Result], rcpt_replies: dict[str, str]
              ) -> tuple[Result, Server]:
    """`pymail --resend` to a relay answering RCPT as told; the relay is
    stopped after (what it received stays readable)."""
    srv = start_server(cert=cert, handler=Recorder(rcpt_replies=rcpt_replies))
    try:
        mailrc(recipe(srv.port))
        return run("--resend"), srv
    finally:
        srv.stop()


@pytest.mark.parametrize("reply, code", [("550 5.1.1 no such", 69),
                                         ("451 4.3.0 later", 75)])
def test_resend_keeps_what_is_refused(cert, mailrc, run, home, reply, code):
    mailrc(recipe(free_port()))
    assert send(run, "-c", "gone@example.org").code == 75
    result, srv = resend_to(cert, mailrc, run, {"gone@example.org": reply})
    # A temporary refusal is EX_TEMPFAIL, as for a send.
    assert result.code == code, result.err
    assert reply in result.err
    assert srv.messages[0].rcpt_tos == [TO]
    kept = (home / "dead.letter").read_bytes()
    assert b"X-Pymail-Envelope-To: <gone@example.org>" in kept
    assert f"X-Pymail-Envelope-To: <{TO}>".encode() not in kept


def test_two_resends_at_once_never_send_twice(server, mailrc, run, home):
    import fcntl
    mailrc(recipe(free_port()))
    assert send(run).code == 75
    mailrc(recipe(server.port))
    lock = home / ".dead.letter.resend-lock"
    with open(lock, "a") as held:  # another --resend is running
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run("--resend")
    assert result.code == 75
    assert "another --resend" in result.err
    assert server.messages == []
    assert run("--resend").code == 0
    assert len(server.messages) == 1


def test_resend_partial_refusal_with_a_full_disk_sends_nothing_twice(
        cert, mailrc, run, home, tmp_path):
    import resource
    mailrc(recipe(free_port()))
    assert send(run, "-c", "gone@example.org").code == 75
    assert send(run, to="second@example.org").code == 75
    dead = home / "dead.letter"
    handler = Recorder(rcpt_replies={"gone@example.org": "550 5.1.1 gone"})
    srv = start_server(cert=cert, handler=handler)
    rc = tmp_path / "mail.rc"
    rc.write_text(recipe(srv.port))
    limit = dead.stat().st_size  # the copy for gone@ cannot be appended

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pymail", "-n", "--resend"],
            env={**os.environ, "MAILRC": str(rc), "HOME": str(home)},
            capture_output=True, preexec_fn=full_disk, timeout=60)
        assert proc.returncode == 73, proc.stderr
        assert b"cannot write" in proc.stderr
        assert BODY in proc.stderr  # the copy for gone@ is not lost
        assert [m.rcpt_tos for m in srv.messages] == [[TO],
                                                      ["second@example.org"]]
        # Both left the file: a second run sends nothing again.
        assert not dead.exists()
        run("--resend")
        assert len(srv.messages) == 2
    finally:
        srv.stop()


@pytest.mark.parametrize("order", [("perm", "temp"), ("temp", "perm")])
def test_resend_reports_a_permanent_refusal_over_a_temporary_one(
        cert, mailrc, run, order):
    mailrc(recipe(free_port()))
    for name in order:
        assert send(run, to=f"{name}@example.org").code == 75
    result, _ = resend_to(cert, mailrc, run,
                          {"perm@example.org": "550 5.1.1 no such",
                           "temp@example.org": "450 4.2.0 busy"})
    assert result.code == 69, result.err


def test_broken_mail_rc_keeps_a_message_with_no_body(server, mailrc, run,
                                                      home, tmp_path):
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n")
    mailrc(recipe(server.port) + "'unterminated\n")
    # A subject-only alert, an attachment-only report: stdin is empty.
    result = run("-s", "backup failed", "-a", str(report), TO)
    assert result.code == 78
    assert b"backup failed" in (home / "dead.letter").read_bytes()
    mailrc(recipe(server.port))
    assert run("--resend").code == 0
    message = email.message_from_bytes(server.messages[0].data,
                                       policy=email.policy.default)
    assert message["Subject"] == "backup failed"
    [attached] = message.iter_attachments()
    assert attached.get_payload(decode=True) == b"a,b\n"


def test_resend_keeps_what_precedes_the_first_entry(server, mailrc, run,
                                                    home):
    # bsd-mailx and heirloom write dead.letter without a From_ line.
    theirs = b"To: boss@example.org\nSubject: q3\n\nimportant text\n"
    (home / "dead.letter").write_bytes(theirs)
    mailrc(recipe(free_port()))
    assert send(run).code == 75
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 0, result.err
    assert len(server.messages) == 1
    assert (home / "dead.letter").read_bytes() == theirs


def test_resend_through_a_symbolic_link_empties_the_file(server, mailrc, run,
                                                         home, tmp_path):
    real = tmp_path / "real.dead"
    real.write_bytes(b"")
    (home / "dead.letter").symlink_to(real)
    mailrc(recipe(free_port()))
    assert send(run).code == 75
    mailrc(recipe(server.port))
    assert run("--resend").code == 0
    assert (home / "dead.letter").is_symlink()
    assert real.read_bytes() == b""  # emptied, and still there to keep mail
    assert run("--resend", str(real)).code == 0
    assert len(server.messages) == 1
    missing = run("--resend", str(tmp_path / "typo"))
    assert missing.code == 66  # named: it must exist
    assert "typo: no such file" in missing.err


def test_a_dangling_link_of_ones_own_gets_its_file(mailrc, run, home,
                                                   tmp_path):
    real = tmp_path / "mail" / "dead.letter"
    real.parent.mkdir()
    (home / "dead.letter").symlink_to(real)  # nothing there yet
    mailrc(recipe(free_port()))
    assert send(run).code == 75
    assert BODY in real.read_bytes()
    assert (home / "dead.letter").is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="lchown needs root")
@pytest.mark.parametrize("chained", [False, True])
def test_a_dangling_link_of_someone_elses_is_not_followed(mailrc, run, home,
                                                          tmp_path, chained):
    real = tmp_path / "planted"
    theirs = tmp_path / "shared.dead.letter"
    theirs.symlink_to(real)
    os.lchown(theirs, 65534, 65534)
    if chained:  # through a link of one's own first
        (home / "dead.letter").symlink_to(theirs)
    else:
        theirs.rename(home / "dead.letter")
    mailrc(recipe(free_port()))
    result = send(run)
    assert result.code == 73  # printed on stderr instead
    assert BODY.decode() in result.err
    assert not real.exists()


def test_resend_that_cannot_rewrite_the_file_marks_what_it_sent(
        cert, mailrc, run, home):
    mailrc(recipe(free_port()))
    for name in ("sent", "refused"):
        assert send(run, to=f"{name}@example.org").code == 75
    # The copy cannot be made (as on a full disk): in its place, a directory.
    blocker = home / f".dead.letter.{os.getpid()}.tmp"
    blocker.mkdir()
    result, first = resend_to(cert, mailrc, run,
                              {"refused@example.org": "550 5.1.1 no such"})
    assert result.code == 69, result.err
    assert "marked X-Pymail-Resent-Before" in result.err
    blocker.rmdir()
    again, second = resend_to(cert, mailrc, run, {})
    assert again.code == 0, again.err
    assert "resent 1 of 1 message(s)" in again.out
    assert "removed 1 an earlier run had sent" in again.out
    assert [m.rcpt_tos for m in first.messages + second.messages] == [
        ["sent@example.org"], ["refused@example.org"]]
    # Once the file can be rewritten, what was marked sent leaves it too.
    assert not (home / "dead.letter").exists()


def test_a_bug_with_one_kept_message_leaves_it_and_resends_the_rest(
        server, mailrc, run, home, monkeypatch):
    mailrc(recipe(free_port()))
    for name in ("one", "two", "three"):
        assert send(run, to=f"{name}@example.org").code == 75
    prepared = maintenance._prepared

    def buggy(settings: Any, kept: Any, opened: Any) -> Any:
        if kept.recipients == ["two@example.org"]:
            raise RuntimeError("a bug")
        return prepared(settings, kept, opened)
    monkeypatch.setattr(maintenance, "_prepared", buggy)
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 70
    assert "internal error while resending (RuntimeError)" in result.err
    assert [m.rcpt_tos for m in server.messages] == [["one@example.org"],
                                                     ["three@example.org"]]
    left = (home / "dead.letter").read_bytes()
    assert left.count(b"\nFrom ") == 0 and b"<two@example.org>" in left


class StallAtMail(Recorder):
    """Takes `after` messages, then stalls at the next one's MAIL (setting
    `stalled`, the test's cue to interrupt the client)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.stalled = threading.Event()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                          address: str, options: list[str]) -> str:
        if len(self.messages) == self.after:
            self.stalled.set()
            await asyncio.sleep(30)
        return await super().handle_MAIL(server, session, envelope, address,
                                         options)


@pytest.mark.parametrize("numbers", [[signal.SIGTERM],
                                     [signal.SIGTERM, signal.SIGINT]])
def test_resend_interrupted_removes_what_it_delivered(cert, mailrc, run, home,
                                                      numbers):
    rc = mailrc(recipe(free_port()))
    for n in range(5):
        assert send(run, to=f"m{n}@example.org").code == 75
    handler = StallAtMail(after=2)
    srv = start_server(cert=cert, handler=handler)
    rc.write_text(recipe(srv.port))
    env = {**os.environ, "MAILRC": str(rc), "HOME": str(home)}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pymail", "--resend"],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        assert handler.stalled.wait(20)
        for number in numbers:  # a second one must not cut the way out
            proc.send_signal(number)
        _, err = proc.communicate(timeout=20)
    finally:
        srv.stop()
    assert proc.returncode == 75, err
    assert b"pymail: interrupted by SIG" in err and b"Traceback" not in err
    left = (home / "dead.letter").read_bytes()
    assert [m.rcpt_tos for m in handler.messages] == [["m0@example.org"],
                                                      ["m1@example.org"]]
    assert b"<m0@" not in left and b"<m1@" not in left
    assert all(f"<m{n}@".encode() in left for n in (2, 3, 4))


def test_unbuilt_message_keeps_attachments_and_headers(server, mailrc, run,
                                                       home, tmp_path):
    report = tmp_path / "report.csv"
    report.write_bytes(b"host,free\nweb-01,3%\n")
    mailrc(recipe(server.port))
    # `root` has no alias yet: the message cannot be built.
    result = run("-s", "磁盘告警", "-a", str(report), "-c", "cc@example.org",
                 "-b", "hidden@example.org", "root", input=b"disk full\n")
    assert result.code == 65
    assert b"X-Pymail-Attach: " + bytes(report) in \
        (home / "dead.letter").read_bytes()
    mailrc(recipe(server.port, extra="alias root ops@example.org\n"))
    resent = run("--resend")
    assert resent.code == 0, resent.err
    [got] = server.messages
    assert got.rcpt_tos == ["ops@example.org", "cc@example.org",
                            "hidden@example.org"]
    message = email.message_from_bytes(got.data, policy=email.policy.default)
    assert message["Subject"] == "磁盘告警"
    assert message["To"].addresses[0].addr_spec == "ops@example.org"
    assert message["Cc"].addresses[0].addr_spec == "cc@example.org"
    assert b"hidden@example.org" not in got.data
    body, attached = message.iter_parts()
    assert body.get_content().strip() == "disk full"
    assert attached.get_filename() == "report.csv"
    assert attached.get_payload(decode=True) == b"host,free\nweb-01,3%\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("option", ["-a", "-q"])
def test_resend_reads_no_file_named_in_another_users_file(
        server, mailrc, run, home, tmp_path, option):
    secret = tmp_path / "shadow"
    if option == "-a":
        secret.write_bytes(b"root:$6$secret\n")
    # (-q's file is kept by name only when it could not be read.)
    mailrc(recipe(server.port))
    assert run("-s", "x", option, str(secret), "root",
               input=b"hi\n").code in (65, 66)
    secret.write_bytes(b"root:$6$secret\n")
    # As if another user had written it, naming a file only root can read.
    theirs = tmp_path / "their.dead.letter"
    (home / "dead.letter").rename(theirs)
    os.chown(theirs, 65534, 65534)
    mailrc(recipe(server.port, extra="alias root ops@example.org\n"))
    result = run("--resend", str(theirs))
    assert result.code == 77, result.err
    assert "another user's" in result.err
    assert server.messages == []
    assert str(secret).encode() in theirs.read_bytes()


@pytest.mark.parametrize("t", [False, True])
def test_unbuilt_message_keeps_r_C_M_and_q(server, mailrc, run, home,
                                           tmp_path, t):
    quote = tmp_path / "quote.txt"
    quote.write_bytes(b"QUOTED FILE TEXT\n")
    mailrc(recipe(server.port))
    args = ["-s", "report", "-r", "Alert Bot <alert@example.com>",
            "-C", "X-Tag: nightly", "-M", "text/html", "-q", str(quote)]
    if t:
        body = b"To: root\nSubject: from body\n\n<b>hi</b>\n"
        assert run(*args, "-t", input=body).code == 65
    else:
        assert run(*args, "root", input=b"<b>hi</b>\n").code == 65
    mailrc(recipe(server.port, extra="alias root ops@example.org\n"))
    resent = run("--resend")
    assert resent.code == 0, resent.err
    [got] = server.messages
    assert got.mail_from == "alert@example.com"
    assert got.rcpt_tos == ["ops@example.org"]
    message = email.message_from_bytes(got.data, policy=email.policy.default)
    assert message["From"].addresses[0].display_name == "Alert Bot"
    assert message["Subject"] == "report"  # -s beats the body's Subject
    assert message["X-Tag"] == "nightly"
    assert message.get_content_type() == "text/html"
    assert message.get_content().replace("\r\n", "\n") == \
        "QUOTED FILE TEXT\n<b>hi</b>\n"


def test_unbuilt_message_envelope_survives_as_given(server, mailrc, run, home,
                                                   tmp_path):
    odd = tmp_path / "50%\nreport.csv"  # a newline and a % in the name
    odd.write_bytes(b"a,b\n")
    many = ", ".join(f"user{n}@example.org" for n in range(250))  # ~5.7 KB
    gbk_subject = "磁盘告警".encode("gbk").decode("utf-8", "surrogateescape")
    mailrc(recipe(server.port))
    result = run("-S", "ttycharset=gbk", "-s", gbk_subject, "-a", str(odd),
                 "Ops Team <ops@example.org>", many, "root", input=b"hi\n")
    assert result.code == 65
    mailrc(recipe(server.port, extra="alias root ops@example.org\n"
                  "set ttycharset=gbk\n"))
    resent = run("--resend")
    assert resent.code == 0, resent.err
    [got] = server.messages
    assert got.rcpt_tos == ["ops@example.org"] + [
        f"user{n}@example.org" for n in range(250)]
    message = email.message_from_bytes(got.data, policy=email.policy.default)
    assert message["Subject"] == "磁盘告警"
    [attached] = [p for p in message.iter_attachments()]
    assert attached.get_payload(decode=True) == b"a,b\n"


def without_date_and_ids(data: bytes) -> bytes:
    """A message with what differs between two builds taken out."""
    data = re.sub(rb"^(Date|Message-ID): .*\r\n", b"", data, flags=re.M)
    for boundary in set(re.findall(rb'boundary="([^"]+)"', data)):
        data = data.replace(boundary, b"BOUNDARY")
    return data


GZIPPED = gzip.compress(bytes(range(256)) * 8 + b"\r\n\n\r")


@pytest.mark.parametrize("args, body", [
    (["-s", "x", "-M", "application/gzip"], GZIPPED),
    (["-s", "x", "-M", "application/json", "-a", "{report}"], b'{"a": 1}\n'),
    (["-s", "x", "-r", "a1@example.com, a2@example.com"], b"hi\n"),
    (["-s", "=?utf-8?b?SGk=?=", "-C", "X-Tag: =?utf-8?q?x?="], b"hi\n"),
    (["-s", "x", "--", "-f", "bounces@example.com"], b"hi\n"),
    (["-t"], b"To: root\nCc: cc@example.org\nBcc: b@example.org\n"
     b"Subject: T\n\nbody\n"),
    (["-t", "-q", "{quote}"], b"To: root\nSubject: T\n"),
    (["-t", "-q", "{quote}", "root"], b""),
    (["-t", "-q", "{quote}"], b"To: root\nContent-Transfer-Encoding: base64\n"
     b"\nY2Fmw6kK\n"),
    (["-t"], b"To: root\nContent-Type: application/octet-stream\n\n" +
     GZIPPED),
    (["-t"], b"To: root\nContent-Type: multipart/mixed; boundary=B\n\n"
     b"--B\nContent-Type: text/plain\n\nhi\n--B--\n"),
    (["-t"], b"To: root\nContent-Type: text/plain; charset=utf-16-le\n"
     b"Content-Transfer-Encoding: binary\n\n" + "hi\nthere\n".encode(
         "utf-16-le")),
], ids=["binary", "json-attached", "two-authors", "encoded-words",
        "envelope-sender", "t", "t-quote-no-body", "t-quote-no-stdin",
        "t-quote-base64", "t-binary", "t-multipart", "t-utf16"])
def test_resent_unbuilt_message_is_the_one_a_direct_send_makes(
        server, mailrc, run, home, tmp_path, args, body):
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n")
    quote = tmp_path / "quote.txt"
    quote.write_bytes(b"quoted line\n")
    args = [a.format(report=report, quote=quote) for a in args]
    if "-t" not in args:
        args.insert(args.index("--") if "--" in args else len(args), "root")
    variables = ("set replyto=replies@example.org\nset ORGANIZATION=Ops\n"
                 "set sender=relay@example.com\n")
    with_alias = recipe(server.port, extra=variables +
                        "alias root ops@example.org\n")
    mailrc(with_alias)
    assert run(*args, input=body).code == 0
    mailrc(recipe(server.port, extra=variables))  # no alias: kept unbuilt
    assert run(*args, input=body).code == 65
    mailrc(with_alias)
    resent = run("--resend")
    assert resent.code == 0, resent.err
    direct, again = server.messages
    assert (again.mail_from, again.rcpt_tos) == (direct.mail_from,
                                                 direct.rcpt_tos)
    assert without_date_and_ids(again.data) == without_date_and_ids(direct.data)


@pytest.mark.parametrize("record, said", [
    ('{"to": {"a@example.org": 1}}', "to is not what pymail writes"),
    ('{"to": [], "read_headers": "false"}', "is not what pymail writes"),
    ('[' * 100000 + ']' * 100000, "not JSON"),
    ('{"quote_file": false}', "is not what pymail writes"),
    ('"text"', "not a JSON object"),
])
def test_resend_refuses_an_edited_record(server, mailrc, run, home, record,
                                         said):
    entry = (b"From bot@example.com Thu Jan  1 00:00:00 2026\n"
             b"X-Pymail-Envelope-From: <bot@example.com>\n"
             b"X-Pymail-Rebuild: mailx " + record.encode() + b"\n"
             b"X-Pymail-Error: x\nSubject: s\n\nTo: evil@example.org\n\n")
    good = (b"From bot@example.com Thu Jan  1 00:00:00 2026\n"
            b"X-Pymail-Envelope-From: <bot@example.com>\n"
            b"X-Pymail-Envelope-To: <ok@example.org>\n"
            b"X-Pymail-Error: x\nSubject: s\n\nhi\n\n")
    (home / "dead.letter").write_bytes(entry + good)
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 65, result.err
    assert said in result.err
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.org"]]
    assert (home / "dead.letter").read_bytes() == entry


def test_resend_of_a_t_message_with_a_bad_C_leaks_no_bcc(server, mailrc, run,
                                                        home):
    mailrc(recipe(server.port))
    message = (b"To: boss@example.org\nBcc: secret@example.org\n"
               b"Subject: q\n\nnumbers\n")
    assert run("-t", "-C", "Priority urgent", "cc@example.org",
               input=message).code == 65
    result = run("--resend")
    # The mistake is still there: the message stays, and goes nowhere.
    assert result.code == 65, result.err
    assert "'Priority urgent' is not a `Field: value` header" in result.err
    assert server.messages == []
    assert b"secret@example.org" in (home / "dead.letter").read_bytes()


def test_resend_leaves_an_entry_whose_envelope_line_is_too_long(
        server, mailrc, run, home):
    huge = b"X-Pymail-Envelope-To: <" + b"a" * (2 << 20) + b"@example.org>\n"
    (home / "dead.letter").write_bytes(
        b"From bot@example.com Thu Jan  1 00:00:00 2026\n"
        b"X-Pymail-Envelope-From: <bot@example.com>\n" + huge +
        b"X-Pymail-Envelope-To: <ok@example.org>\n"
        b"X-Pymail-Error: x\nSubject: s\n\nhi\n\n")
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 65
    assert "envelope line over" in result.err
    assert server.messages == []
    assert huge in (home / "dead.letter").read_bytes()


def test_unbuilt_t_message_keeps_its_own_headers(server, mailrc, run, home):
    mailrc(recipe(server.port))
    message = (b"To: root\nCc: boss@example.org\nSubject: from -t\n"
               b"X-Job: nightly\n\nthe body\n")
    # Addresses given beside -t go into the headers too, before the body's.
    assert run("-t", "-c", "cc@example.org", "-b", "bcc@example.org",
               "extra@example.org", input=message).code == 65
    mailrc(recipe(server.port, extra="alias root ops@example.org\n"))
    resent = run("--resend")
    assert resent.code == 0, resent.err
    [got] = server.messages
    assert sorted(got.rcpt_tos) == [
        "bcc@example.org", "boss@example.org", "cc@example.org",
        "extra@example.org", "ops@example.org"]
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        "extra@example.org", "ops@example.org"]
    assert [a.addr_spec for a in parsed["Cc"].addresses] == [
        "cc@example.org", "boss@example.org"]
    assert b"bcc@example.org" not in got.data
    assert parsed["Subject"] == "from -t" and parsed["X-Job"] == "nightly"
    assert parsed.get_content().strip() == "the body"


def test_resend_leaves_entries_without_envelope(server, mailrc, run, home):
    (home / "dead.letter").write_bytes(
        b"From someone Thu Jan  1 00:00:00 2026\nSubject: old mailx\n\nhi\n\n")
    mailrc(recipe(server.port))
    result = run("--resend")
    assert result.code == 0
    assert "without a recorded envelope" in result.err
    assert server.messages == []
    assert b"old mailx" in (home / "dead.letter").read_bytes()


def test_resend_restores_quoted_from_lines(server, mailrc, run):
    mailrc(recipe(free_port()))
    run("-s", "q", TO, input=b"From here on\n>From there\n")
    mailrc(recipe(server.port))
    assert run("--resend").code == 0
    assert b"\r\nFrom here on\r\n>From there\r\n" in server.messages[0].data


# The queue ------------------------------------------------------------------

def test_temporary_failure_is_queued_and_exits_0(mailrc, run, queue_dir, home):
    mailrc(queue_rc(free_port(), queue_dir))
    result = send(run, "-b", "hidden@example.org")
    assert result.code == 0
    assert "queued as" in result.err and "--flush" in result.err
    assert len(result.err.strip().splitlines()) == 1
    [entry] = queued(queue_dir)
    assert entry["recipients"] == [TO, "hidden@example.org"]
    assert entry["sender"] == "bot@example.com"
    assert entry["relay"].startswith("127.0.0.1:")
    assert not (home / "dead.letter").exists()
    # Private, and never the password.
    assert queue_dir.stat().st_mode & 0o777 == 0o700
    for path in queue_dir.glob("*.*"):
        assert path.stat().st_mode & 0o777 == 0o600
        assert PASSWORD.encode() not in path.read_bytes()


def test_queue_directory_is_private_whatever_the_umask(mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    old = os.umask(0)
    try:
        assert send(run).code == 0
    finally:
        os.umask(old)
    assert queue_dir.stat().st_mode & 0o777 == 0o700


def test_flush_delivers_and_empties_the_queue(server, mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    assert send(run, to="second@example.org").code == 0
    mailrc(queue_rc(server.port, queue_dir))
    # Back-off: the messages are not due yet...
    quiet = run("--flush")
    assert quiet.code == 0 and quiet.out == ""  # cron mails any output
    assert server.messages == []
    # ...unless named (by hand: then it says what it did).
    ids = [e["id"] for e in queued(queue_dir)]
    result = run("--flush", *ids)
    assert result.code == 0, result.err
    assert "flush: 2 delivered, 0 deferred" in result.out
    assert [m.rcpt_tos for m in server.messages] == [[TO],
                                                     ["second@example.org"]]
    assert queued(queue_dir) == []
    assert list(queue_dir.glob("*.eml")) == []


def test_flush_sends_due_messages_oldest_first(server, mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    for n in range(3):
        run("-s", f"n{n}", TO, input=BODY)
    for path in queue_dir.glob("*.json"):
        data = json.loads(path.read_text())
        data["next_attempt"] = 0
        path.write_text(json.dumps(data))
    mailrc(queue_rc(server.port, queue_dir))
    assert run("--flush", "-v").code == 0
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0]
                for m in server.messages]
    assert subjects == [b"n0", b"n1", b"n2"]


def test_failed_flush_backs_off_exponentially(mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    [first] = queued(queue_dir)
    assert run("--flush", first["id"]).code == 0
    [second] = queued(queue_dir)
    assert second["attempts"] == 2
    assert "refused" in second["last_error"]
    waited = second["next_attempt"] - time.time()
    assert 100 < waited <= 120
    assert run("--flush", first["id"]).code == 0
    [third] = queued(queue_dir)
    assert 200 < third["next_attempt"] - time.time() <= 240


def test_flush_gives_up_after_the_lifetime(mailrc, run, queue_dir, home):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    [path] = queue_dir.glob("*.json")
    data = json.loads(path.read_text())
    data["created"] -= 6 * 86400
    path.write_text(json.dumps(data))
    result = run("--flush")
    assert result.code == 69
    assert "gave up after 6 days" in result.err  # how long it waited
    assert queued(queue_dir) == []
    kept = (home / "dead.letter").read_bytes()
    assert b"gave up after 6 days" in kept and BODY in kept


def test_expired_message_stays_queued_when_dead_letter_fails(
        server, mailrc, run, queue_dir, tmp_path):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run, to="old@example.org").code == 0
    assert send(run, to="new@example.org").code == 0
    for path in queue_dir.glob("*.json"):
        data = json.loads(path.read_text())
        data["next_attempt"] = 0
        if data["recipients"] == ["old@example.org"]:
            data["created"] -= 6 * 86400
        path.write_text(json.dumps(data))
    dead = tmp_path / "dead-is-a-directory"
    dead.mkdir()
    mailrc(queue_rc(server.port, queue_dir) + f"set DEAD={dead}\n")
    result = run("--flush")
    # The flush goes on: the other message is delivered.
    assert [m.rcpt_tos for m in server.messages] == [["new@example.org"]]
    assert result.code == 73
    assert "gave up after 6 days" in result.err
    assert "stays in the queue" in result.err
    assert [e["recipients"] for e in queued(queue_dir)] == [["old@example.org"]]
    assert len(list(queue_dir.glob("*.eml"))) == 1


def test_queue_lifetime_is_configurable(mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir,
                    "set pymail-queue-lifetime=1s\n"))
    assert send(run).code == 0
    time.sleep(1.2)
    result = run("--flush")
    assert result.code == 69
    assert "gave up after 1 second in the queue" in result.err


def test_permanent_failure_is_not_queued(cert, mailrc, run, queue_dir, home):
    srv = start_server(cert=cert, handler=Recorder(
        data_reply="554 5.7.1 spam"))
    try:
        mailrc(queue_rc(srv.port, queue_dir))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 69
    assert queued(queue_dir) == []
    assert BODY in (home / "dead.letter").read_bytes()


def test_greeting_421_is_queued(raw_tls, mailrc, run, queue_dir):
    srv = raw_tls(["421 4.7.0 rate limited, slow down"])
    mailrc(queue_rc(srv.port, queue_dir))
    result = send(run)
    assert result.code == 0
    assert "421 4.7.0 rate limited" in result.err
    assert len(queued(queue_dir)) == 1


def test_dropped_in_the_middle_of_data_is_queued(raw_tls, mailrc, run, queue_dir):
    srv = raw_tls(["220 hi", "250 hi", "250 ok", "250 ok", "354 go on", None])
    mailrc(queue_rc(srv.port, queue_dir).replace("set smtp-auth-user",
                                                 "#set smtp-auth-user"))
    result = send(run)
    assert result.code == 0, result.err
    assert len(queued(queue_dir)) == 1


def test_list_and_delete(mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    [entry] = queued(queue_dir)
    listing = run("--queue")
    assert listing.code == 0
    assert entry["id"] in listing.out and TO in listing.out
    assert "refused" in listing.out
    assert run("--delete", "no-such-id").code == 66
    assert run("--delete").code == 64  # no id: a usage error
    assert run("--delete", entry["id"]).code == 0
    assert queued(queue_dir) == []
    assert "is empty" in run("--queue").out


def test_delete_refused_while_a_flush_runs(mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    [entry] = queued(queue_dir)
    from pymail.spool import Spool
    with Spool(queue_dir).locked() as ours:  # a flush is running
        assert ours
        result = run("--delete", entry["id"])
    assert result.code == 75
    assert "flush" in result.err and "running" in result.err
    assert [e["id"] for e in queued(queue_dir)] == [entry["id"]]
    assert run("--delete", entry["id"]).code == 0
    assert queued(queue_dir) == []


def test_flush_drops_an_entry_whose_message_file_is_gone(server, mailrc, run,
                                                         queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run, to="gone@example.org").code == 0
    assert send(run, to="here@example.org").code == 0
    entries = queued(queue_dir)
    [gone] = [e for e in entries if e["recipients"] == ["gone@example.org"]]
    (queue_dir / f"{gone['id']}.eml").unlink()
    mailrc(queue_rc(server.port, queue_dir))
    result = run("--flush", *[e["id"] for e in entries])
    assert result.code == 66
    assert f"queued {gone['id']}" in result.err
    assert "message file is gone" in result.err
    assert [m.rcpt_tos for m in server.messages] == [["here@example.org"]]
    assert queued(queue_dir) == []


def test_queue_commands_with_the_queue_off(mailrc, run):
    mailrc(recipe(free_port()))
    # A cron line flushing every five minutes must not fail every run.
    assert run("--flush") == Result(0, "", "")
    assert "pymail-queue" in run("-v", "--flush").err
    listing = run("--queue")
    assert listing.code == 0 and "the queue is off" in listing.out
    result = run("--delete", "some-id")
    assert result.code == 78
    assert "pymail-queue" in result.err


def test_a_bug_during_a_flush_keeps_the_queue_draining(server, mailrc, run,
                                                      queue_dir, monkeypatch):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run, to="first@example.org").code == 0
    assert send(run, to="second@example.org").code == 0
    ids = [e["id"] for e in sorted(queued(queue_dir),
                                   key=lambda e: e["created"])]
    mailrc(queue_rc(server.port, queue_dir))
    from pymail.relay import Connection
    real = Connection.send
    calls = []

    def first_one_breaks(self: Any, *args: Any, **kwargs: Any) -> Any:
        # pymail's own code failing, simulated: no such bug is known.
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Connection, "send", first_one_breaks)
    result = run("--flush", *ids)
    assert result.code == 70
    assert "internal error while sending (RuntimeError)" in result.err
    # The other message went; the one that met the bug is still queued.
    assert [m.rcpt_tos for m in server.messages] == [["second@example.org"]]
    [left] = queued(queue_dir)
    assert left["recipients"] == ["first@example.org"]
    assert "internal error" in left["last_error"]
    assert run("--flush", ids[0]).code == 0
    assert [m.rcpt_tos for m in server.messages] == [["second@example.org"],
                                                     ["first@example.org"]]


def test_two_flushes_never_send_twice(server, mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    mailrc(queue_rc(server.port, queue_dir))
    from pymail.spool import Spool

    # A flush holding the lock: the second one leaves the queue alone.
    with Spool(queue_dir).locked() as ours:
        assert ours
        ident = queued(queue_dir)[0]["id"]
        assert run("--flush", ident).code == 0
        assert server.messages == []
    assert run("--flush", ident).code == 0
    assert len(server.messages) == 1


def test_flush_reports_a_refused_login_and_keeps_messages(
        server, mailrc, run, queue_dir):
    mailrc(queue_rc(free_port(), queue_dir))
    assert send(run).code == 0
    mailrc(queue_rc(server.port, queue_dir,
                    "set smtp-auth-password=Wr0ng\n"))
    ident = queued(queue_dir)[0]["id"]
    result = run("--flush", ident)
    assert result.code == 77
    assert "535" in result.err
    assert len(queued(queue_dir)) == 1


# Partial acceptance --------------------------------------------------------

def test_one_of_three_refused(cert, mailrc, run, home):
    handler = Recorder(rcpt_replies={"b@example.org": "550 5.1.1 unknown user"})
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port))
        result = run("-s", "x", "a@example.org", "b@example.org",
                     "c@example.org", input=BODY)
    finally:
        srv.stop()
    assert result.code == 69
    assert "b@example.org" in result.err and "550 5.1.1" in result.err
    assert "delivered to a@example.org, c@example.org" in result.err
    assert srv.messages[0].rcpt_tos == ["a@example.org", "c@example.org"]
    kept = (home / "dead.letter").read_bytes()
    assert b"X-Pymail-Envelope-To: <b@example.org>" in kept
    assert b"X-Pymail-Envelope-To: <a@example.org>" not in kept


def test_temporarily_refused_recipient_is_queued(cert, mailrc, run, queue_dir):
    handler = Recorder(rcpt_replies={"b@example.org": "450 4.2.0 greylisted"})
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(queue_rc(srv.port, queue_dir))
        result = run("-s", "x", "a@example.org", "b@example.org", input=BODY)
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert srv.messages[0].rcpt_tos == ["a@example.org"]
    [entry] = queued(queue_dir)
    assert entry["recipients"] == ["b@example.org"]


def test_all_refused_sends_nothing(cert, mailrc, run, home):
    handler = Recorder(rcpt_replies={TO: "550 5.1.1 unknown"})
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 69
    assert srv.messages == []
    assert BODY in (home / "dead.letter").read_bytes()


# Bounded time and signals ---------------------------------------------------

def trickling(cert: Any) -> Server:
    """A relay whose greeting never ends: a byte every 0.2 s."""
    def trickle(tls: Any, stopping: Any) -> None:
        for byte in b"220 " + b"x" * 200:
            if stopping.wait(0.2):
                return
            tls.sendall(bytes([byte]))
    return StreamServer(cert, trickle)


def stalling_at_mail(cert: Any) -> Server:
    """A relay that never answers MAIL. Stopped mid-command, pymail hangs
    up: an RSET would wait behind the stalled reply until the socket timed
    out."""
    return start_server(cert=cert, handler=StallAtMail(after=0))


@pytest.mark.parametrize("relay", [trickling, stalling_at_mail])
def test_a_slow_relay_meets_the_deadline(cert, mailrc, run, home, relay):
    srv = relay(cert)
    mailrc(recipe(srv.port, extra="set pymail-deadline=2\n"
                  "set socket-connect-timeout=20\n"))
    started = time.monotonic()
    result = send(run)
    srv.stop()
    assert result.code == 75
    assert "longer than 2s" in result.err
    assert time.monotonic() - started < 10
    assert BODY in (home / "dead.letter").read_bytes()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT,
                                    signal.SIGHUP])
def test_signal_during_send_keeps_the_message(tmp_path, home, number):
    silent = RawServer("silent")
    rc = tmp_path / "mail.rc"
    rc.write_text(recipe(silent.port, extra="set socket-connect-timeout=20\n"))
    env = {**os.environ, "MAILRC": str(rc), "HOME": str(home)}
    body = tmp_path / "body"
    body.write_bytes(BODY)
    with open(body, "rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymail", "-n", "-s", "sig", TO],
            stdin=stdin, stderr=subprocess.PIPE, env=env)
        time.sleep(1.5)  # connected, waiting for the greeting
        proc.send_signal(number)
        _, err = proc.communicate(timeout=20)
    silent.stop()
    assert proc.returncode == 75, err
    assert b"interrupted by " + signal.Signals(number).name.encode() in err
    assert BODY in (home / "dead.letter").read_bytes()


def test_signal_with_the_queue_on_queues_and_exits_75(tmp_path, home,
                                                      queue_dir):
    silent = RawServer("silent")
    rc = tmp_path / "mail.rc"
    rc.write_text(queue_rc(silent.port, queue_dir,
                           "set socket-connect-timeout=20\n"))
    env = {**os.environ, "MAILRC": str(rc), "HOME": str(home)}
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymail", "-s", "sig", TO],
            stdin=stdin, stderr=subprocess.PIPE, env=env)
        time.sleep(1.5)  # connected, waiting for the greeting
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    silent.stop()
    assert proc.returncode == 75, err
    assert b"interrupted by SIGTERM" in err and b"queued as" in err
    assert [e["recipients"] for e in queued(queue_dir)] == [[TO]]


class ShrinkOnMail(Recorder):
    """Cuts the attachment short while pymail waits for the MAIL reply,
    then answers 451: pymail must queue or keep what it can still read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                          address: str, options: list[str]) -> str:
        self.path.write_bytes(b"short")
        return "451 4.3.0 try later"


def test_attachment_shrinking_before_it_is_queued_is_not_lost(
        cert, mailrc, run, home, queue_dir, tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"line\n" * 20000)
    srv = start_server(cert=cert, handler=ShrinkOnMail(log))
    try:
        mailrc(queue_rc(srv.port, queue_dir))
        result = send(run, "-a", str(log))
    finally:
        srv.stop()
    assert result.code == 75, result.err
    assert "without the attachments" in result.err
    assert BODY in (home / "dead.letter").read_bytes()
    # Nothing half-written is left in the queue.
    assert [p for p in queue_dir.rglob("*") if p.is_file()] == []


# Errors a person understands ---------------------------------------------------

def test_534_hints_at_an_app_specific_password(raw_tls, mailrc, run):
    refusal = "534-5.7.9 Application-specific password required.\r\n534 5.7.9 More"
    srv = raw_tls(["220 gmail-ish", "250-hi\r\n250 AUTH LOGIN PLAIN", refusal,
               "221 bye"])
    mailrc(recipe(srv.port))
    result = send(run)
    assert result.code == 77
    assert "Application-specific password required" in result.err
    assert "More" in result.err  # every continuation line
    assert "application-specific password" in result.err.split("hint")[1]


def test_resolver_failure_now_is_temporary(mailrc, run, monkeypatch, queue_dir):
    import socket

    def busy(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_AGAIN,
                              "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", busy)
    mailrc(queue_rc(25, queue_dir).replace("127.0.0.1", "smtp.example.net"))
    result = send(run)
    assert result.code == 0
    assert "right now" in result.err
    assert len(queued(queue_dir)) == 1


# The delivery log -----------------------------------------------------------------

def test_delivery_log_has_one_line_per_attempt(server, mailrc, run, tmp_path):
    log_file = tmp_path / "pymail.log"
    mailrc(recipe(server.port, extra=f"set pymail-log={log_file}\n"))
    assert send(run, "-b", "hidden@example.org").code == 0
    mailrc(recipe(free_port(), extra=f"set pymail-log={log_file}\n"))
    assert send(run).code == 75
    # Warnings (a readable password file, ssl-verify=ignore) go there too.
    first, second = [line for line in log_file.read_text().splitlines()
                     if " warning: " not in line]
    assert "result=delivered exit=0" in first
    assert f"to=<{TO},hidden@example.org>" in first
    assert "from=<bot@example.com>" in first and "id=<" in first
    assert "result=failed exit=75" in second and "refused" in second
    assert PASSWORD not in log_file.read_text()
    assert log_file.stat().st_mode & 0o777 == 0o600


def test_nothing_logged_by_default(server, mailrc, run, home):
    mailrc(recipe(server.port))
    assert send(run).code == 0
    assert list(home.iterdir()) == [home / ".mailrc"]


# Load: 50 senders while the relay is down, then one flush ----------------------

def test_fifty_senders_then_one_flush(cert, tmp_path, home, queue_dir):
    port = free_port()
    rc = tmp_path / "mail.rc"
    rc.write_text(queue_rc(port, queue_dir))
    env = {**os.environ, "MAILRC": str(rc), "HOME": str(home)}
    env = {k: v for k, v in env.items() if not k.startswith("PYMAIL_")}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pymail", "-n", "-s", f"load {n}", TO],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env) for n in range(50)]
    for n, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(f"message {n}\n".encode())
        proc.stdin.close()
    assert [proc.wait(timeout=120) for proc in procs] == [0] * 50
    assert len(queued(queue_dir)) == 50

    from servers import Server  # noqa: F401 - the relay comes back
    handler = Recorder()
    srv = start_server(cert=cert, handler=handler)
    try:
        rc.write_text(queue_rc(srv.port, queue_dir))
        ids = [e["id"] for e in queued(queue_dir)]
        flush = subprocess.run(
            [sys.executable, "-m", "pymail", "-n", "--flush", *ids],
            env=env, capture_output=True, timeout=120)
    finally:
        srv.stop()
    assert flush.returncode == 0, flush.stderr
    bodies = sorted(m.data.split(b"\r\n\r\n", 1)[1] for m in handler.messages)
    assert bodies == sorted(f"message {n}\r\n".encode() for n in range(50))
    assert queued(queue_dir) == []
    assert list(queue_dir.glob("*.eml")) == []
