"""What the pymail command line asked for, as send.py takes it: apart from
click, which the sendmail entry does without."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(repr=False, eq=False)
class Request:
    """What the command line asked for."""

    to: tuple[str, ...]
    subject: str | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    from_: str | None = None
    attach: tuple[str, ...] = ()
    assign: tuple[str, ...] = ()
    read_system: bool = True
    skip_empty: bool = False
    verbose: bool = False
    debug: bool = False
    envelope_sender: str | None = None
    sendmail_args: list[str] = field(default_factory=list)
    body_type: str = "text/plain"
    quote_file: str | None = None
    custom_headers: tuple[str, ...] = ()
    read_headers: bool = False
    account: str | None = None
