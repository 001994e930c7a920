"""A short fuzz run of every target in fuzz_targets.py: any input gives a
result or a pymail error, never a crash or an added header line."""

from __future__ import annotations

import os
import re

import idna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_targets import fuzz_addresses, fuzz_header_block, fuzz_mailrc
from pymail.addresses import ADDR_SPEC
from pymail.settings import LDH_NAME

# FUZZ_EXAMPLES=5000 makes a longer run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
SHORT = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

# Text built from what the parsers care about, so that the search reaches
# past the first syntax error more often than random bytes would.
PIECES = ["set ", "unset ", "alias ", "account a {", "}", "if s", "else",
          "endif", "source x", "\\", "\\\n", "'", '"', "=", " ", "\t", "\n",
          "\r\n", "#", "no", "smtp", "smtp-auth-password", "from", "wysh ",
          "ignore ", "\0", "é", "\u2028", "define m {"]
rc_text = st.lists(st.sampled_from(PIECES) | st.text(max_size=5),
                   max_size=40).map("".join)

ADDRESS = ["a@b.c", "<", ">", "(", ")", '"', ",", " ", "\\", "@", ".",
           "Name", "\r\n", "\0", "ops", "例子", "xn--", ":", ";"]
address_text = st.lists(st.sampled_from(ADDRESS) | st.text(max_size=4),
                        max_size=30).map("".join)

HEADER = ["To: ", "Cc: ", "Bcc: ", "Subject: ", "From: ", "X-A: ",
          "Content-Type: ", "Date: ", "Message-ID: ", "a@b.c", "\n", "\r\n",
          " ", "\t", ":", "=?utf-8?q?x?=", "\r", "\0", "é", ",", "<", ">"]
header_text = st.lists(st.sampled_from(HEADER) | st.text(max_size=4),
                       max_size=40).map("".join)


@SHORT
@given(st.binary(max_size=400))
def test_mailrc_bytes(data: bytes) -> None:
    fuzz_mailrc(data)


@SHORT
@given(rc_text)
def test_mailrc_text(text: str) -> None:
    fuzz_mailrc(text.encode("utf-8", "surrogatepass"))


@SHORT
@given(st.binary(max_size=200))
def test_address_bytes(data: bytes) -> None:
    fuzz_addresses(data)


@SHORT
@given(address_text)
def test_address_text(text: str) -> None:
    fuzz_addresses(text.encode("utf-8", "surrogatepass"))


# ADDR_SPEC as first written, spelling non-ASCII out: slow to compile.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LABEL = (r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*"
          r"[A-Za-z0-9\u0080-\U0010ffff])?")
SPELLED_OUT = re.compile(
    rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")'
    rf"@(?:{_LABEL}(?:\.{_LABEL})*|\[[^\[\]\\\s]+\])")


@SHORT
@given(address_text | st.text(alphabet=st.sampled_from(
    list("aZ9!#$%&'*+/=?^_`{|}~-.@\"()<>,;:[]\\ \t\r\n\x00\x7f\x80é")
    + ["\U0010ffff", "\ud800", "。"]), max_size=12))
def test_address_syntax_is_the_spelled_out_one(text: str) -> None:
    assert bool(ADDR_SPEC.fullmatch(text)) == \
        bool(SPELLED_OUT.fullmatch(text))


@SHORT
@given(st.lists(st.sampled_from(["a", "Z", "9", "-", "--", ".", "xn--",
                                 "a" * 60]), max_size=12).map("".join))
def test_plain_host_names_are_valid_idna(host: str) -> None:
    """A host valid_host accepts without idna, idna accepts too."""
    if LDH_NAME.fullmatch(host):
        idna.encode(host, uts46=True)


@SHORT
@given(st.binary(max_size=400))
def test_header_block_bytes(data: bytes) -> None:
    fuzz_header_block(data)


@SHORT
@given(header_text)
def test_header_block_text(text: str) -> None:
    fuzz_header_block(text.encode("utf-8", "surrogatepass"))


def test_targets_can_succeed() -> None:
    """The targets really parse: well-formed input gets through."""
    state = fuzz_mailrc(b"set from=a@b.c smtp-use-starttls\nalias x y@z.w\n")
    assert state is not None and state.variables["from"] == "a@b.c"
    wire = fuzz_header_block(b"To: x@y.z\nSubject: hi\nX-A: 1\n\nbody\n")
    assert wire is not None and b"X-A: 1\r\n" in wire
