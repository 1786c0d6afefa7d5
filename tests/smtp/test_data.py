"""DATA and BDAT content readers: dot-unstuffing, end of data, smuggling, limits, chunking."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.smtp import data
from mailserver.smtp.data import BdatState, ChunkReader, DataReader, Outcome, dot_stuff

MODES = ["reject", "normalize"]
SMUGGLED = b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
#: The published SMTP smuggling end-of-data variants (SEC Consult 2023; postfix.org/smtp-smuggling).
VARIANTS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
]


def has_bare(data: bytes) -> bool:
    """True when ``data`` holds a CR or LF that is not part of a CRLF."""
    rest = data.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest


def read(data: bytes, pieces: list[int] | None = None, **options):
    """Feed ``data`` cut at ``pieces``; (content, leftover + the unfed rest, reader)."""
    sink = io.BytesIO()
    reader = DataReader(sink, **options)
    leftover = drive(reader, split(data, pieces or []))
    return sink.getvalue(), leftover, reader


def drive(reader: DataReader | ChunkReader, pieces: list[bytes]) -> bytes | None:
    """Feed pieces until the reader is done; what it returned plus the pieces never fed.

    After BARE_NEWLINE the caller closes the connection, so nothing else is ever read.
    """
    for number, piece in enumerate(pieces):
        leftover = reader.feed(piece)
        if leftover is not None and reader.outcome is Outcome.BARE_NEWLINE:
            return leftover
        if leftover is not None:
            return leftover + b"".join(pieces[number + 1 :])
    return None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut into pieces at the (sorted, clipped) positions ``cuts``."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def test_basic_message():
    """A plain message is stored up to and including its final CRLF; the "." line is not."""
    content, leftover, reader = read(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    assert (content, leftover, reader.outcome) == (b"Subject: hi\r\n\r\nbody\r\n", b"", Outcome.OK)
    assert reader.size == len(content) and not reader.has_8bit


def test_empty_message():
    """Data that starts with ".<CRLF>" is an empty message (the DATA line's CRLF precedes it)."""
    assert read(b".\r\n")[:2] == (b"", b"")


def test_blank_line_message():
    """Data starting "<CRLF>.<CRLF>" is a message of one empty line (RFC 5321 §4.1.1.4)."""
    assert read(b"\r\n.\r\n")[:2] == (b"\r\n", b"")


def test_dot_unstuffing():
    """One leading dot is removed from each line that starts with "." (RFC 5321 §4.5.2)."""
    content, _, _ = read(b"..x\r\n...y\r\nz.\r\n..\r\n.\r\n")
    assert content == b".x\r\n..y\r\nz.\r\n.\r\n"


def test_double_dot_line_then_end():
    """A ".." line is a "." line of content, and the next "." line still ends the data."""
    assert read(b"..\r\n.\r\nQUIT\r\n")[:2] == (b".\r\n", b"QUIT\r\n")


def test_pipelined_leftover():
    """The bytes after the end of data are returned exactly, for the next commands (RFC 2920)."""
    data = b"a\r\n.\r\nQUIT\r\nNOOP"
    assert read(data)[1] == b"QUIT\r\nNOOP"
    assert read(data, [4, 5, 6])[1] == b"QUIT\r\nNOOP"


def test_eight_bit_detected():
    """Any octet >= 0x80 sets has_8bit (RFC 6152), and pure ASCII leaves it unset."""
    assert read("héllo\r\n.\r\n".encode())[2].has_8bit
    assert not read(b"hello\r\n.\r\n")[2].has_8bit


def test_end_split_everywhere():
    """Cutting "<CRLF>.<CRLF>" at any point (between CR and LF, after the dot) still ends it."""
    data = b"x\r\n.y\r\n.\r\nQUIT\r\n"
    for cut in range(len(data) + 1):
        for cut2 in range(cut, len(data) + 1):
            assert read(data, [cut, cut2])[:2] == (b"x\r\ny\r\n", b"QUIT\r\n"), (cut, cut2)


def test_bad_mode_refused():
    """An unknown bare_newline mode is a programming error."""
    with pytest.raises(ValueError):
        DataReader(io.BytesIO(), bare_newline="fix")


def test_feed_after_end_refused():
    """Feeding a reader that already ended is a programming error."""
    reader = DataReader(io.BytesIO())
    assert reader.feed(b".\r\n") == b""
    with pytest.raises(ValueError):
        reader.feed(b"x")


# -- SMTP smuggling: only <CRLF>.<CRLF> ends the data --------------------------------------


def smuggle(variant: bytes, mode: str):
    """Send a first message, a smuggling variant, a second SMTP transaction, then the real end."""
    data = b"Subject: first\r\n\r\nbody" + variant + SMUGGLED + b"forged\r\n.\r\nQUIT\r\n"
    return read(data, bare_newline=mode)


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_variant_in_normalize_mode_stays_in_the_message(variant):
    """In normalize mode no variant ends the data: the smuggled MAIL FROM is message content."""
    content, leftover, reader = smuggle(variant, "normalize")
    assert reader.outcome is Outcome.OK
    assert leftover == b"QUIT\r\n"
    assert b"MAIL FROM:<admin@example.org>\r\n" in content
    assert content.endswith(b"forged\r\n")


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_variant_in_reject_mode(variant):
    """In reject mode a variant with a bare CR/LF kills the session; others stay content."""
    content, leftover, reader = smuggle(variant, "reject")
    if has_bare(variant):
        assert (reader.outcome, leftover) == (Outcome.BARE_NEWLINE, b"")
        assert b"MAIL FROM" not in content
    else:  # only real CRLFs: the NUL variants are ordinary content
        assert (reader.outcome, leftover) == (Outcome.OK, b"QUIT\r\n")
        assert b"MAIL FROM:<admin@example.org>\r\n" in content


@pytest.mark.parametrize(
    ("variant", "stored"),
    [
        (b"\n.\n", b"\r\n.\r\n"),
        (b"\n.\r\n", b"\r\n.\r\n"),
        (b"\r\n.\n", b"\r\n.\r\n"),
        (b"\r.\r", b"\r.\r"),
        (b"\r\n.\r", b"\r\n\r"),
        (b"\r.\r\n", b"\r.\r\n"),
        (b"\n.\r", b"\r\n\r"),
        (b"\n..\n", b"\r\n.\r\n"),
    ],
    ids=repr,
)
def test_normalize_mode_storage(variant, stored):
    """Normalize mode stores bare LF as CRLF, keeps bare CR, and keeps a near-miss "." line."""
    content, _, _ = read(b"a" + variant + b"b\r\n.\r\n", bare_newline="normalize")
    assert content == b"a" + stored + b"b\r\n"


@pytest.mark.parametrize("variant", VARIANTS[:7], ids=repr)
def test_variant_split_bytewise_is_the_same(variant):
    """A smuggling variant fed one byte at a time gives the same result as in one piece."""
    data = b"body" + variant + SMUGGLED + b".\r\nQUIT\r\n"
    for mode in MODES:
        whole = read(data, bare_newline=mode)
        bytewise = read(data, list(range(len(data))), bare_newline=mode)
        assert (whole[1], whole[2].outcome) == (bytewise[1], bytewise[2].outcome)
        assert whole[0] == bytewise[0] or whole[2].outcome is Outcome.BARE_NEWLINE


def test_bare_lf_rejected_at_once():
    """In reject mode a bare LF is decided as soon as it is seen, without waiting for the end."""
    reader = DataReader(io.BytesIO())
    assert reader.feed(b"Subject: x\nmore") == b""
    assert reader.outcome is Outcome.BARE_NEWLINE


# -- limits -----------------------------------------------------------------------------------


def test_size_cap_boundary():
    """max_size == size is accepted; one more octet is TOO_BIG, read to the end and in sync."""
    message = b"x" * 98 + b"\r\n"
    content, leftover, reader = read(message + b".\r\nQUIT\r\n", max_size=100)
    assert (reader.outcome, content, leftover, reader.size) == (
        Outcome.OK,
        message,
        b"QUIT\r\n",
        100,
    )
    bigger = b"y" + message + b"more\r\n" * 1000
    content, leftover, reader = read(bigger + b".\r\nQUIT\r\n", [50, 101, 3000], max_size=100)
    assert (reader.outcome, leftover) == (Outcome.TOO_BIG, b"QUIT\r\n")
    assert len(content) <= 100


def test_line_length_boundary():
    """A 1000-octet line including CRLF is accepted; 1001 is LINE_TOO_LONG (RFC 5321 §4.5.3.1.6)."""
    ok = b"a" * 998 + b"\r\n"
    assert read(ok + b".\r\n", max_line=1000)[2].outcome is Outcome.OK
    long = b"a" * 999 + b"\r\n"
    for pieces in ([], [500], [999, 1000]):
        _, leftover, reader = read(b"x\r\n" + long + b".\r\nQUIT\r\n", pieces, max_line=1000)
        assert (reader.outcome, leftover) == (Outcome.LINE_TOO_LONG, b"QUIT\r\n")


def test_line_length_ignores_stuffing_dot():
    """The dot added for transparency does not count towards the line length (§4.5.3.1.6)."""
    line = b"." + b"a" * 997 + b"\r\n"  # 1000 octets as stored, 1001 on the wire
    assert read(b"." + line + b".\r\n", max_line=1000)[2].outcome is Outcome.OK


def test_bare_newline_wins_over_limits():
    """A bare LF after the size cap was passed still closes the session."""
    _, leftover, reader = read(b"x" * 50 + b"\r\ny\nz\r\n.\r\n", max_size=10)
    assert (reader.outcome, leftover) == (Outcome.BARE_NEWLINE, b"")


def test_large_message_in_64k_pieces():
    """A 10 MB message fed in 64 KiB pieces is read completely and written in large pieces."""
    line = b"x" * 70 + b"\r\n"
    body = (line * 999 + b".stuffed\r\n") * 150
    data = body + b".\r\nQUIT\r\n"
    sink = io.BytesIO()
    reader = DataReader(sink, max_size=20 << 20, max_line=1000)
    step = 64 << 10
    results = [reader.feed(data[i : i + step]) for i in range(0, len(data), step)]
    assert results[-1] == b"QUIT\r\n" and all(r is None for r in results[:-1])
    assert reader.outcome is Outcome.OK
    assert sink.getvalue() == body.replace(b"\r\n.stuffed", b"\r\nstuffed")


# -- BDAT ------------------------------------------------------------------------------------


def chunk(data: bytes, size: int, pieces: list[int] | None = None, sink=None, **options):
    """Feed one BDAT chunk of ``size`` octets; (stored, leftover, reader)."""
    sink = sink if sink is not None else io.BytesIO()
    reader = ChunkReader(sink, size, **options)
    leftover = drive(reader, split(data, pieces or []))
    return sink.getvalue(), leftover, reader


def test_chunk_exact_size_and_leftover():
    """A chunk is exactly its size in octets, with no unstuffing; the rest is returned."""
    stored, leftover, reader = chunk(b".a\r\n.\r\nBDAT 0 LAST\r\n", 7, [3])
    assert (stored, leftover, reader.outcome, reader.size) == (
        b".a\r\n.\r\n",
        b"BDAT 0 LAST\r\n",
        Outcome.OK,
        7,
    )


def test_empty_chunk_completes_at_once():
    """BDAT 0 is complete without any input."""
    assert chunk(b"", 0)[1] == b""


def test_chunk_size_cap_counts_earlier_chunks():
    """max_size counts the octets of earlier chunks (RFC 1870 with RFC 3030)."""
    assert chunk(b"x" * 10, 10, already=90, max_size=100)[2].outcome is Outcome.OK
    stored, leftover, reader = chunk(b"x" * 11 + b"NOOP", 11, already=90, max_size=100)
    assert (stored, leftover, reader.outcome, reader.size) == (b"", b"NOOP", Outcome.TOO_BIG, 101)


@pytest.mark.parametrize("body", [b"a\nb", b"a\rb", b"a\r", b"\nb"], ids=repr)
def test_chunk_bare_newline_rejected(body):
    """In reject mode a bare CR or LF in a text chunk is BARE_NEWLINE, after the whole chunk."""
    state = BdatState()
    _, leftover, reader = chunk(body + b"RSET", len(body), state=state, last=True)
    assert (reader.outcome, leftover) == (Outcome.BARE_NEWLINE, b"RSET")


def test_chunk_binary_is_verbatim():
    """BODY=BINARYMIME chunks are stored as they are, bare CR/LF included (RFC 3030 §3)."""
    body = b"\x00\n\r\xff\r"
    stored, _, reader = chunk(body, len(body), binary=True, state=BdatState(), last=True)
    assert (stored, reader.outcome, reader.has_8bit) == (body, Outcome.OK, True)


def test_crlf_split_across_chunks():
    """A CR ending one chunk and a LF starting the next are one CRLF, given a shared state."""
    state, sink = BdatState(), io.BytesIO()
    assert chunk(b"a\r", 2, sink=sink, state=state)[2].outcome is Outcome.OK
    assert state.last_cr
    assert chunk(b"\nb\r\n", 4, sink=sink, state=state, last=True)[2].outcome is Outcome.OK
    assert sink.getvalue() == b"a\r\nb\r\n"


def test_cr_at_chunk_end_then_no_lf_is_bare():
    """A CR ending one chunk that the next chunk does not follow with LF is a bare CR."""
    state = BdatState()
    chunk(b"a\r", 2, state=state)
    assert chunk(b"b\r\n", 3, state=state, last=True)[2].outcome is Outcome.BARE_NEWLINE


def test_chunk_normalize_mode():
    """In normalize mode a bare LF in a chunk is stored as CRLF and a bare CR as is."""
    state = BdatState(last_cr=True)
    stored, _, reader = chunk(b"\na\nb\rc\r\n", 9, bare_newline="normalize", state=state)
    assert (stored, reader.outcome) == (b"\na\r\nb\rc\r\n", Outcome.OK)


# -- dot_stuff and properties ----------------------------------------------------------------


def test_dot_stuff():
    """dot_stuff doubles leading dots, normalises bare CR/LF, adds the final CRLF and "."."""
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b".a\nb\r.\r\nc") == b"..a\r\nb\r\n..\r\nc\r\n.\r\n"


line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
clean_content = st.lists(st.sampled_from([b".", b"..", b""]) | line_text, max_size=12).map(
    lambda lines: b"".join(line + b"\r\n" for line in lines)
)
any_content = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"\x00", b"\xff", b"x", b"\r\n.\r\n"])
    | line_text,
    max_size=20,
).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=8)


@settings(max_examples=300, deadline=None)
@given(clean_content)
def test_round_trip(content):
    """For content without bare CR/LF, reading dot_stuff(content) gives back the content."""
    stored, leftover, reader = read(dot_stuff(content) + b"QUIT\r\n")
    assert (stored, leftover, reader.outcome, reader.size) == (
        content,
        b"QUIT\r\n",
        Outcome.OK,
        len(content),
    )


@settings(max_examples=500, deadline=None)
@given(any_content, cuts, st.sampled_from(MODES), st.sampled_from([0, 5, 20]))
def test_data_chunking_invariance(content, pieces, mode, max_line):
    """Any split of the input gives the same content, outcome and leftover as one piece."""
    data = content + b"\r\n.\r\nQUIT\r\n"
    whole = read(data, bare_newline=mode, max_line=max_line, max_size=30)
    cut = read(data, pieces, bare_newline=mode, max_line=max_line, max_size=30)
    assert whole[2].outcome is cut[2].outcome
    assert whole[1] == cut[1]
    if whole[2].outcome is not Outcome.BARE_NEWLINE:
        assert (whole[2].size, whole[2].has_8bit) == (cut[2].size, cut[2].has_8bit)
    if whole[2].outcome is Outcome.OK:  # otherwise nothing of the message is delivered
        assert whole[0] == cut[0]


@settings(max_examples=300, deadline=None)
@given(any_content, cuts, cuts, st.sampled_from(MODES), st.booleans())
def test_chunk_invariance(content, pieces, boundaries, mode, binary):
    """Any split into feeds and into BDAT chunks gives the same result as one chunk."""

    def bdat(chunk_cuts: list[int]) -> tuple[bytes, list[Outcome]]:
        state, sink, size, outcomes = BdatState(), io.BytesIO(), 0, []
        chunks = split(content, chunk_cuts)
        for number, part in enumerate(chunks):
            _, leftover, reader = chunk(
                part + b"NEXT",
                len(part),
                pieces,
                sink=sink,
                already=size,
                binary=binary,
                bare_newline=mode,
                state=state,
                last=number == len(chunks) - 1,
            )
            assert leftover == b"NEXT" or reader.outcome is Outcome.BARE_NEWLINE
            size = reader.size
            outcomes.append(reader.outcome)
        return sink.getvalue(), outcomes

    whole, (outcome,) = bdat([])
    stored, outcomes = bdat(boundaries)
    assert (Outcome.BARE_NEWLINE in outcomes) == (outcome is Outcome.BARE_NEWLINE)
    if outcome is Outcome.OK:
        assert stored == whole


def reference(data: bytes, mode: str, max_line: int, max_size: int):
    """A line-at-a-time model of the DATA rules: (content, leftover, outcome)."""
    out, pos, after_crlf, too_long = [], 0, True, False
    while True:
        end = data.index(b"\n", pos)
        real = end > pos and data[end - 1] == 0x0D
        body = data[pos : end - real]
        if mode == "reject" and (not real or b"\r" in body):
            return None, b"", Outcome.BARE_NEWLINE
        if body == b"." and real and after_crlf:
            break
        if body != b"." and body.startswith(b"."):
            body = body[1:]
        out.append(body + b"\r\n")
        too_long = too_long or bool(max_line and len(body) + 2 > max_line)
        after_crlf, pos = real, end + 1
    content = b"".join(out)
    if too_long:
        return content, data[end + 1 :], Outcome.LINE_TOO_LONG
    if max_size and len(content) > max_size:
        return content, data[end + 1 :], Outcome.TOO_BIG
    return content, data[end + 1 :], Outcome.OK


@settings(max_examples=500, deadline=None)
@given(any_content, cuts, st.sampled_from(MODES), st.sampled_from([0, 5, 20]))
def test_data_matches_the_line_model(content, pieces, mode, max_line):
    """The incremental reader agrees with a simple line-at-a-time model of the rules."""
    data = content + b"\r\n.\r\nQUIT\r\n"
    stored, leftover, reader = read(data, pieces, bare_newline=mode, max_line=max_line, max_size=30)
    expected, expected_leftover, outcome = reference(data, mode, max_line, 30)
    assert (reader.outcome, leftover) == (outcome, expected_leftover)
    if outcome is not Outcome.BARE_NEWLINE:
        assert reader.size == len(expected)
    if outcome is Outcome.OK:
        assert stored == expected


def test_chunks_without_state_are_lenient_at_their_edges():
    """Without a shared BdatState a chunk accepts a leading LF and a trailing CR as they are."""
    assert chunk(b"a\r", 2)[2].outcome is Outcome.OK
    assert chunk(b"\nb", 2)[2].outcome is Outcome.OK
    assert chunk(b"a\r", 2, last=True)[2].outcome is Outcome.BARE_NEWLINE


# -- the Message-ID kept for the log ---------------------------------------------------------


def test_message_id_read_from_the_header_section():
    """The reader keeps the (unfolded) Message-ID of the header section for the log."""
    reader = DataReader(io.BytesIO())
    reader.feed(b"Subject: x\r\nMessage-ID:\r\n <a.1@example.org>\r\n\r\nbody\r\n.\r\n")
    assert reader.message_id == "<a.1@example.org>"


def test_message_id_in_the_body_is_not_the_messages():
    """A Message-ID line after the blank line is body text, not a header field."""
    reader = DataReader(io.BytesIO())
    reader.feed(b"Subject: x\r\n\r\nMessage-ID: <fake@example.org>\r\n.\r\n")
    assert reader.message_id is None


def test_message_id_across_bdat_chunks():
    """BDAT chunks of one message share what was read of the header section."""
    state = BdatState()
    text = b"From: a@example.org\r\nMessage-Id: <split@example.org>\r\n\r\nhi\r\n"
    first = ChunkReader(io.BytesIO(), 30, state=state)
    first.feed(text[:30])
    last = ChunkReader(io.BytesIO(), len(text) - 30, already=30, state=state, last=True)
    last.feed(text[30:])
    assert last.message_id == "<split@example.org>"


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
@settings(max_examples=200)
def test_message_id_never_fails(data, step):
    """Whatever the content and however it is split, asking for the Message-ID never raises."""
    reader = DataReader(io.BytesIO())
    content = data.replace(b"\r\n.\r\n", b"") + b"\r\n.\r\n"
    for start in range(0, len(content), step):
        if reader.feed(content[start : start + step]) is not None:
            break
    found = reader.message_id
    assert found is None or isinstance(found, str)


# -- the fast path's searches agree with their definitions -----------------------------------


@settings(max_examples=500, deadline=None)
@given(any_content, st.integers(0, 400), st.integers(0, 400))
def test_clean_check_is_no_bare_newline(content, start, stop):
    """The fast path's check of a range (counts of CR, LF and CRLF) says clean exactly when
    the range holds no CR and no LF outside a CRLF."""
    end = min(max(start, stop), len(content))
    assert data._clean(content, start, end) is not has_bare(content[start:end])


long_line = st.binary(min_size=30, max_size=90).map(
    lambda b: b.replace(b"\r", b"x").replace(b"\n", b"x")
)


@settings(max_examples=300, deadline=None)
@given(
    long_line,
    st.integers(100, 400),
    st.integers(0, 20000),
    st.sampled_from([b"", b"\r", b"\n", b"\r\r\n", b"\n\r", b"\r\n\n", b"\r\n" * 300]),
)
def test_clean_check_of_big_regions(line, repeat, at, dirt):
    """Regions of many lines, long ones (found line by line) or short and empty ones
    (counted), with or without a bare CR/LF anywhere: clean exactly when there is none."""
    for lines in (line + b"\r\n", line[:3] + b"\r\n\r\n"):
        region = lines * repeat
        region = region[:at] + dirt + region[at:]
        assert data._clean(region, 0, len(region)) is not has_bare(region)
        assert data._clean(b"--" + region, 2, len(region) + 2) is not has_bare(region)


def test_long_lines_are_found_line_by_line_and_short_ones_counted():
    """The bare CR/LF check finds line ends one by one in 80-octet lines and counts them in
    2- and 10-octet lines (a message of empty lines costs no more than before)."""
    from mailserver.message.octets import long_lines as sparse

    assert sparse(b"y" * 78 + b"\r\n" * 100) is False
    assert sparse((b"y" * 78 + b"\r\n") * 100) is True
    assert sparse((b"y" * 8 + b"\r\n") * 1000) is False
    assert sparse(b"\r\n" * 10000) is False
    assert sparse(b"--" + (b"y" * 78 + b"\r\n") * 100, 2) is True


long_lines = st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")), max_size=15)


@settings(max_examples=500, deadline=None)
@given(long_lines, st.integers(1, 70))
def test_line_length_walk_is_the_longest_line(lines, max_line):
    """The fast path's line-length check of a run of whole lines says they fit exactly when
    the longest line, its CRLF included, is at most the limit."""
    region = b"".join(line + b"\r\n" for line in lines)
    longest = max((len(line) + 2 for line in lines), default=0)
    assert data._lines_fit(region, max_line) is (longest <= max_line)


@settings(max_examples=500, deadline=None)
@given(any_content, st.integers(0, 400), st.integers(0, data._DOTS_ONE_BY_ONE))
def test_dot_line_search_is_the_first_dot_line(content, pos, hops):
    """The fast path's search for a line starting with "." finds the first <CRLF>. at or
    after the position, as a plain search does, whether or not a dot comes earlier and
    however many dots it may still look at one by one (never more than it had)."""
    found, left = data._dot_line(content, pos, hops)
    assert found == content.find(b"\r\n.", pos)
    assert 0 <= left <= hops


@pytest.mark.parametrize("dots", [0, 1, data._DOTS_ONE_BY_ONE - 1, data._DOTS_ONE_BY_ONE, 40])
def test_dot_line_found_after_many_other_dots(dots):
    """A dot line after any number of dots inside lines (text) is found where it is, and
    none is found when there is none."""
    text = b"a.b\r\n" * dots
    hops = data._DOTS_ONE_BY_ONE
    assert data._dot_line(text + b"x\r\n..y\r\n", 0, hops)[0] == len(text) + 1
    assert data._dot_line(text + b"x\r\n", 0, hops)[0] == -1


def test_text_with_many_dot_lines_is_read_as_the_line_model_says():
    """Text full of dots with a dot-stuffed line every few lines, in 64 KiB feeds: every
    leading dot is removed once and nothing else changes."""
    line = b"Hello. A sentence, e.g. with dots... ok.\r\n"
    content = (line * 3 + b".lead\r\n") * 600
    stored, leftover, reader = read(dot_stuff(content) + b"QUIT\r\n", [65536, 131072])
    assert (stored, leftover, reader.outcome) == (content, b"QUIT\r\n", Outcome.OK)


def test_large_message_with_a_long_line_late_is_refused():
    """A 100 KB message of 80-octet lines with one line over the limit near its end is read
    to the end and refused as LINE_TOO_LONG; the same message without it is stored as sent."""
    lines = [b"%05d" % n + b"x" * 75 for n in range(1250)]
    good = b"".join(line + b"\r\n" for line in lines)
    stored, leftover, reader = read(good + b".\r\nQUIT\r\n", [65536], max_line=1000)
    assert (stored, leftover, reader.outcome) == (good, b"QUIT\r\n", Outcome.OK)
    lines[1200] = b"y" * 999
    bad = b"".join(line + b"\r\n" for line in lines)
    _stored, leftover, reader = read(bad + b".\r\nQUIT\r\n", [65536], max_line=1000)
    assert (leftover, reader.outcome) == (b"QUIT\r\n", Outcome.LINE_TOO_LONG)
