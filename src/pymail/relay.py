"""One SMTP session with the relay.

smtplib owns the connection, TLS, EHLO and AUTH. The message transfer
(MAIL, RCPT, DATA) is written on smtplib's putcmd/getreply/send primitives,
so that PIPELINING, CHUNKING and streamed DATA can be added without a
rewrite. Every socket, TLS and SMTP failure leaves here as a pymail error.
"""

from __future__ import annotations

import binascii
import smtplib
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymail import logs, trust
from pymail.errors import (
    AuthFailure,
    ConfigError,
    DataError,
    DeliveryError,
    HostNotFound,
    PermanentFailure,
    ProtocolFailure,
    PymailError,
    Stopped,
    TemporaryFailure,
)
from pymail.notices import advise
from pymail.settings import Relay, Settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logs.Logger(__name__)
transcript = logs.Logger("pymail.transcript")

MASK = "****"
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 100
MAX_AUTH_ROUNDS = 5
# A BDAT chunk: big enough that its round trip is lost in the upload, small
# enough to hold in memory.
BDAT_CHUNK = 1 << 20
AUTH_MECHANISMS = ("plain", "login", "cram-md5")
AUTH_METHODS = {"plain": "auth_plain", "login": "auth_login",
                "cram-md5": "auth_cram_md5", "xoauth2": "auth_xoauth2",
                "oauthbearer": "auth_oauthbearer"}
APP_PASSWORD_HINT = ("the relay refused the password; many providers (QQ, "
                     "163, 126, Aliyun, Gmail) want an app password or "
                     "authorization code, not the login password")

APP_SPECIFIC_HINT = ("the relay wants an application-specific password: "
                     "create one in the mailbox's security settings")


@dataclass(repr=False, eq=False)
class Outcome:
    """What the relay did with one message."""

    reply: str | None = None
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, DeliveryError] = field(default_factory=dict)


@dataclass(repr=False, eq=False)
class Envelope:
    """MAIL FROM and RCPT TO: who sends, and who receives."""

    sender: str
    recipients: list[str]
    utf8: bool = False  # the headers hold UTF-8 addresses (RFC 6532)
    eight_bit: bool = False  # the body holds 8-bit bytes (RFC 6152)

    @property
    def smtputf8(self) -> bool:
        """True when the headers or an address need SMTPUTF8 (RFC 6531)."""
        return self.utf8 or not all(
            a.isascii() for a in [self.sender, *self.recipients])


def decode_reply(data: bytes | str) -> str:
    """A server reply as text: UTF-8, else GB18030, else with replacements."""
    if isinstance(data, str):
        return data
    for codec in ("utf-8", "gb18030"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


class _Transcript:
    """Writes the dialogue to the transcript logger, credentials masked."""

    _in_auth = False
    file: Any  # smtplib.SMTP's reader, created on the first reply

    def send(self, s: ReadableBuffer | str) -> None:
        if transcript.isEnabledFor(logs.INFO):
            line = s if isinstance(s, str) else bytes(s).decode("ascii", "replace")
            transcript.info(">>> %s", self._masked(line.rstrip("\r\n")))
        super().send(s)  # type: ignore[misc]

    def _masked(self, line: str) -> str:
        if line.upper().startswith("AUTH "):
            self._in_auth = True
            words = line.split()
            return " ".join(words[:2] + ([MASK] if len(words) > 2 else []))
        if self._in_auth:
            return MASK
        return line

    def getreply(self) -> tuple[int, bytes]:
        """One reply, all its lines; a relay that sends lines without end
        (or one line without end) is a protocol failure, not a way to fill
        the memory until the deadline."""
        if self.file is None:
            sock = self.sock  # type: ignore[attr-defined]
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            self.file = sock.makefile("rb")
        quick_ack(self.sock)  # type: ignore[attr-defined]
        lines: list[bytes] = []
        while True:
            try:
                line = self.file.readline(MAX_REPLY_LINE + 1)
            except OSError as exc:
                self.close()  # type: ignore[attr-defined]
                raise smtplib.SMTPServerDisconnected(
                    f"Connection unexpectedly closed: {exc}") from exc
            if not line:
                self.close()  # type: ignore[attr-defined]
                raise smtplib.SMTPServerDisconnected(
                    "Connection unexpectedly closed")
            if len(line) > MAX_REPLY_LINE or len(lines) >= MAX_REPLY_LINES:
                self.close()  # type: ignore[attr-defined]
                raise ProtocolFailure("the relay sent a reply longer than "
                                      f"{MAX_REPLY_LINES} lines of "
                                      f"{MAX_REPLY_LINE} octets")
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
                break
            if line[3:4] != b"-":
                break
        text = b"\n".join(lines)
        if code != 334:
            self._in_auth = False
        if transcript.isEnabledFor(logs.INFO):
            for line in decode_reply(text).splitlines() or [""]:
                transcript.info("<<< %s %s", code, line)
        return code, text

    # OAuth 2.0 bearer tokens (Gmail, Office 365): the "password" is the
    # access token, from pymail-password-command. After a failure the server
    # sends a JSON challenge; an empty answer (XOAUTH2) or ^A (RFC 7628,
    # 3.2.3) asks for the final reply.

    def auth_xoauth2(self, challenge: bytes | None = None) -> str:
        if challenge is not None:
            return ""
        user, token = self.user, self.password  # type: ignore[attr-defined]
        return f"user={user}\x01auth=Bearer {token}\x01\x01"

    def auth_oauthbearer(self, challenge: bytes | None = None) -> str:
        if challenge is not None:
            return "\x01"
        user, token = self.user, self.password  # type: ignore[attr-defined]
        host, port = self._host, self.sock.getpeername()[1]  # type: ignore[attr-defined]
        return (f"n,a={user},\x01host={host}\x01port={port}\x01"
                f"auth=Bearer {token}\x01\x01")

    def send_raw(self, data: bytes) -> None:
        """Send message bytes, bypassing the transcript."""
        sock = self.sock  # type: ignore[attr-defined]
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        sock.sendall(data)


class PlainSession(_Transcript, smtplib.SMTP):
    pass


class TLSSession(_Transcript, smtplib.SMTP_SSL):
    pass


Session = PlainSession | TLSSession


class Connection:
    """A connection to the relay that can deliver messages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relay: Relay = settings.relay()
        self.mechanism, self.user, self.password = settings.auth()
        if self.mechanism == "none":
            self.user = self.password = None
        if self.user and self.password is None:
            self.password = settings.command_password()
        if self.user and self.password is None:
            raise ConfigError(f"smtp-auth-user is set ({self.user}) but no "
                              "password is", hint="set PYMAIL_SMTP_AUTH_PASSWORD"
                              " in /etc/pymail.env (or, for one user, "
                              "~/.config/pymail/pymail.env), or "
                              "pymail-password-command; pymail never prompts")
        if self.mechanism and self.mechanism not in (*AUTH_METHODS, "none"):
            raise ConfigError(f"{settings.origin('smtp-auth')}: smtp-auth="
                              f"{self.mechanism} is not supported; use plain, "
                              "login, cram-md5, xoauth2 or oauthbearer (or "
                              "leave it unset)")
        if self.user and not (self.relay.implicit_tls or self.relay.starttls):
            raise ConfigError(
                f"refusing to send the password for {self.user} unencrypted "
                f"to {self.relay.address}",
                hint="use smtp=smtps://HOST:465, or set smtp-use-starttls "
                "for port 587")
        self.session: Session | None = None
        self.pin = trust.fingerprint(settings)

    # Connecting -----------------------------------------------------------

    def open(self) -> None:
        """Connect, greet, STARTTLS if asked, and authenticate."""
        mode = self.settings.verify_mode()
        if self.pin:
            mode = "pinned"
        elif mode == "ignore":
            advise(self.settings, "ssl-verify=ignore: the relay's certificate "
                   "is not checked; remove it, or pin the certificate with "
                   "tls-fingerprint")
        try:
            self._open(verify=mode in ("strict", "warn"))
        except ProtocolFailure as exc:
            if mode != "warn" or not isinstance(exc.__cause__,
                                                ssl.SSLCertVerificationError):
                raise
            advise(self.settings, f"{exc.message}; continuing because "
                   "ssl-verify=warn")
            self._open(verify=False)

    def _open(self, *, verify: bool) -> None:
        relay = self.relay
        context = trust.make_context(self.settings, verify=verify)
        if self.settings.text("nss-config-dir"):
            log.info("nss-config-dir has no effect: pymail trusts certifi's "
                     "CA bundle, the system's CAs and ssl-ca-file")
        log.info("connecting to %s (%s)", relay.address,
                 "implicit TLS" if relay.implicit_tls else
                 "STARTTLS" if relay.starttls else "no TLS")
        with self._errors("connect"):
            self.connect(context)
            self.greet()
            if relay.starttls:
                self.secure(context)
            elif self.pin and not relay.implicit_tls:
                raise ConfigError("tls-fingerprint is set, but the connection "
                                  f"to {relay.address} is not encrypted",
                                  hint="use smtps:// or smtp-use-starttls")
            if self.user:
                self.login()

    # The steps of open(), also run one by one by `pymail --check`.

    def connect(self, context: ssl.SSLContext) -> None:
        """TCP, implicit TLS when the relay wants it, and the greeting:
        smtplib does all three in its constructor (a greeting other than
        220 raises SMTPConnectError)."""
        relay = self.relay
        timeout = self.settings.timeout()
        hostname = self.settings.hostname()
        if relay.implicit_tls:
            self.session = TLSSession(relay.host, relay.port,
                                      local_hostname=hostname,
                                      timeout=timeout, context=context)
            self._check_pin()
        else:
            self.session = PlainSession(relay.host, relay.port,
                                        local_hostname=hostname,
                                        timeout=timeout)
        # Commands go out in whole groups; a lone small write (QUIT) must
        # not wait for an acknowledgement.
        sock = self.session.sock
        if sock is not None and sock.family in (socket.AF_INET,
                                                socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def greet(self) -> None:
        self._ehlo()

    def secure(self, context: ssl.SSLContext) -> None:
        self._starttls(context)

    def login(self) -> None:
        self._authenticate()

    def errors(self, stage: str) -> _ErrorMap:
        """A context that turns socket, TLS and SMTP errors into ours."""
        return _ErrorMap(self, stage)

    def _check_pin(self) -> None:
        """With tls-fingerprint set, the server's certificate must be that
        one, whatever signed it; nothing is sent before this check."""
        session = self.session
        if not self.pin or session is None:
            return
        sock = session.sock
        der = sock.getpeercert(binary_form=True) if isinstance(
            sock, ssl.SSLSocket) else None
        seen = trust.digest(der) if der else "none"
        if seen != self.pin:
            raise ProtocolFailure(
                f"the certificate of {self.relay.address} does not match "
                f"tls-fingerprint: it is {trust.pretty(seen)}",
                hint="if the relay's certificate was renewed, check the new "
                "one and update tls-fingerprint")
        log.info("certificate fingerprint matches tls-fingerprint")

    def _ehlo(self) -> None:
        assert self.session is not None
        code, text = self.session.ehlo()
        if code != 250:
            code, text = self.session.helo()
            if code != 250:
                self._fail("HELO", code, text)

    def _starttls(self, context: ssl.SSLContext) -> None:
        session = self.session
        assert session is not None
        if not session.has_extn("starttls"):
            raise ProtocolFailure(
                f"{self.relay.address} does not offer STARTTLS; not sending "
                "without encryption", hint="check the port (587 offers "
                "STARTTLS), or use smtps:// on port 465")
        code, text = session.starttls(context=context)
        if code != 220:
            self._fail("STARTTLS", code, text)
        self._check_pin()
        self._ehlo()

    def _authenticate(self) -> None:
        session = self.session
        assert session is not None and self.user and self.password is not None
        if not session.has_extn("auth"):
            raise AuthFailure(f"{self.relay.address} offers no AUTH, but "
                              f"smtp-auth-user is set ({self.user})",
                              hint="unset smtp-auth-user if the relay needs "
                              "no login, or check the port")
        session.user, session.password = self.user, self.password
        offered = session.esmtp_features.get("auth", "").lower().split()
        last: smtplib.SMTPAuthenticationError | None = None
        # At most two attempts per send: the chosen mechanism, then the other.
        for mechanism in self._mechanisms(offered)[:2]:
            method = self._bounded(getattr(session, AUTH_METHODS[mechanism]))
            try:
                code, text = session.auth(mechanism, method)
            except UnicodeEncodeError as exc:
                raise ConfigError("the login or password has characters other "
                                  "than ASCII, which AUTH " + mechanism.upper()
                                  + " cannot carry here") from exc
            except binascii.Error as exc:
                raise ProtocolFailure(f"{self.relay.address} sent an AUTH "
                                      "challenge that is not base64") from exc
            except smtplib.SMTPAuthenticationError as exc:
                last = exc
                if exc.smtp_code not in (504, 535):
                    break
                continue
            log.info("authenticated as %s with %s", self.user, mechanism.upper())
            return
        assert last is not None
        reply = decode_reply(last.smtp_error)
        hint = {535: APP_PASSWORD_HINT, 534: APP_SPECIFIC_HINT}.get(
            last.smtp_code)
        if self.mechanism and self.mechanism not in offered:
            hint = (f"the relay offers {' '.join(offered).upper() or 'none'}"
                    f", not {self.mechanism.upper()}: change or unset "
                    "smtp-auth")
        raise AuthFailure(f"authentication as {self.user} failed at "
                          f"{self.relay.address}: {last.smtp_code} {reply}",
                          hint=hint)

    def _bounded(self, method: Any) -> Any:
        """The AUTH answer function, refusing a relay that keeps asking."""
        rounds = 0

        def answer(challenge: bytes | None = None) -> Any:
            nonlocal rounds
            rounds += 1
            if rounds > MAX_AUTH_ROUNDS:
                raise ProtocolFailure(f"{self.relay.address} keeps asking "
                                      "for more during AUTH")
            return method() if challenge is None else method(challenge)
        return answer

    def _mechanisms(self, offered: list[str]) -> list[str]:
        """Mechanisms to try, best first; PLAIN needs one round trip."""
        if self.mechanism in ("plain", "login"):
            others = [m for m in ("plain", "login")
                      if m != self.mechanism and m in offered]
            return [self.mechanism] + others
        if self.mechanism:
            return [self.mechanism]
        choice = [m for m in AUTH_MECHANISMS if m in offered]
        return choice or ["plain", "login"]

    # Sending --------------------------------------------------------------

    def send(self, envelope: Envelope, chunks: Iterable[bytes],
             size: int | None = None) -> Outcome:
        """Run one mail transaction.

        Recipients the relay refuses are reported in the outcome, and the
        message goes to the others; when it refuses them all, nothing is
        delivered. A failure of MAIL, DATA or BDAT raises. With PIPELINING
        (RFC 2920) MAIL, every RCPT and DATA (or, with CHUNKING, RFC 3030,
        the first BDAT with its data) leave in one write, and their replies
        are read in order afterwards: one round trip where there were 2 + n.
        size, the message's length when known, is checked against the
        relay's SIZE (RFC 1870) before anything is sent.
        """
        session = self.session
        assert session is not None
        with self._errors("sending"), self._reset_on_refusal():
            self._check_size(size)
            mail = (f"MAIL FROM:<{envelope.sender}>"
                    + self._mail_parameters(envelope, size))
            pieces = bdat_pieces(chunks) if session.has_extn("chunking") \
                else None
            if session.has_extn("pipelining"):
                return self._pipelined(envelope, mail, chunks, pieces)
            return self._stepwise(envelope, mail, chunks, pieces)

    def batchable(self, size: int | None) -> bool:
        """Can a message of this size go in a batch (send_batch)?"""
        session = self.session
        return (session is not None and size is not None
                and size <= BDAT_CHUNK and session.has_extn("pipelining")
                and session.has_extn("chunking"))

    def send_batch(self, messages: list[tuple[Envelope, Iterable[bytes],
                                              int | None]]
                   ) -> list[Outcome | PymailError]:
        """Send small messages without waiting between them.

        Each message is RSET, MAIL, RCPT... and one `BDAT n LAST` (see
        batchable); the groups of all of them leave before any reply is read
        (RFC 2920 lets a client pipeline across transactions), then every
        reply is read in order. The result for each message is its outcome,
        or the error that stopped it; the RSET in front of each group makes
        one message's failure no concern of the next.
        """
        session = self.session
        assert session is not None
        results: list[Outcome | PymailError] = []
        sent: list[tuple[int, Envelope]] = []
        lines: list[str] = []
        data: list[bytes] = []
        for envelope, chunks, size in messages:
            try:
                self._check_size(size)
                mail = (f"MAIL FROM:<{envelope.sender}>"
                        + self._mail_parameters(envelope, size))
                text = b"".join(piece for piece, _ in bdat_pieces(
                    chunks, size=BDAT_CHUNK * 2))
            except PymailError as error:
                results.append(error)
                continue
            sent.append((len(results), envelope))
            results.append(Outcome())
            group = ["RSET", mail,
                     *(f"RCPT TO:<{r}>" for r in envelope.recipients),
                     bdat_command(text, True)]
            lines.extend(group)
            data.append(self._encoded(group) + text)
        if not sent:
            return results
        try:
            with self._errors("sending"):
                for line in lines:
                    transcript.info(">>> %s", line)
                session.send_raw(b"".join(data))
                for index, envelope in sent:
                    results[index] = self._batch_reply(envelope)
        except PymailError as error:
            # What was not answered is not known to be delivered.
            for index, _ in sent:
                outcome = results[index]
                if isinstance(outcome, Outcome) and not outcome.reply and \
                        not outcome.refused:
                    results[index] = error
        return results

    def _batch_reply(self, envelope: Envelope) -> Outcome | PymailError:
        """Read the replies to one message's group of a batch."""
        session = self.session
        assert session is not None
        session.getreply()  # to RSET
        outcome, refused_mail, (code, text) = self._group_replies(envelope)
        if refused_mail is not None:
            return refused_mail
        if outcome.accepted:
            if code != 250:
                return self._error("message", code, text)
            outcome.reply = f"{code} {decode_reply(text)}"
        return outcome

    def _stepwise(self, envelope: Envelope, mail: str, chunks: Iterable[bytes],
                  pieces: Iterator[tuple[bytes, bool]] | None) -> Outcome:
        """One command, one reply: for relays without PIPELINING."""
        session = self.session
        assert session is not None
        outcome = Outcome()
        self._command("MAIL FROM", mail, 250)
        for recipient in envelope.recipients:
            session.putcmd(f"RCPT TO:<{recipient}>")
            self._recipient(outcome, recipient, *session.getreply())
        if not outcome.accepted:
            self._reset()
            return outcome
        if pieces is not None:
            outcome.reply = self._upload(pieces, window=0)
            return outcome
        self._command("DATA", "DATA", 354)
        outcome.reply = self._transfer(chunks)
        return outcome

    def _pipelined(self, envelope: Envelope, mail: str, chunks: Iterable[bytes],
                   pieces: Iterator[tuple[bytes, bool]] | None) -> Outcome:
        """MAIL, RCPT... and DATA or the first BDAT in one group; every
        reply is read and checked, in order, as if sent one by one."""
        session = self.session
        assert session is not None
        lines = [mail] + [f"RCPT TO:<{r}>" for r in envelope.recipients]
        data, last = b"", False
        if pieces is not None:
            data, last = next(pieces)
            lines.append(bdat_command(data, last))
        else:
            lines.append("DATA")
        self._write_group(lines, data)
        # The last reply is to DATA, or to the first BDAT.
        outcome, refused_mail, (code, text) = self._group_replies(envelope)
        if refused_mail is not None or not outcome.accepted:
            # The relay refuses DATA or BDAT here (503/554); a relay that
            # says 354 anyway gets an empty message, which it must refuse.
            if pieces is None and code == 354:
                session.putcmd(".")
                session.getreply()
            if refused_mail is not None:
                raise refused_mail  # and _reset_on_refusal says RSET
            self._reset()
            return outcome
        if pieces is None:
            if code != 354:
                self._fail("DATA", code, text)
            outcome.reply = self._transfer(chunks)
        elif code != 250:
            self._fail("message", code, text)
        elif last:
            outcome.reply = f"{code} {decode_reply(text)}"
        else:
            outcome.reply = self._upload(pieces, window=1)
        return outcome

    def _group_replies(self, envelope: Envelope) -> tuple[
            Outcome, DeliveryError | None, tuple[int, bytes]]:
        """Read the replies to a group's MAIL, to each RCPT and to the
        command that ends it, in order: the recipients' outcome, the refusal
        of MAIL if any, and the last reply."""
        session = self.session
        assert session is not None
        outcome = Outcome()
        code, text = session.getreply()
        refused_mail = None if code == 250 else \
            self._error("MAIL FROM", code, text)
        for recipient in envelope.recipients:
            code, text = session.getreply()
            if refused_mail is None:
                self._recipient(outcome, recipient, code, text)
        return outcome, refused_mail, session.getreply()

    def _recipient(self, outcome: Outcome, recipient: str, code: int,
                   text: bytes) -> None:
        if code in (250, 251):
            outcome.accepted.append(recipient)
        else:
            outcome.refused[recipient] = self._error(
                f"recipient {recipient}", code, text)

    def _write_group(self, lines: list[str], data: bytes = b"") -> None:
        """Commands (and a BDAT's data) in one write."""
        session = self.session
        assert session is not None
        for line in lines:
            transcript.info(">>> %s", line)
        if data:
            transcript.info(">>> [message, %d bytes]", len(data))
        group = self._encoded(lines)
        try:
            session.send_raw(group + data)
        except BaseException:
            # Half a group or chunk cannot be taken back: hang up.
            self.close_quietly()
            raise

    def _encoded(self, lines: list[str]) -> bytes:
        session = self.session
        assert session is not None
        encoding = session.command_encoding
        return b"".join(f"{line}\r\n".encode(encoding) for line in lines)

    def _upload(self, pieces: Iterator[tuple[bytes, bool]], *,
                window: int) -> str:
        """Send the remaining BDAT chunks; with window=1 the reply to one
        chunk is read while the next one is on its way. Returns the reply
        to the last chunk."""
        session = self.session
        assert session is not None
        waiting = 0
        code, text = 0, b""
        for data, last in pieces:
            self._write_group([bdat_command(data, last)], data)
            waiting += 1
            # The last chunk's reply is always waited for.
            while waiting > (0 if last else window):
                code, text = session.getreply()
                waiting -= 1
                if code != 250:
                    self._drain(waiting)
                    self._fail("message", code, text)
            if last:
                break
        return f"{code} {decode_reply(text)}"

    def _drain(self, replies: int) -> None:
        """Read the replies still owed for chunks already sent."""
        session = self.session
        assert session is not None
        for _ in range(replies):
            session.getreply()

    def _check_size(self, size: int | None) -> None:
        session = self.session
        assert session is not None
        limit = session.esmtp_features.get("size", "")
        # int() refuses over 4300 digits; no real limit has 20.
        if size and limit.isascii() and limit.isdigit() and \
                len(limit) < 20 and 0 < int(limit) < size:
            raise PermanentFailure(
                f"the message is {megabytes(size)} ({size} bytes); "
                f"{self.relay.address} accepts at most {megabytes(int(limit))}"
                f" ({limit} bytes)", hint="send large files another way, "
                "or compress them")

    def _transfer(self, chunks: Iterable[bytes]) -> str:
        """Send the message text and the final dot (RFC 5321, 4.1.1.4);
        returns the relay's reply to it."""
        session = self.session
        assert session is not None
        total = 0
        try:
            for data in coalesced(dot_stuffed(chunks)):
                session.send_raw(data)
                total += len(data)
            session.send_raw(b".\r\n")
        except BaseException:
            # Mid-DATA nothing but dropping the connection aborts the
            # transaction; QUIT would be read as message text.
            self.close_quietly()
            raise
        transcript.info(">>> [message, %d bytes]", total)
        transcript.info(">>> .")
        code, text = session.getreply()
        if code != 250:
            self._fail("message", code, text)
        return f"{code} {decode_reply(text)}"

    @contextmanager
    def _reset_on_refusal(self) -> Iterator[None]:
        """After a refused MAIL or DATA, RSET so the connection can be used
        for the next message (a flush sends several)."""
        try:
            yield
        except Stopped:
            self.close_quietly()  # nothing more is said on it
            raise
        except DeliveryError:
            if self.session is not None:
                self._reset()
            raise

    def _reset(self) -> None:
        session = self.session
        assert session is not None
        try:
            session.putcmd("RSET")
            session.getreply()
        except (smtplib.SMTPException, OSError):
            self.close_quietly()

    def _mail_parameters(self, envelope: Envelope, size: int | None) -> str:
        """SIZE when the relay takes it; SMTPUTF8 (and 8BITMIME with it)
        when an address needs it; 8BITMIME for an 8-bit body."""
        session = self.session
        assert session is not None
        declared = f" SIZE={size}" if size and session.has_extn("size") else ""
        if envelope.eight_bit and not session.has_extn("8bitmime"):
            raise DataError(f"{self.relay.address} does not offer 8BITMIME, "
                            "which the message's 8-bit body needs",
                            hint="encode its parts as base64 or "
                            "quoted-printable")
        if not envelope.smtputf8:
            return declared + (" BODY=8BITMIME" if envelope.eight_bit
                               else "")
        if not session.has_extn("smtputf8"):
            address = next((a for a in [envelope.sender, *envelope.recipients]
                            if not a.isascii()), "in the headers")
            raise DataError(f"{self.relay.address} does not offer SMTPUTF8, "
                            f"which the address {address} needs",
                            hint="use an ASCII address for this mailbox")
        session.command_encoding = "utf-8"
        body = " BODY=8BITMIME" if session.has_extn("8bitmime") else ""
        return declared + " SMTPUTF8" + body

    def _command(self, what: str, line: str, *ok: int) -> None:
        session = self.session
        assert session is not None
        session.putcmd(line)
        code, text = session.getreply()
        if code not in ok:
            self._fail(what, code, text)

    def close(self) -> None:
        """Say QUIT and hang up without waiting for the answer: the
        messages are delivered, and the reply to QUIT changes nothing."""
        session = self.session
        self.session = None
        if session is None:
            return
        transcript.info(">>> QUIT")
        with suppress(smtplib.SMTPException, OSError):
            session.send_raw(b"QUIT\r\n")
        session.close()

    def close_quietly(self) -> None:
        """Drop a broken connection without another command."""
        session = self.session
        self.session = None
        if session is not None:
            session.close()

    # Errors ---------------------------------------------------------------

    def _fail(self, what: str, code: int, text: bytes | str) -> None:
        raise self._error(what, code, text)

    def _error(self, what: str, code: int, text: bytes | str) -> DeliveryError:
        """The error for a refusal: temporary for 4xx, permanent for 5xx."""
        reply = " ".join(decode_reply(text).split())
        message = f"{what} refused by {self.relay.address}: {code} {reply}"
        hint = None
        lowered = reply.lower()
        if code in (553, 501, 550) and "mail from" in lowered and \
                "must" in lowered:
            hint = "set `from` to the address you log in with"
        if 400 <= code < 500:
            return TemporaryFailure(message, hint=hint)
        if 500 <= code < 600:
            return PermanentFailure(message, hint=hint)
        return ProtocolFailure(message, hint=hint)

    def _errors(self, stage: str) -> _ErrorMap:
        return _ErrorMap(self, stage)


class _ErrorMap:
    """Turns socket, TLS and smtplib exceptions into pymail errors."""

    def __init__(self, connection: Connection, stage: str) -> None:
        self.connection = connection
        self.stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is None or isinstance(exc, PymailError):
            return
        connection = self.connection
        error = classify(exc, connection.relay, connection.settings,
                         greeted=connection.session is not None)
        if error is None:
            return
        self.connection.close_quietly()
        raise error from exc


def classify(exc: BaseException, relay: Relay, settings: Settings, *,
             greeted: bool = False) -> DeliveryError | None:
    """The pymail error for a socket, TLS or SMTP exception."""
    where = relay.address
    # SMTP errors are OSErrors too: look at the reply first.
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        text = decode_reply(exc.smtp_error)
        kind = (TemporaryFailure if 400 <= code < 500 else
                PermanentFailure if 500 <= code < 600 else ProtocolFailure)
        return kind(f"{where} answered {code} {text}")
    cause = exc.__context__ if isinstance(
        exc, smtplib.SMTPServerDisconnected) and exc.__context__ else exc
    if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_AGAIN:
        return TemporaryFailure(f"cannot resolve the relay host {relay.host} "
                                f"right now: {cause.strerror}")
    if isinstance(cause, socket.gaierror):
        return HostNotFound(f"cannot find the relay host {relay.host}: "
                            f"{cause.strerror}", hint="check the host name "
                            f"in {relay.where}")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return ProtocolFailure(
            f"the certificate of {where} is not trusted: "
            f"{cause.verify_message or cause.reason}",
            hint="if the relay uses a private CA, set ssl-ca-file=/path/ca.pem")
    if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return TemporaryFailure(f"{where} closed the connection "
                                f"unexpectedly ({cause.reason or cause})")
    if isinstance(cause, ssl.SSLError):
        hint = None
        if "WRONG_VERSION_NUMBER" in str(cause).upper():
            hint = ("the port speaks plain SMTP: use smtp://HOST:587 with "
                    "smtp-use-starttls, or port 465 with smtps://")
        return ProtocolFailure(f"TLS failed with {where}: {cause}", hint=hint)
    if isinstance(cause, TimeoutError | socket.timeout):
        return TemporaryFailure(f"no answer from {where} within "
                                f"{settings.timeout():g}s",
                                hint=None if greeted else silent_hint(relay))
    if isinstance(cause, ConnectionRefusedError):
        return TemporaryFailure(f"connection to {where} refused")
    if isinstance(exc, smtplib.SMTPServerDisconnected) or \
            isinstance(cause, ConnectionError):
        return TemporaryFailure(f"{where} closed the connection "
                                f"unexpectedly: {cause}")
    if isinstance(cause, OSError):
        return TemporaryFailure(f"cannot talk to {where}: "
                                f"{cause.strerror or cause}")
    if isinstance(exc, smtplib.SMTPException):
        return ProtocolFailure(f"SMTP error with {where}: {exc}")
    return None


def silent_hint(relay: Relay) -> str:
    """Why a relay may say nothing at all after the connection is made."""
    if relay.port == 25:
        return ("outbound port 25 is probably blocked by the cloud provider; "
                "use smtps://HOST:465")
    if relay.implicit_tls:
        return ("if the port speaks plain SMTP, use smtp://HOST:PORT with "
                "smtp-use-starttls")
    return "if the port expects TLS from the start, use smtps://HOST:PORT"


def quick_ack(sock: socket.socket | None) -> None:
    """Acknowledge what has arrived at once, not after the usual delay of
    up to 40 ms. A server that writes twice in a row without TCP_NODELAY
    (Postfix: TLS 1.3 session tickets, then its greeting) holds the second
    write until the first is acknowledged; a delayed ACK stalls every
    reply that follows such a pair. Linux only; elsewhere nothing."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None:
        return
    with suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def dot_stuffed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Double each line-leading dot (RFC 5321, 4.5.2); end on a line end."""
    at_line_start = True
    for chunk in chunks:
        if not chunk:
            continue
        data = chunk.replace(b"\n.", b"\n..")
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        at_line_start = chunk.endswith(b"\n")
        yield data
    if not at_line_start:
        yield b"\r\n"



def coalesced(chunks: Iterable[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """Join small chunks into writes of about `size` bytes: fewer system
    calls and TLS records."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if len(pending) >= size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


def bdat_pieces(chunks: Iterable[bytes],
                size: int | None = None) -> Iterator[tuple[bytes, bool]]:
    """The message in BDAT chunks of at most `size` bytes (BDAT_CHUNK),
    each with whether it is the last; the message ends with a line break."""
    size = size or BDAT_CHUNK
    pending = bytearray()
    ends_line = True
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        ends_line = chunk.endswith(b"\n")
        while len(pending) > size:
            yield bytes(pending[:size]), False
            del pending[:size]
    if not ends_line:
        pending += b"\r\n"
    yield bytes(pending), True


def bdat_command(data: bytes, last: bool) -> str:
    return f"BDAT {len(data)}" + (" LAST" if last else "")


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def deliver(settings: Settings, envelope: Envelope, chunks: Iterable[bytes],
            size: int | None = None) -> Outcome:
    """Open a connection, send one message, close."""
    connection = Connection(settings)
    try:
        connection.open()
        outcome = connection.send(envelope, chunks, size)
    except BaseException:
        # After a failure (or a signal) there is nothing to say politely.
        connection.close_quietly()
        raise
    connection.close()
    return outcome
