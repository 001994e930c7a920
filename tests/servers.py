"""Real SMTP servers on 127.0.0.1 for the tests: aiosmtpd with real TLS from
a trustme CA and real AUTH, plus raw sockets that misbehave on purpose."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER = "bot@example.com"
PASSWORD = "APP_PASSWORD"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: keeps what arrives, answers as told."""

    messages: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None
    # Extensions to announce beyond aiosmtpd's own ("PIPELINING", ...).
    extensions: list[str] = field(default_factory=list)
    # Per MAIL: had the client already sent what follows (a pipelined group)?
    pipelined: list[bool] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)
    bdat_commands: list[str] = field(default_factory=list)
    # Replies to BDAT chunks by their number in the transaction, from 0.
    bdat_replies: dict[int, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    # Per MAIL: how many more MAIL commands had already arrived behind it.
    ahead: list[int] = field(default_factory=list)
    # Replies by sender (to MAIL) and by first recipient (to the message).
    mail_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.commands.append("EHLO")
        extra = [f"250-{name}" for name in self.extensions]
        return responses[:-1] + extra + responses[-1:]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                          address: str, options: list[str]) -> str:
        self.commands.append("MAIL")
        self.mail_options.append(list(options))
        reader = getattr(server, "_reader", None)
        buffered = bytes(reader._buffer) if reader is not None else b""
        self.pipelined.append(bool(buffered))
        self.ahead.append(buffered.count(b"MAIL FROM:"))
        if address in self.mail_replies:
            return self.mail_replies[address]
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                          address: str, options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any,
                          envelope: Any) -> str:
        if envelope.rcpt_tos and envelope.rcpt_tos[0] in self.data_replies:
            return self.data_replies[envelope.rcpt_tos[0]]
        if self.data_reply:
            return self.data_reply
        self.messages.append(Received(envelope.mail_from,
                                      list(envelope.rcpt_tos),
                                      envelope.original_content))
        return "250 2.0.0 queued as TEST1"


class ChunkingSMTP(SMTP):
    """aiosmtpd with BDAT (RFC 3030). Pipelined commands it already takes:
    it reads one line at a time from what has arrived."""

    async def smtp_BDAT(self, arg: str) -> None:
        handler: Recorder = self.event_handler
        words = (arg or "").split()
        last = len(words) == 2 and words[1].upper() == "LAST"
        if not words or not words[0].isdigit() or len(words) > 1 + last:
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        # The chunk is read whatever the reply (RFC 3030, 2).
        data = await self._reader.readexactly(int(words[0]))
        handler.bdat_commands.append(f"BDAT {arg}")
        envelope = self.envelope
        assert envelope is not None and self.session is not None
        if not self.session.host_name or not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        chunks: list[bytes] = envelope.__dict__.setdefault("bdat", [])
        reply = handler.bdat_replies.get(len(chunks))
        chunks.append(data)
        if reply:
            self._set_post_data_state()
            await self.push(reply)
            return
        if not last:
            await self.push(f"250 2.0.0 {len(data)} octets received")
            return
        envelope.original_content = envelope.content = b"".join(chunks)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


class ChunkingController(Controller):
    def factory(self) -> SMTP:
        return ChunkingSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Server:
    """A running test relay."""

    host: str
    port: int
    handler: Recorder
    controller: Any = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def start_server(*, cert: Any, tls: str = "implicit", auth: bool = True,
                 users: dict[str, str] | None = None,
                 auth_require_tls: bool = True,
                 handler: Recorder | None = None,
                 exclude: list[str] | None = None,
                 sni: Any = None, extensions: tuple[str, ...] = (),
                 size_limit: int | None = None) -> Server:
    """tls is "implicit" (port wrapped in TLS), "starttls" or "none".
    extensions: PIPELINING and CHUNKING (BDAT) to offer them;
    size_limit: the SIZE to announce (none by default)."""
    users = {USER: PASSWORD} if users is None else users
    handler = handler or Recorder()
    handler.extensions = list(extensions)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    if sni is not None:
        server_context.sni_callback = (
            lambda sock, name, context: sni(name))

    def authenticator(server: Any, session: Any, envelope: Any,
                      mechanism: str, data: Any) -> AuthResult:
        handler.mechanisms.append(mechanism)
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        handler.logins.append((login, password))
        return AuthResult(success=users.get(login) == password, handled=False)

    kwargs: dict[str, Any] = {}
    if auth:
        # aiosmtpd does not count implicit TLS as TLS; the socket is wrapped.
        kwargs.update(authenticator=authenticator,
                      auth_require_tls=auth_require_tls and tls != "implicit")
    if exclude:
        kwargs["auth_exclude_mechanism"] = exclude
    if tls == "starttls":
        kwargs["tls_context"] = server_context
    kwargs["data_size_limit"] = size_limit
    port = free_port()
    kind = ChunkingController if "CHUNKING" in extensions else Controller
    controller = kind(
        handler, hostname="127.0.0.1", port=port,
        ssl_context=server_context if tls == "implicit" else None,
        server_hostname="localhost", **kwargs)
    controller.start()
    return Server("127.0.0.1", port, handler, controller)


class RawServer:
    """A TCP server whose conversation is a script of replies.

    script is a list of replies sent in order; each after reading one line
    from the client (the first, the greeting, before reading). None as an
    entry means: close the connection there. "silent" never says anything.
    """

    def __init__(self, script: list[str | None] | str,
                 context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.context = context
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.host, self.port = self.sock.getsockname()
        self.heard: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if script != "silent":
            self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                self._talk(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _talk(self, conn: socket.socket) -> None:
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
        reader = conn.makefile("rb")
        for i, reply in enumerate(self.script):
            if i > 0:
                line = reader.readline()
                if not line:
                    return
                self.heard.append(line)
            if reply is None:
                return
            conn.sendall(reply.encode("utf-8", "surrogateescape") + b"\r\n")
        while reader.readline():
            pass

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


class StreamServer:
    """A TLS server on 127.0.0.1 for one connection, whose `talk` function
    writes what it likes (a reply without end, one byte at a time...) until
    the stop event is set."""

    def __init__(self, cert: Any, talk: Any) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = int(self.listener.getsockname()[1])
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.stopping = threading.Event()
        self.talk = talk
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.talk(tls, self.stopping)
        except OSError:
            pass

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
