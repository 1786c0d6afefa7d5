"""Strategies for RFC 5321 paths and SMTP command lines (``mailserver.smtp.grammar``).

Models: :func:`mailboxes` (canonical :class:`~mailserver.types.Address` values), :func:`paths`
(``<...>`` text with the address it names), :func:`mail_commands` and :func:`rcpt_commands`
(a command line with the sender/recipient and parameters it must parse to). Noise:
:func:`command_lines` (known verbs with near-grammar arguments, and raw bytes).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mailserver.message.address import MAX_LOCAL_PART, quote_local
from mailserver.smtp.grammar import MailParams, RcptParams, xtext_encode
from mailserver.types import Address

#: RFC 5322 atext plus a few UTF-8 characters (RFC 6531).
ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-é日"
#: Every extension whose parameters the grammar knows.
ALL_EXTENSIONS = frozenset({"SIZE", "8BITMIME", "BINARYMIME", "SMTPUTF8", "DSN", "AUTH"})
VERBS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
         "EXPN", "HELP", "AUTH", "STARTTLS")  # fmt: skip

atoms = st.text(alphabet=ATEXT, min_size=1, max_size=8)
dot_strings = st.lists(atoms, min_size=1, max_size=4).map(".".join)
#: Quoted local parts, already in canonical form (what the parser keeps).
quoted_locals = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éü日😀"),
    min_size=1,
    max_size=20,
).map(quote_local)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True) | st.sampled_from(
    ["bücher", "例子", "xn--bcher-kva", "münchen"]
)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
address_literals = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip.compressed}]"),
)


def _fits(address: Address) -> bool:
    # RFC 5321 §4.5.3.1.1 and §4.5.3.1.3: 64 octets of local part, 256 of path.
    return (
        len(address.local.encode()) <= MAX_LOCAL_PART and len(str(address).encode()) + 2 <= 256
    )


def mailboxes(*, ascii_only: bool = False) -> st.SearchStrategy[Address]:
    """Valid mailboxes in the canonical form the parser returns."""
    drawn = st.builds(Address, dot_strings | quoted_locals, domains | address_literals)
    drawn = drawn.filter(_fits)
    return drawn.filter(lambda a: str(a).isascii()) if ascii_only else drawn


@st.composite
def paths(draw: st.DrawFn, *, null: bool = True, ascii_only: bool = False) -> tuple[str, Any]:
    """``(path text, Address or None)``: ``<>``, ``<mailbox>`` or a source route (dropped)."""
    if null and draw(st.integers(0, 9)) == 0:
        return "<>", None
    address = draw(mailboxes(ascii_only=ascii_only))
    route = draw(st.lists(domains, max_size=2))
    prefix = ",".join(f"@{hop}" for hop in route) + ":" if route else ""
    text = f"<{prefix}{address}>"
    if len(text.encode()) > 256:
        text = f"<{address}>"
    return text, address


def _case(draw: st.DrawFn, word: str) -> str:
    """``word`` in a random mix of upper and lower case (keywords are case-insensitive)."""
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.lower() if f else c.upper() for c, f in zip(word, flips))


xtext_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30
)


@st.composite
def mail_commands(draw: st.DrawFn) -> tuple[bytes, Address | None, MailParams]:
    """``(MAIL line, sender, parameters)`` with every extension advertised."""
    path, sender = draw(paths(ascii_only=True))
    smtputf8 = draw(st.booleans())
    if smtputf8:
        path, sender = draw(paths())
    words: list[str] = []
    size = draw(st.none() | st.integers(0, 10**12))
    body = draw(st.none() | st.sampled_from(["7BIT", "8BITMIME", "BINARYMIME"]))
    ret = draw(st.none() | st.sampled_from(["FULL", "HDRS"]))
    envid = draw(st.none() | xtext_values.filter(lambda t: len(t) <= 100))
    auth = draw(st.none() | st.just("") | st.sampled_from(["alice@example.org", "a+b=c"]))
    if size is not None:
        words.append(f"{_case(draw, 'SIZE')}={size}")
    if body is not None:
        words.append(f"{_case(draw, 'BODY')}={_case(draw, body)}")
    if smtputf8:
        words.append(_case(draw, "SMTPUTF8"))
    if ret is not None:
        words.append(f"RET={_case(draw, ret)}")
    if envid is not None:
        words.append(f"ENVID={xtext_encode(envid)}")
    if auth is not None:
        words.append("AUTH=<>" if auth == "" else f"AUTH={xtext_encode(auth)}")
    words = draw(st.permutations(words))
    spaces = draw(st.sampled_from(["", " ", "  "]))  # tolerated after the colon
    line = f"{_case(draw, 'MAIL')} {_case(draw, 'FROM:')}{spaces}{path}"
    line += "".join(" " + word for word in words)
    params = MailParams(size, body, smtputf8, ret, envid, auth)
    return line.encode("utf-8"), sender, params


@st.composite
def rcpt_commands(draw: st.DrawFn) -> tuple[bytes, Address, RcptParams]:
    """``(RCPT line, recipient, parameters)`` with DSN advertised and SMTPUTF8 on."""
    path, recipient = draw(paths(null=False))
    words: list[str] = []
    notify = draw(
        st.none()
        | st.just(("NEVER",))
        | st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, max_size=3,
                   unique=True).map(tuple)
    )  # fmt: skip
    orcpt = draw(st.none() | st.tuples(st.just("rfc822"), st.emails().map(str)))
    if notify is not None:
        words.append("NOTIFY=" + ",".join(_case(draw, word) for word in notify))
    if orcpt is not None and len(orcpt[1]) <= 500:
        words.append(f"ORCPT={_case(draw, orcpt[0])};{xtext_encode(orcpt[1])}")
    else:
        orcpt = None
    words = draw(st.permutations(words))
    line = f"{_case(draw, 'RCPT')} {_case(draw, 'TO:')}{path}" + "".join(" " + w for w in words)
    return line.encode("utf-8"), recipient, RcptParams(notify, orcpt)


#: Argument fragments near the grammar: paths, parameters, broken quoting and escapes.
_FRAGMENTS = st.sampled_from(
    ["FROM:", "TO:", "<", ">", "<>", "@", '"', "\\", ":", ",", "=", "+", "+2B", "+ZZ", " ",
     "\t", "SIZE=", "BODY=8BITMIME", "BODY=BINARYMIME", "SMTPUTF8", "RET=HDRS", "ENVID=",
     "AUTH=<>", "NOTIFY=NEVER,DELAY", "ORCPT=rfc822;", "ORCPT=utf-8;\\x{E9}", "[", "]",
     "IPv6:", "::1", "192.0.2.1", "a@b.example", "Postmaster", "xn--", "é", "\x00", "\x7f",
     "999999999999999999999", "a" * 70]
)  # fmt: skip


@st.composite
def near_grammar_lines(draw: st.DrawFn) -> bytes:
    """A known verb followed by fragments of MAIL/RCPT/EHLO syntax."""
    verb = _case(draw, draw(st.sampled_from(VERBS)))
    rest = "".join(draw(st.lists(_FRAGMENTS | st.text(max_size=4), max_size=12)))
    return f"{verb} {rest}".encode("utf-8", "surrogatepass")


def command_lines() -> st.SearchStrategy[bytes]:
    """Noise and structure mixed: valid MAIL/RCPT lines, near-grammar lines, raw bytes."""
    return st.one_of(
        mail_commands().map(lambda m: m[0]),
        rcpt_commands().map(lambda r: r[0]),
        near_grammar_lines(),
        st.binary(max_size=80),
    )
