"""Every IMAP conformance dialog (rfc-conformance/dialogs/imap/*.dialog) played against the
in-process server, over the maildir + LMDB store, on a real loopback socket.

Before each dialog the accounts hold one known state (:data:`STATE`), the same one
``tests/peers/test_imap_differential.py`` gives a private Dovecot: users alice and bob
@example.org with password "secret"; alice's INBOX holds three messages (the first \\Seen,
the second \\Flagged, the third a two-part MIME message) that no session has seen yet, so
they are \\Recent to the first session that selects INBOX; her folder Work holds one
message. Every account also has the default folders (Archive, Drafts, Junk, Sent, Trash, with
their special-use attributes), and every folder is subscribed.

Dialogs run against a listener that allows LOGIN without TLS and offers STARTTLS, except:
``# tls: implicit`` dialogs (port 993 style: TLS from the first byte) and dialogs whose
name starts with ``logindisabled-`` (port 143 as deployed: LOGIN only after STARTTLS).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserver import config
from mailserver.imap.factory import IMAPPolicy, RecentClaims
from tests.conformance import dialogs, load_runner
from tests.imap.conftest import HOST, PASSWORD, POLICY, USERS, in_thread, make_factory

DIALOGS = dialogs("imap")
runner = load_runner()


@dataclass(frozen=True)
class Stored:
    """One message of the known state: where it is, its flags and its INTERNALDATE."""

    folder: str
    data: bytes
    flags: tuple[str, ...]
    internaldate: float


def _message(subject: str, date: str, body: str, **extra: str) -> bytes:
    head = [
        "From: Carol <carol@example.net>",
        "To: Alice <alice@example.org>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{subject.lower().replace(' ', '.')}@example.net>",
        *[f"{name.replace('_', '-')}: {value}" for name, value in extra.items()],
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


MIXED = (
    "--b1\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "See the attached file.\r\n"
    "--b1\r\n"
    "Content-Type: application/octet-stream; name=data.bin\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAECAwQFBgc=\r\n"
    "--b1--\r\n"
)

#: The state every dialog starts from (also given to Dovecot by the differential test).
STATE = (
    Stored(
        "INBOX",
        _message("Message 1", "Mon, 1 Jan 2024 10:00:00 +0000", "First body.\r\n"),
        ("\\Seen",),
        1704103200.0,
    ),
    Stored(
        "INBOX",
        _message(
            "Meeting notes",
            "Tue, 2 Jan 2024 10:00:00 +0000",
            "Notes of the meeting.\r\nSecond line of the notes.\r\n",
        ),
        ("\\Flagged",),
        1704189600.0,
    ),
    Stored(
        "INBOX",
        _message(
            "Lunch",
            "Wed, 3 Jan 2024 10:00:00 +0000",
            MIXED,
            MIME_Version="1.0",
            Content_Type='multipart/mixed; boundary="b1"',
        ),
        (),
        1704276000.0,
    ),
    Stored(
        "Work",
        _message("Report", "Thu, 4 Jan 2024 10:00:00 +0000", "The report.\r\n"),
        (),
        1704362400.0,
    ),
)
FOLDERS = ("Work",)
ALICE = "alice@example.org"


async def populate(storage: Any, claims: RecentClaims) -> None:
    """Users, folders and messages of :data:`STATE`; the messages are recent to the first
    session that selects their folder (claims start before they arrive)."""
    await storage.directory.add_domain("example.org")
    for user in USERS:
        await storage.directory.add_user(f"{user}@example.org", PASSWORD)
        await storage.store.create_account(f"{user}@example.org")
    account = storage.store.account(ALICE)
    for name in FOLDERS:
        await account.create_folder(name)
    for name in {"INBOX", *FOLDERS}:
        info = account.folder(name).info()
        claims.recent((ALICE, name, info.uidvalidity), [], claim=False)
    for stored in STATE:
        folder = account.folder(stored.folder)
        await folder.append(io.BytesIO(stored.data), stored.flags, stored.internaldate)


@dataclass
class Listeners:
    """Ports of one server: plain (STARTTLS offered, LOGIN allowed), plain with
    LOGINDISABLED until STARTTLS, and implicit TLS."""

    plain: int
    strict: int
    implicit: int

    def port_for(self, dialog: Any) -> int:
        if dialog.tls == "implicit":
            return self.implicit
        if dialog.path.name.startswith("logindisabled-"):
            return self.strict
        return self.plain


@pytest.fixture
def dialog_server(storage, tls_options):
    """Our IMAP server over the maildir store in :data:`STATE`, on three listeners."""
    claims = RecentClaims()
    pytest_twisted.blockon(ensureDeferred(populate(storage, claims)))
    ports = []
    for policy, wrap in (
        (POLICY, False),
        (replace(POLICY, auth_needs_tls=True), False),
        (replace(POLICY, auth_needs_tls=True, implicit_tls=True), True),
    ):
        factory = make_factory(storage.store, storage.directory, policy, tls_options)
        factory.recent = claims  # one server: \Recent is shared by its listeners
        listening = TLSMemoryBIOFactory(tls_options, False, factory) if wrap else factory
        ports.append(reactor.listenTCP(0, listening, interface=HOST))
    yield Listeners(*(port.getHost().port for port in ports))
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


def test_there_are_dialogs():
    """The glob below finds the dialogs (a moved directory must not pass vacuously)."""
    assert len(DIALOGS) >= 40


@pytest.mark.parametrize("path", DIALOGS, ids=[path.name for path in DIALOGS])
@pytest_twisted.ensureDeferred
async def test_dialog(dialog_server, path):
    """The dialog passes against our server."""
    dialog = runner.parse_dialog(path)
    result = await in_thread(runner.play, dialog, HOST, dialog_server.port_for(dialog))
    assert result.passed, result.summary()


def test_policy_timers_meet_rfc_9051_minimums():
    """What a dialog cannot show in seconds: the shipped autologout timer of an authenticated
    or idling session is at least 30 minutes (RFC 9051 §5.4; RFC 2177 §3: clients re-issue
    IDLE every 29 minutes), in the listener policy and the config."""
    assert IMAPPolicy().idle_timeout >= 30 * 60
    assert config.load(None).imap.idle_timeout >= 30 * 60
