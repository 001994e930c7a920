"""What the pymail command line asked for, as send.py takes it: apart from
click, which the sendmail entry does without."""

from __future__ import annotations


# A plain class: as a dataclass, its 18 fields cost ~1 ms at each start.
class Request:
    """What the command line asked for."""

    def __init__(
        self, to: tuple[str, ...], *, subject: str | None = None,
        cc: tuple[str, ...] = (), bcc: tuple[str, ...] = (),
        from_: str | None = None, attach: tuple[str, ...] = (),
        assign: tuple[str, ...] = (), read_system: bool = True,
        skip_empty: bool = False, verbose: bool = False, debug: bool = False,
        envelope_sender: str | None = None,
        sendmail_args: list[str] | None = None, body_type: str = "text/plain",
        quote_file: str | None = None, custom_headers: tuple[str, ...] = (),
        read_headers: bool = False, account: str | None = None,
    ) -> None:
        self.to = to
        self.subject = subject
        self.cc = cc
        self.bcc = bcc
        self.from_ = from_
        self.attach = attach
        self.assign = assign
        self.read_system = read_system
        self.skip_empty = skip_empty
        self.verbose = verbose
        self.debug = debug
        self.envelope_sender = envelope_sender
        self.sendmail_args = sendmail_args or []
        self.body_type = body_type
        self.quote_file = quote_file
        self.custom_headers = custom_headers
        self.read_headers = read_headers
        self.account = account
