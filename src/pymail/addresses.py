"""Addresses: parsing the forms mailx users write, and alias expansion."""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import NamedTuple

from pymail.errors import DataError

# Non-ASCII characters (RFC 6532) are written as what they are not: a class
# that spells out \u0080-\U0010ffff costs the re compiler ~35 ms per start.
# atext (RFC 5322 3.2.3): neither a control, a space nor a special.
_ATOM = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]+'
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")'
_ALNUM = r"(?:[A-Za-z0-9]|[^\x00-\x7f])"
_LABEL = rf"{_ALNUM}(?:(?:[A-Za-z0-9\-]|[^\x00-\x7f])*{_ALNUM})?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[^\[\]\\\s]+\])"
ADDR_SPEC = re.compile(rf"{_LOCAL}@{_DOMAIN}")
BARE_NAME = re.compile(r"[A-Za-z0-9._+\-]+")

MAX_ALIAS_DEPTH = 20


# A NamedTuple, not a frozen dataclass: as immutable and comparable, and
# ~1 ms less to create at each start.
class Mailbox(NamedTuple):
    """An address with an optional display name."""

    name: str
    addr: str

    def header(self) -> str:
        """The mailbox as it goes in a header (before RFC 2047 encoding)."""
        if not self.name:
            return self.addr
        quoted = self.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{self.addr}>'


def split_list(text: str) -> list[str]:
    """Split at commas that are outside quotes, <...>, [...] and (...).
    A group (RFC 5322: `friends: a@b, c@d;`, `undisclosed-recipients:;`)
    gives its members: its name and the `;` that ends it go."""
    items: list[str] = []
    current: list[str] = []
    quote = False
    angle = 0
    paren = 0
    bracket = False
    escaped = False
    for c in text:
        outside = not (angle or paren or bracket)
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif quote:
            quote = c != '"'
        elif c == '"':
            quote = True
        elif c == "<":
            angle += 1
        elif c == ">":
            angle = max(angle - 1, 0)
        elif c == "(":
            paren += 1
        elif c == ")":
            paren = max(paren - 1, 0)
        elif c == "[":
            bracket = True
        elif c == "]":
            bracket = False
        elif c in ",;" and outside:
            items.append("".join(current))
            current = []
            continue
        elif c == ":" and outside and "@" not in "".join(current):
            current = []  # a group's name
            continue
        current.append(c)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_mailbox(text: str, where: str) -> Mailbox:
    """Parse one of: a@b, Name <a@b>, "Last, First" <a@b>, a@b (Name).

    A bare name without @ (a local user or an alias) is returned as is, for
    expand() to resolve.
    """
    if any(c in text for c in "\r\n\0"):
        raise DataError(f"invalid address {text!r} in {where}: "
                        "it contains a line break or NUL")
    if BARE_NAME.fullmatch(text):
        return Mailbox("", text)
    name, addr = parseaddr(text)
    if addr and BARE_NAME.fullmatch(addr) and _whole(text, addr):
        return Mailbox(name.strip(), addr)  # `root (Cron Daemon)`
    shown = text if len(text) < 80 else text[:77] + "..."
    if not addr or not ADDR_SPEC.fullmatch(addr) or not _whole(text, addr):
        raise DataError(f"invalid address {shown!r} in {where}")
    local, _, domain = addr.rpartition("@")
    # RFC 5321, 4.5.3.1: 64 octets of local part, 255 of domain.
    if len(local.encode(errors="replace")) > 64 or \
            len(domain.encode(errors="replace")) > 255:
        raise DataError(f"address {shown!r} in {where} is too long for SMTP")
    return Mailbox(name.strip(), wire_address(addr, where))


def wire_address(addr: str, where: str) -> str:
    """The address as it goes on the wire: the domain in IDNA 2008 form.

    A non-ASCII local part is kept; it can only go to a relay that offers
    SMTPUTF8, which the relay checks.
    """
    local, _, domain = addr.rpartition("@")
    if domain.isascii():
        return addr
    import idna

    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DataError(f"address {addr!r} in {where}: invalid international "
                        f"domain name ({exc})") from exc
    return f"{local}@{ascii_domain}"


# A comment holding no other (nested ones go from the inside out).
COMMENT = re.compile(r"\([^()]*\)")


def _whole(text: str, addr: str) -> bool:
    """True when parseaddr used all of text (it drops what it cannot read)."""
    if "<" in text:
        return text.rstrip().endswith(">")
    # What is left without its comments, before or after: `(note) a@b`.
    bare, count = text, 1
    while count:
        bare, count = COMMENT.subn(" ", bare)
    return bare.strip() == addr


def parse_list(values: list[str] | tuple[str, ...], where: str) -> list[Mailbox]:
    """Parse arguments that may each hold a comma-separated list."""
    result: list[Mailbox] = []
    for value in values:
        result.extend(parse_mailbox(item, where) for item in split_list(value))
    return result


def expand(mailboxes: list[Mailbox], aliases: dict[str, list[str]],
           where: str, catchall: str | None = None) -> list[Mailbox]:
    """Replace alias names by their members. A bare name that is no alias
    goes to the catch-all address when there is one, else is an error."""
    result: list[Mailbox] = []
    for mailbox in mailboxes:
        result.extend(_expand_one(mailbox, aliases, where, 0, set(), catchall))
    return result


def _expand_one(mailbox: Mailbox, aliases: dict[str, list[str]], where: str,
                depth: int, seen: set[str],
                catchall: str | None) -> list[Mailbox]:
    if "@" in mailbox.addr:
        return [mailbox]
    name = mailbox.addr
    if name in seen or depth > MAX_ALIAS_DEPTH:
        raise DataError(f"alias '{name}' in {where} refers to itself")
    if name not in aliases:
        if catchall:
            return [Mailbox(mailbox.name, wire_address(catchall,
                                                       "pymail-catchall"))]
        raise DataError(f"'{name}' in {where} is neither an address nor an "
                        "alias", hint=f"write a full address, add "
                        f"`alias {name} you@example.com` to the mail.rc, or "
                        "set pymail-catchall (or pymail-etc-aliases)")
    members = parse_list(aliases[name], f"alias {name}")
    result: list[Mailbox] = []
    for member in members:
        result.extend(_expand_one(member, aliases, where, depth + 1,
                                  seen | {name}, catchall))
    return result


def unique(mailboxes: list[Mailbox]) -> list[str]:
    """Envelope addresses, each once, in order (case-insensitive domain)."""
    seen: set[str] = set()
    result = []
    for mailbox in mailboxes:
        local, _, domain = mailbox.addr.rpartition("@")
        key = f"{local}@{domain.lower()}"
        if key not in seen:
            seen.add(key)
            result.append(mailbox.addr)
    return result
