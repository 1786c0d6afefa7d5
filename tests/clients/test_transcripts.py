"""Replays of the sessions of mail clients we cannot run here (Thunderbird, Apple Mail / iOS
Mail, Outlook, K-9 Mail), against the real server: one dialog per known quirk under
``tests/clients/transcripts/<client>/``, each written from the client's documented behaviour
and public bug reports (the dialog's description names the source), and played by the
conformance dialog runner (``rfc-conformance/runner.py``, its README has the format).

Layout rules (checked here, so a new file cannot silently drop out of the matrix):

- the directory names the client: :data:`CLIENT_DIRECTORIES`;
- the file name is ``<features>--<quirk>.dialog``; ``<features>`` are matrix features
  (:data:`tests.clients.matrix.FEATURES`) with ``-`` for a space, joined by ``+``;
- SMTP dialogs talk to the submission port (``# tls: implicit``: its implicit-TLS port),
  IMAP and POP3 dialogs to the STARTTLS port (``# tls: implicit``: the implicit-TLS one).

Before each dialog alice's INBOX holds :data:`SUBJECTS`, delivered over SMTP in that order
(UIDs 1 to 3), and the server has never had a session, so those messages are \\Recent to
the first SELECT.
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest

from tests.clients.helpers import BOB, stored
from tests.clients.matrix import FEATURES, MARKER
from tests.conformance import load_runner
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

runner = load_runner()
TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
#: Transcript directory -> client name in the matrix.
CLIENT_DIRECTORIES = {
    "thunderbird": "Thunderbird",
    "apple-mail": "Apple Mail/iOS",
    "outlook": "Outlook",
    "k9": "K-9",
}
SUBJECTS = ("Message 1", "Message 2", "Message 3")
#: (protocol, implicit TLS) -> listener key of the server.
PORTS = {
    ("smtp", False): "submission.listen",
    ("smtp", True): "submission.tls_listen",
    ("imap", False): "imap.listen",
    ("imap", True): "imap.tls_listen",
    ("pop3", False): "pop3.listen",
    ("pop3", True): "pop3.tls_listen",
}


def features_of(path: Path) -> tuple[str, ...]:
    """The matrix features a transcript's file name declares."""
    prefix, separator, _ = path.stem.partition("--")
    assert separator, f"{path.name}: name it <features>--<quirk>.dialog"
    return tuple(part.replace("-", " ") for part in prefix.split("+"))


def transcripts() -> list[Any]:
    params = []
    for path in sorted(TRANSCRIPTS.glob("*/*.dialog")):
        client = CLIENT_DIRECTORIES.get(path.parent.name, path.parent.name)
        mark = getattr(pytest.mark, MARKER)(client, *features_of(path))
        params.append(pytest.param(path, marks=mark, id=f"{path.parent.name}/{path.name}"))
    return params


def deliver(server: ServerProcess, subject: str, to: str = "alice@example.org") -> None:
    """One small message from carol@example.net to ``to`` over port 25."""
    message = (f"From: Carol <carol@example.net>\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n"
               f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nBody of {subject}.\r\n")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=15) as client:
        refused = client.sendmail("carol@example.net", [to], message.encode())
        assert not refused, refused


def test_transcripts_are_laid_out_for_the_matrix():
    """Every transcript sits in a known client's directory and names known features (and
    there are some: a moved directory must not pass vacuously)."""
    paths = sorted(TRANSCRIPTS.glob("*/*.dialog"))
    assert {path.parent.name for path in paths} == set(CLIENT_DIRECTORIES)
    for path in paths:
        assert set(features_of(path)) <= set(FEATURES), path.name
        dialog = runner.parse_dialog(path)
        assert dialog.metadata.get("description"), f"{path.name}: say what it replays"
        assert (dialog.protocol, dialog.tls == "implicit") in PORTS, path.name


@pytest.mark.parametrize("path", transcripts())
def test_transcript(mail_server, path):
    """The client's session, replayed against the real server, gets the answers the client
    needs (each dialog's description says which quirk it pins down)."""
    for subject in SUBJECTS:
        deliver(mail_server, subject)
    dialog = runner.parse_dialog(path)
    port = mail_server.ports[PORTS[dialog.protocol, dialog.tls == "implicit"]]
    result = runner.play(dialog, "127.0.0.1", port, timeout=10.0)
    assert result.passed, f"{result.summary()}\n{mail_server.output()[-4000:]}"
    if "send" in features_of(path):  # the 250 was no promise only: bob has the message
        assert stored(mail_server, BOB), f"bob's INBOX is empty\n{mail_server.output()[-4000:]}"
