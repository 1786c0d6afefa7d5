"""Strategies for the IMAP command grammar (``mailserver.imap``).

Models: :func:`sequence_sets` (a :class:`~mailserver.imap.sequence.SequenceSet` and its text),
:func:`store_commands`, :func:`fetch_commands`, :func:`select_commands` and
:func:`status_commands` (a command's bytes and the ``args`` it must parse to),
:func:`search_keys` (valid search-key text, recursive), :func:`command_streams` (several
commands with synchronizing and non-synchronizing literals, as a client sends them). Noise:
:func:`near_grammar_commands` (real tags and command names followed by grammar fragments).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from mailserver.imap import response
from mailserver.imap.parse_fetch import MACROS, SIMPLE_ATTRIBUTES, Fetch, FetchAtt, Store
from mailserver.imap.parse_mailbox import Select, Status
from mailserver.imap.scanner import SYSTEM_FLAGS, dedupe_flags
from mailserver.imap.sequence import MAX_NUMBER, STAR, Bound, SequenceSet

#: Tag characters: ASTRING-CHAR without "+" (RFC 9051 §9), a few of each kind.
tags = st.text(alphabet="AZaz09.-_!#&'/;<=>?@^`|~]", min_size=1, max_size=8)
atoms = st.text(alphabet="AZaz09.-_!#&'/;<=>?@^`|~$", min_size=1, max_size=10)
#: Mailbox names as users type them (no controls, no lone surrogates).
mailbox_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).map(lambda name: "INBOX" if name.upper() == "INBOX" else name)
keyword_flags = atoms.filter(lambda a: not a.startswith("\\"))
flags = st.sampled_from(sorted(SYSTEM_FLAGS.values())) | keyword_flags
numbers = st.integers(1, MAX_NUMBER)
bounds: st.SearchStrategy[Bound] = st.none() | numbers | st.integers(1, 20)


def _normal(first: Bound, last: Bound) -> tuple[Bound, Bound]:
    """The parser's form of a range: numbers ascending, ``*`` last."""
    if first is None and last is not None:
        return last, STAR
    if first is not None and last is not None and first > last:
        return last, first
    return first, last


def _bound_text(bound: Bound) -> str:
    return "*" if bound is None else str(bound)


@st.composite
def sequence_sets(draw: st.DrawFn) -> tuple[str, SequenceSet]:
    """``(text, set)``: ``$`` or 1-6 ranges and numbers, ``*`` anywhere."""
    if draw(st.integers(0, 15)) == 0:
        return "$", SequenceSet.saved_result()
    items = draw(st.lists(st.tuples(bounds, st.booleans(), bounds), min_size=1, max_size=6))
    words, ranges = [], []
    for first, is_range, last in items:
        if is_range:
            words.append(f"{_bound_text(first)}:{_bound_text(last)}")
            ranges.append(_normal(first, last))
        else:
            words.append(_bound_text(first))
            ranges.append((first, first))
    return ",".join(words), SequenceSet(tuple(ranges))


def _case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.lower() if f else c.upper() for c, f in zip(word, flips))


@st.composite
def store_commands(draw: st.DrawFn) -> tuple[bytes, str, Store]:
    """``(line, command name, Store)``: STORE/UID STORE with any mode, SILENT, a flag list."""
    tag = draw(tags)
    uid = draw(st.booleans())
    text, sequence = draw(sequence_sets())
    mode = draw(st.sampled_from(["replace", "add", "remove"]))
    silent = draw(st.booleans())
    chosen = draw(st.lists(flags, max_size=5))
    unchanged = draw(st.none() | st.integers(0, 2**63 - 1))
    sign = {"replace": "", "add": "+", "remove": "-"}[mode]
    item = sign + "FLAGS" + (".SILENT" if silent else "")
    modifier = f"(UNCHANGEDSINCE {unchanged}) " if unchanged is not None else ""
    name = "UID STORE" if uid else "STORE"
    line = f"{tag} {_case(draw, name)} {text} {modifier}{_case(draw, item)} ({' '.join(chosen)})"
    store = Store(sequence, uid, mode, silent, dedupe_flags(chosen), unchanged)
    return line.encode(), name, store


_SECTIONS = st.sampled_from(
    ["BODY[]", "BODY.PEEK[TEXT]", "BODY[1.2.MIME]", "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
     "BODY[2.HEADER.FIELDS.NOT (X-A)]<0.10>", "BINARY[1]", "BINARY.PEEK[1.1]<5.100>",
     "BINARY.SIZE[3]", "BODY[HEADER]"]
)  # fmt: skip


@st.composite
def fetch_commands(draw: st.DrawFn) -> tuple[bytes, str, Fetch | None]:
    """``(line, command name, Fetch or None)``: a FETCH with a macro, or a list of simple
    attributes (then the expected Fetch) and sections (then None: only parse success)."""
    tag = draw(tags)
    uid = draw(st.booleans())
    name = "UID FETCH" if uid else "FETCH"
    text, sequence = draw(sequence_sets())
    if draw(st.booleans()):
        macro = draw(st.sampled_from(sorted(MACROS)))
        items = tuple(FetchAtt(att) for att in MACROS[macro])
        line = f"{tag} {name} {text} {_case(draw, macro)}"
        expected_items: tuple[FetchAtt, ...] | None = items
    else:
        simple = draw(st.lists(st.sampled_from(sorted(SIMPLE_ATTRIBUTES)), min_size=1,
                               max_size=5))  # fmt: skip
        sections = draw(st.lists(_SECTIONS, max_size=3))
        line = f"{tag} {name} {text} ({' '.join(simple + sections)})"
        expected_items = tuple(dict.fromkeys(FetchAtt(a) for a in simple)) if not sections else None
        if uid and expected_items is not None and FetchAtt("UID") not in expected_items:
            expected_items = None  # UID FETCH may add UID itself; only check it parses
    expected = Fetch(sequence, uid, expected_items) if expected_items is not None else None
    return line.encode(), name, expected


@st.composite
def select_commands(draw: st.DrawFn) -> tuple[bytes, bool, Select]:
    """``(line, utf8, Select)``: SELECT or EXAMINE of any name, encoded for the client kind."""
    name = draw(mailbox_names)
    utf8 = draw(st.booleans())
    readonly = draw(st.booleans())
    verb = "EXAMINE" if readonly else "SELECT"
    line = f"{draw(tags)} {verb} ".encode() + response.mailbox(name, utf8=utf8)
    return line, utf8, Select(name, readonly)


_STATUS_ITEMS = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                 "HIGHESTMODSEQ"]  # fmt: skip


@st.composite
def status_commands(draw: st.DrawFn) -> tuple[bytes, bool, Status]:
    """``(line, utf8, Status)``: STATUS of any name with 1-4 items (duplicates allowed)."""
    name = draw(mailbox_names)
    utf8 = draw(st.booleans())
    items = draw(st.lists(st.sampled_from(_STATUS_ITEMS), min_size=1, max_size=4))
    words = " ".join(_case(draw, item) for item in items)
    line = f"{draw(tags)} STATUS ".encode() + response.mailbox(name, utf8=utf8)
    line += f" ({words})".encode()
    return line, utf8, Status(name, tuple(dict.fromkeys(items)))


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATES = st.dates(min_value=dt.date(1970, 1, 1)).map(
    lambda d: f"{d.day}-{_MONTHS[d.month - 1]}-{d.year:04d}"
)
_STRINGS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).map(
    lambda t: response.astring(t).decode()
)
_SIMPLE_KEYS = st.sampled_from(
    ["ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED", "UNDELETED",
     "UNDRAFT", "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT"]
)  # fmt: skip


def search_keys() -> st.SearchStrategy[str]:
    """Valid ``search-key`` text: flags, strings, dates, sizes, sets, NOT, OR and lists."""
    leaves = st.one_of(
        _SIMPLE_KEYS,
        st.builds("{} {}".format, st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT",
                                                   "BODY", "TEXT"]), _STRINGS),  # fmt: skip
        st.builds("HEADER {} {}".format, st.sampled_from(["X-A", "Message-ID"]), _STRINGS),
        st.builds("{} {}".format, st.sampled_from(["BEFORE", "ON", "SINCE", "SENTBEFORE",
                                                   "SENTON", "SENTSINCE"]), _DATES),  # fmt: skip
        st.builds("{} {}".format, st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 10**9)),
        st.builds("KEYWORD {}".format, keyword_flags),
        sequence_sets().map(lambda s: s[0]),
        sequence_sets().map(lambda s: f"UID {s[0]}"),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            inner.map("NOT {}".format),
            st.builds("OR {} {}".format, inner, inner),
            st.lists(inner, min_size=1, max_size=3).map(lambda keys: f"({' '.join(keys)})"),
        ),
        max_leaves=8,
    )


@st.composite
def command_streams(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """``(bytes, commands, synchronizing literals)``: LOGIN commands whose UTF-8 user name and
    password go as quoted strings, ``{n}`` or ``{n+}`` literals, each command CRLF-terminated."""
    out, commands, sync = [], 0, 0
    for _ in range(draw(st.integers(1, 4))):
        tag = draw(tags)
        parts = []
        texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=12)  # fmt: skip
        for value in [t.encode() for t in draw(st.lists(texts, min_size=2, max_size=2))]:
            kind = draw(st.sampled_from(["quoted", "sync", "plus"]))
            if kind == "quoted" and value.isascii() and b"\r" not in value and b"\n" not in value:
                parts.append(response.quoted(value.decode()))
            elif kind == "sync":
                parts.append(b"{%d}\r\n" % len(value) + value)
                sync += 1
            else:
                parts.append(b"{%d+}\r\n" % len(value) + value)
        out.append(tag.encode() + b" LOGIN " + b" ".join(parts) + b"\r\n")
        commands += 1
    return b"".join(out), commands, sync


_FRAGMENTS = st.sampled_from(
    ["(", ")", "[", "]", "<", ">", "{", "}", "{3}", "{0+}", "~{1}", '"', '\\"', "\\", " ", "*",
     "%", "$", ":", ",", "1", "0", "4294967296", "1:*", "NIL", "BODY[", "BODY.PEEK[",
     "HEADER.FIELDS", "(FLAGS", "\\Seen", "UID", "OR", "NOT", "CHARSET", "UTF-8", "RETURN",
     "(SAVE)", "MODSEQ", "CHANGEDSINCE", "VANISHED", "UNCHANGEDSINCE", "QRESYNC", "&", "&-",
     "&AOQ", "é", "\x00", "\r", "\n", "\x7f", "01-Jan-2024", '"1-Jan-2024 00:00:00 +0000"']
)  # fmt: skip
_NAMES = st.sampled_from(
    ["NOOP", "LOGIN", "AUTHENTICATE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
     "SUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "SEARCH", "FETCH", "STORE", "COPY",
     "MOVE", "UID FETCH", "UID SEARCH", "UID STORE", "UID EXPUNGE", "UID MOVE", "ENABLE",
     "ID", "GETQUOTA", "SETQUOTA", "GETQUOTAROOT", "IDLE", "BOGUS"]
)  # fmt: skip


@st.composite
def near_grammar_commands(draw: st.DrawFn) -> bytes:
    """A tag and a real command name followed by up to 15 grammar fragments (no CRLF)."""
    rest = draw(st.lists(_FRAGMENTS | atoms, max_size=15))
    return f"{draw(tags)} {draw(_NAMES)} {' '.join(rest)}".encode()
