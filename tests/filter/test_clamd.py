"""The clamd client and the ``virus`` check: framing and reply parsing as pure functions
(property-tested), then a real private clamd (tests/peers/clamd.py) over the unix socket and
TCP, and fake servers on 127.0.0.1 that never answer or answer nonsense."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from mailserver.filter.clamd import (
    HEADER,
    MAX_REPLY,
    NOT_SCANNED_TOO_LARGE,
    NOT_SCANNED_UNAVAILABLE,
    SCANNED,
    ClamdAddress,
    ClamdClient,
    ScanError,
    ScanResult,
    ScanTooLarge,
    VirusCheck,
    frame_chunks,
    parse_address,
    parse_reply,
)
from mailserver.interfaces import ICheck, ICheckSession
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer, Verdict
from tests.peers.clamd import MARKER, NAME_PREFIX, ClamdInstance, eicar
from tests.peers.postfix import free_port

PEER = Peer("192.0.2.7", helo="client.test")
ENVELOPE = Envelope(Address("sender", "example.org"), helo="client.test")
RECIPIENTS = (Address("alice", "example.com"),)


def message(text: str = "Hello.\n", attachment: bytes | None = None) -> bytes:
    """A MIME message as an SMTP client sends it (CRLF), with ``attachment`` in base64."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = "sender@example.org"
    mail["To"] = "alice@example.com"
    mail["Subject"] = "test"
    mail.set_content(text)
    if attachment is not None:
        mail.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="file.bin"
        )
    return mail.as_bytes()


def unframe(stream: bytes) -> list[bytes]:
    """The chunks of an INSTREAM body (the end frame excluded); asserts it is well formed."""
    chunks = []
    while True:
        (size,) = struct.unpack(">I", stream[:4])
        stream = stream[4:]
        if size == 0:
            assert stream == b""
            return chunks
        chunks.append(stream[:size])
        assert len(stream) >= size
        stream = stream[size:]


# --- framing and parsing ----------------------------------------------------------------------


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=600))
def test_frames_carry_the_data_in_bounded_chunks_and_end_with_a_zero_length(
    data: bytes, chunk_size: int
) -> None:
    """The frames reassemble to the data; no chunk is empty or over the chunk size."""
    frames = list(frame_chunks(data, chunk_size))
    assert frames[-1] == b"\0\0\0\0"
    chunks = unframe(b"".join(frames))
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    assert len(frames) == len(chunks) + 1


def test_frame_lengths_are_big_endian() -> None:
    """A 258-byte chunk is announced as 00 00 01 02."""
    assert next(frame_chunks(b"x" * 258)) == b"\x00\x00\x01\x02" + b"x" * 258


@pytest.mark.parametrize(
    "raw, result",
    [
        (b"stream: OK\0", ScanResult(False)),
        (b"stream: OK", ScanResult(False)),
        (b"stream: OK\n", ScanResult(False)),
        (b"stream: Eicar-Signature FOUND\0", ScanResult(True, "Eicar-Signature")),
        (
            b"stream: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND\0",
            ScanResult(True, "Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68)"),
        ),
    ],
)
def test_replies_are_parsed(raw: bytes, result: ScanResult) -> None:
    """OK is clean and ``<name> FOUND`` infected, with or without the terminator."""
    assert parse_reply(raw) == result


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"INSTREAM size limit exceeded. ERROR\0", "size limit exceeded"),
        (b"COMMAND READ TIMED OUT ERROR\0", "clamd error: COMMAND READ TIMED OUT"),
        (b"ERROR\0", "unspecified"),
        (b"UNKNOWN COMMAND\0", "malformed"),
        (b"stream: FOUND\0", "malformed"),
        (b"stream:  FOUND\0", "malformed"),
        (b"stream: \0", "malformed"),
        (b"file: OK\0", "malformed"),
        (b"\0", "empty"),
        (b"", "empty"),
        (b"stream: \xffOK\0", "not ASCII"),
        (b"stream: Evil\r\nX: y FOUND\0", "control characters"),
        (b"stream: OK" + b" " * MAX_REPLY, "longer than"),
    ],
)
def test_bad_replies_are_scan_errors(raw: bytes, words: str) -> None:
    """ERROR replies and anything unexpected are ScanErrors saying what was wrong."""
    with pytest.raises(ScanError) as raised:
        parse_reply(raw)
    assert words in raised.value.reason


def test_the_size_limit_is_its_own_error() -> None:
    """clamd's StreamMaxLength refusal is a ScanTooLarge (the check skips, not fails)."""
    with pytest.raises(ScanTooLarge):
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0")


@given(st.binary(max_size=300) | st.text(max_size=120).map(lambda t: ("stream: " + t).encode()))
def test_the_reply_parser_raises_nothing_but_scan_error(raw: bytes) -> None:
    """Whatever clamd (or an impostor) sends, the result is a ScanResult or a ScanError,
    and an infected name is printable ASCII (safe in an SMTP reply)."""
    try:
        result = parse_reply(raw)
    except ScanError as error:
        assert error.reason
    else:
        assert isinstance(result, ScanResult)
        if result.infected:
            assert result.name and result.name.isascii() and result.name.isprintable()


@pytest.mark.parametrize(
    "text, address",
    [
        ("unix:/run/clamav/clamd.ctl", ClamdAddress("unix", path="/run/clamav/clamd.ctl")),
        ("/run/clamav/clamd.ctl", ClamdAddress("unix", path="/run/clamav/clamd.ctl")),
        ("tcp:127.0.0.1:3310", ClamdAddress("tcp", host="127.0.0.1", port=3310)),
        ("tcp:[::1]:3310", ClamdAddress("tcp", host="::1", port=3310)),
        ("tcp:clamd.internal:3310", ClamdAddress("tcp", host="clamd.internal", port=3310)),
    ],
)
def test_addresses_are_parsed_and_shown_back(text: str, address: ClamdAddress) -> None:
    """Both forms parse, and str() gives the canonical form back."""
    assert parse_address(text) == address
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    "text",
    ["", "clamd.sock", "unix:relative.sock", "tcp:127.0.0.1", "tcp::3310", "tcp:h:0",
     "tcp:h:70000", "tcp:[::1:3310", "udp:127.0.0.1:3310", "tcp:h:x"],
)  # fmt: skip
def test_bad_addresses_name_the_accepted_forms(text: str) -> None:
    """A wrong address is a ValueError that says what is expected."""
    with pytest.raises(ValueError, match="unix:/path/to/clamd.sock or tcp:127.0.0.1:3310"):
        parse_address(text)


@given(st.text(max_size=60))
def test_the_address_parser_raises_only_value_error(text: str) -> None:
    """Any string is an address or a ValueError."""
    try:
        address = parse_address(text)
    except ValueError:
        return
    assert address.kind in ("unix", "tcp")


# --- the check's shape ------------------------------------------------------------------------


def test_the_check_provides_the_contract() -> None:
    """VirusCheck is an ICheck named "virus" that allow lists never skip; its sessions
    accept every phase but the message without contacting clamd."""
    check = VirusCheck(reactor, "unix:/nonexistent/clamd.sock")
    assert verifyObject(ICheck, check)
    assert (check.name, check.honours_allow_list) == ("virus", False)
    session = check.session(PEER)
    assert verifyObject(ICheckSession, session)
    assert session.connect() == ACCEPT
    assert session.helo("client.test") == ACCEPT
    assert session.sender(ENVELOPE) == ACCEPT
    assert session.recipient(ENVELOPE, RECIPIENTS[0]) == ACCEPT


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"fail": "maybe"}, "expected 'open' or 'closed'"),
        ({"max_size": -1}, "max_size"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any], words: str) -> None:
    """The constructor names the wrong parameter."""
    with pytest.raises(ValueError, match=words):
        VirusCheck(reactor, "tcp:127.0.0.1:3310", **kwargs)


# --- a real clamd -----------------------------------------------------------------------------


@pytest.fixture(params=["unix", "tcp"])
def address(request: pytest.FixtureRequest, clamd_peer: ClamdInstance) -> str:
    """The private clamd's address, over the unix socket and over TCP."""
    return clamd_peer.unix_address if request.param == "unix" else clamd_peer.tcp_address


async def body(check: VirusCheck, data: bytes) -> Verdict:
    return await check.session(PEER).body(ENVELOPE, RECIPIENTS, data)


@pytest_twisted.ensureDeferred
async def test_ping_and_version(address: str) -> None:
    """PING answers and VERSION names ClamAV."""
    client = ClamdClient(reactor, address, timeout=10)
    assert await client.ping() is None
    assert (await client.version()).startswith("ClamAV ")


@pytest_twisted.ensureDeferred
async def test_eicar_attachment_is_rejected(address: str) -> None:
    """EICAR in a base64 attachment: 554 5.7.1 naming the test signature."""
    verdict = await body(VirusCheck(reactor, address, timeout=10), message(attachment=eicar()))
    assert (verdict.action, verdict.code, verdict.enhanced) == (Action.REJECT, 554, "5.7.1")
    assert (verdict.check, verdict.rule) == ("virus", "VIRUS")
    assert verdict.text.startswith(f"Message rejected: virus found ({NAME_PREFIX}")
    assert NAME_PREFIX in verdict.reason


@pytest_twisted.ensureDeferred
async def test_eicar_in_a_zip_attachment_is_rejected(address: str) -> None:
    """clamd opens archives inside attachments too."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("readme.txt", "nothing to see\n")
        zipped.writestr("eicar.com", eicar())
    verdict = await body(
        VirusCheck(reactor, address, timeout=10), message(attachment=archive.getvalue())
    )
    assert (verdict.action, verdict.code) == (Action.REJECT, 554)
    assert verdict.text.startswith(f"Message rejected: virus found ({NAME_PREFIX}")


@pytest_twisted.ensureDeferred
async def test_marker_in_the_text_is_rejected(address: str) -> None:
    """The body signature's marker in the message text is found by clamd."""
    data = message(f"Please look at {MARKER.decode()} today.\n")
    verdict = await body(VirusCheck(reactor, address, timeout=10), data)
    assert verdict.action is Action.REJECT
    assert f"({NAME_PREFIX}Marker" in verdict.text


@pytest_twisted.ensureDeferred
async def test_clean_message_is_accepted_with_a_header(address: str) -> None:
    """A clean message passes, marked as scanned."""
    verdict = await body(VirusCheck(reactor, address, timeout=10), message(attachment=b"\x00" * 99))
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == ((HEADER, SCANNED),)


@pytest_twisted.ensureDeferred
async def test_many_small_chunks_and_concurrent_scans(clamd_peer: ClamdInstance) -> None:
    """A marker at the end of 300 KB sent in 1000-byte chunks is found, and ten scans at
    once each get their own answer."""
    client = ClamdClient(reactor, clamd_peer.unix_address, timeout=20, chunk_size=1000)
    tail = await client.scan(b"a" * 300_000 + MARKER)
    assert tail.infected and tail.name and tail.name.startswith(NAME_PREFIX)
    data = [message(f"clean {n}\n") if n % 2 else message(attachment=eicar()) for n in range(10)]
    results = await gatherResults([client.scan(one) for one in data])
    assert [result.infected for result in results] == [n % 2 == 0 for n in range(10)]


@pytest_twisted.ensureDeferred
async def test_over_stream_max_length(address: str) -> None:
    """Past clamd's StreamMaxLength (1M here) the client says ScanTooLarge and the check
    delivers unscanned, marked so, under either policy (a 451 could never succeed)."""
    big = message("x" * 1_500_000 + "\n")
    with pytest.raises(ScanTooLarge, match="size limit exceeded"):
        await ClamdClient(reactor, address, timeout=20).scan(big)
    for fail in ("open", "closed"):
        verdict = await body(VirusCheck(reactor, address, timeout=20, fail=fail, max_size=0), big)
        assert verdict.action is Action.ACCEPT
        assert verdict.headers == ((HEADER, NOT_SCANNED_TOO_LARGE),)


@pytest_twisted.ensureDeferred
async def test_over_max_size_is_not_sent(tmp_path: Path) -> None:
    """A message over max_size is delivered unscanned without asking clamd (nobody listens
    here, and fail-closed would otherwise answer 451)."""
    check = VirusCheck(reactor, f"unix:{tmp_path}/none.sock", fail="closed", max_size=1000)
    verdict = await body(check, message("y" * 2000))
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == ((HEADER, NOT_SCANNED_TOO_LARGE),)


# --- no clamd, a silent one, a wrong one ------------------------------------------------------


def assert_fail_policy(open_verdict: Verdict, closed_verdict: Verdict, words: str) -> None:
    """Fail-open delivers marked as unscanned; fail-closed asks the sender to retry."""
    assert open_verdict.action is Action.ACCEPT
    assert open_verdict.headers == ((HEADER, NOT_SCANNED_UNAVAILABLE),)
    assert open_verdict.rule == "VIRUS_UNSCANNED" and words in open_verdict.reason
    assert (closed_verdict.action, closed_verdict.code, closed_verdict.enhanced) == (
        Action.TEMPFAIL,
        451,
        "4.7.1",
    )
    assert closed_verdict.text == "virus scanner unavailable, try again later"
    assert words in closed_verdict.reason


async def both_policies(address: str, data: bytes, timeout: float = 10) -> tuple[Verdict, Verdict]:
    open_check = VirusCheck(reactor, address, timeout=timeout, fail="open")
    closed_check = VirusCheck(reactor, address, timeout=timeout, fail="closed")
    return await body(open_check, data), await body(closed_check, data)


@pytest_twisted.ensureDeferred
async def test_nobody_listening_on_the_unix_socket(tmp_path: Path) -> None:
    """A missing socket is a ScanError naming the address; the policy decides."""
    address = f"unix:{tmp_path}/none.sock"
    with pytest.raises(ScanError, match=f"cannot connect to clamd at {address}"):
        await ClamdClient(reactor, address, timeout=5).ping()
    assert_fail_policy(*await both_policies(address, message()), "cannot connect")


@pytest_twisted.ensureDeferred
async def test_nobody_listening_on_tcp() -> None:
    """A refused TCP connection is a ScanError; the policy decides."""
    address = f"tcp:127.0.0.1:{free_port('127.0.0.1')}"
    with pytest.raises(ScanError, match="connection refused"):
        await ClamdClient(reactor, address, timeout=5).scan(b"data")
    assert_fail_policy(*await both_policies(address, message()), "connection refused")


class FakeClamd(Protocol):
    """A server that answers ``reply`` (None: never) as soon as a client connects, then
    keeps the connection open (or closes it with ``close``). It puts None on ``made`` and
    on ``lost`` as each connection opens and closes."""

    def __init__(
        self, reply: bytes | None, close: bool, made: DeferredQueue[None], lost: DeferredQueue[None]
    ) -> None:
        self.reply, self.close, self.made, self.lost = reply, close, made, lost

    def connectionMade(self) -> None:
        self.made.put(None)
        if self.reply is not None:
            self.transport.write(self.reply)
        if self.close:
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.lost.put(None)


@pytest.fixture
def fake_clamd() -> Iterator[Any]:
    """A factory ``(reply, close=False) -> (address, made, lost)``: a FakeClamd listening on
    127.0.0.1 with its two DeferredQueues. Every listener stops at teardown."""
    ports: list[Any] = []

    def start(reply: bytes | None, close: bool = False) -> Any:
        made: DeferredQueue[None] = DeferredQueue()
        lost: DeferredQueue[None] = DeferredQueue()
        factory = Factory.forProtocol(lambda: FakeClamd(reply, close, made, lost))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return f"tcp:127.0.0.1:{port.getHost().port}", made, lost

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers(fake_clamd: Any) -> None:
    """A silent clamd is a timeout (ScanError) under either policy, and each connection is
    closed by the client when its time is up."""
    address, _, lost = fake_clamd(None)
    with pytest.raises(ScanError, match="no answer from clamd"):
        await ClamdClient(reactor, address, timeout=0.3).scan(message())
    assert_fail_policy(*await both_policies(address, message(), timeout=0.3), "no answer")
    for _ in range(3):  # all three connections were closed
        await lost.get()


@pytest.mark.parametrize(
    "reply, close, words",
    [
        (b"I am not clamd\0", False, "malformed clamd reply"),
        (b"stream: \xfe\xff FOUND\0", False, "not ASCII"),
        (b"x" * (MAX_REPLY + 10), False, f"no NUL in {MAX_REPLY} bytes"),
        (b"stream: O", True, "mid-reply"),
        (b"", True, "without a reply"),
        (b"Can't allocate memory ERROR\0", False, "clamd error: Can't allocate memory"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_server_that_answers_nonsense(
    fake_clamd: Any, reply: bytes, close: bool, words: str
) -> None:
    """Malformed, overlong, truncated, missing and error replies are ScanErrors saying so;
    the check follows its policy."""
    address, _, _ = fake_clamd(reply, close)
    with pytest.raises(ScanError) as raised:
        await ClamdClient(reactor, address, timeout=10).scan(message())
    assert words in raised.value.reason
    assert_fail_policy(*await both_policies(address, message()), words)


@pytest_twisted.ensureDeferred
async def test_ping_to_a_wrong_server(fake_clamd: Any) -> None:
    """PING and VERSION check the answer, not just that there is one."""
    address, _, _ = fake_clamd(b"stream: OK\0")
    client = ClamdClient(reactor, address, timeout=10)
    with pytest.raises(ScanError, match="unexpected answer to PING"):
        await client.ping()
    with pytest.raises(ScanError, match="unexpected answer to VERSION"):
        await client.version()


@pytest_twisted.ensureDeferred
async def test_cancelling_a_scan_closes_the_connection(fake_clamd: Any) -> None:
    """A cancelled scan fails with a ScanError and the connection goes away."""
    address, made, lost = fake_clamd(None)
    scanning = ClamdClient(reactor, address, timeout=30).scan(message())
    await made.get()
    scanning.cancel()
    with pytest.raises(ScanError, match="cancelled"):
        await scanning
    await lost.get()


def test_a_connection_that_never_completes_times_out() -> None:
    """The deadline covers connecting too: a connect that never completes (a memory
    reactor) is a ScanError once the clock passes the timeout, and the attempt is stopped."""
    fake = MemoryReactorClock()
    scanning = ClamdClient(fake, "unix:/run/clamd.sock", timeout=5).scan(b"data")
    fake.advance(4.9)
    assert not scanning.called
    fake.advance(0.2)
    failure = scanning.result
    scanning.addErrback(lambda _: None)
    assert isinstance(failure.value, ScanError)
    assert failure.value.reason == "no answer from clamd at unix:/run/clamd.sock within 5s"
    assert fake.unixClients[0][0] == "/run/clamd.sock"
    assert fake.connectors[0].stoppedConnecting


@pytest_twisted.ensureDeferred
async def test_a_cancelled_body_check_still_follows_the_policy(fake_clamd: Any) -> None:
    """When the pipeline's own per-check timeout cancels the body verdict first, the
    check still answers by its policy (fail-closed stays closed)."""
    address, made, _ = fake_clamd(None)
    check = VirusCheck(reactor, address, timeout=30, fail="closed")
    verdict = check.session(PEER).body(ENVELOPE, RECIPIENTS, message())
    await made.get()
    verdict.cancel()
    refused = await verdict
    assert (refused.action, refused.code, refused.enhanced) == (Action.TEMPFAIL, 451, "4.7.1")
    assert "cancelled" in refused.reason
