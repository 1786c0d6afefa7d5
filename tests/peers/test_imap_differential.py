"""Differential test: the IMAP conformance dialogs against our server and a real Dovecot.

Both servers get the same accounts and mailbox state (:data:`tests.imap.test_dialogs.STATE`:
alice's INBOX with three unseen-by-any-session messages, her folder Work, the default
special-use folders, everything subscribed, hierarchy delimiter "/"). Every
``rfc-conformance/dialogs/imap/*.dialog`` whose ``# peers:`` header allows Dovecot is played
against each server with the runner recording every line the server sent. A dialog Dovecot
fails is a difference; for dialogs both pass, the two transcripts are normalised (see
:func:`normalise`) and compared response by response. The test fails listing every
difference that remains.

Allowed variations (the RFCs leave them to the server), taken out by :func:`normalise_line`:

- the human-readable text after a status and its response code (RFC 9051 §7.1);
- ``CAPABILITY`` lists, untagged or as a response code (each server has its extensions);
- values that identify the server or the mailbox instance: UIDVALIDITY (and the UIDVALIDITY
  in APPENDUID/COPYUID), INTERNALDATE and SAVEDATE values, the ``ID`` response, MAILBOXID/
  EMAILID/THREADID, MODSEQ numbers (in FETCH and SEARCH);
- informational untagged ``OK`` responses that only one server sends (HIGHESTMODSEQ,
  MAILBOXID, NOMODSEQ, URLMECH), advisory RFC 5530 codes on a tagged NO/BAD (ALERT, CANNOT,
  HASCHILDREN, ...: the codes a dialog depends on, such as TRYCREATE, are kept), an ENABLED
  response listing nothing, a RECENT update after an expunge;
- the order of untagged responses between two tagged ones, of the items in one FETCH or
  STATUS response (literals are folded into their line first), of flags and mailbox
  attributes, and of the numbers in SEARCH;
- \\HasChildren/\\HasNoChildren on an extended LIST that did not ask for CHILDREN (RFC 5258
  §4), LSUB attributes other than \\Noselect, the spelling of INBOX, the case of
  BODYSTRUCTURE strings, ``"CHILDINFO"`` quoted or not.

What remains is a difference. The ones we know and keep are in :data:`KNOWN` with their
reason (those dialogs xfail, and fail once they agree, so the list stays true).

Dovecot is started once per module; before each dialog the user's home is replaced with a
fresh copy of the state (after the previous dialog's ``imap`` processes have exited).
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.imap.conftest import HOST, PASSWORD, USERS, in_thread
from tests.imap.test_dialogs import ALICE, DIALOGS, FOLDERS, STATE, dialog_server, runner
from tests.peers.dovecot import DovecotInstance, DovecotUnavailable, unavailable_reason

__all__ = ["dialog_server"]  # the fixture, re-used from tests/imap/test_dialogs.py

REASON = unavailable_reason()

SPECIAL = {"Archive": "\\Archive", "Drafts": "\\Drafts", "Junk": "\\Junk", "Sent": "\\Sent",
           "Trash": "\\Trash"}  # fmt: skip


class DialogDovecot(DovecotInstance):
    """A private Dovecot shaped like our accounts: one namespace, delimiter "/", INBOX and
    the default special-use folders created and subscribed at login."""

    def config_text(self) -> str:
        mailboxes = [
            "  mailbox INBOX {",
            "    auto = subscribe",
            "  }",
        ]
        for name, use in SPECIAL.items():
            mailboxes += [
                f"  mailbox {name} {{",
                "    auto = subscribe",
                f"    special_use = {use}",
                "  }",
            ]
        namespace = [
            "namespace inbox {",
            "  inbox = yes",
            "  separator = /",
            "  prefix =",
            *mailboxes,
            "}",
        ]
        return super().config_text() + "\n".join(namespace) + "\n"

    def reset(self) -> None:
        """Replace every user's home with :data:`STATE` (alice) or an empty maildir."""
        self.wait_sessions_ended()
        for user in self.users:
            home = self.home_dir / user
            if home.exists():
                gone = home.with_name(f"{user}.old{time.monotonic_ns()}")
                home.rename(gone)
                shutil.rmtree(gone, ignore_errors=True)
            self.maildir(user)
        maildir = self.maildir(ALICE)
        for name in FOLDERS:
            self.folder_dir(maildir, name)
        (maildir / "subscriptions").write_text("".join(f"{name}\n" for name in FOLDERS))
        os.chown(maildir / "subscriptions", self.uid, self.gid)
        for stored in STATE:
            path = self.add_message(ALICE, stored.data, stored.flags, stored.internaldate)
            if stored.folder != "INBOX":
                folder = self.folder_dir(maildir, stored.folder)
                path.rename(folder / path.parent.name / path.name)
        if self.master_pid() is not None:
            self.sync_folders()

    def sync_folders(self) -> None:
        """Let Dovecot assign UIDs in every folder now (STATUS does, without claiming
        \\Recent), as our store did on delivery: Dovecot's maildir otherwise numbers a folder's
        files only when a session first looks, after messages copied in meanwhile."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            client.login(ALICE, PASSWORD)
            for name in ("INBOX", *FOLDERS):
                client.status(name, "(UIDNEXT)")
        finally:
            client.logout()

    def folder_dir(self, maildir: Path, name: str) -> Path:
        """The Maildir++ directory of folder ``name`` (``.name``), made if missing."""
        path = maildir / f".{name}"
        for directory in (path, path / "cur", path / "new", path / "tmp"):
            if not directory.exists():
                directory.mkdir(mode=0o700)
                os.chown(directory, self.uid, self.gid)
        marker = path / "maildirfolder"
        marker.touch()
        os.chown(marker, self.uid, self.gid)
        return path

    def wait_sessions_ended(self, timeout: float = 10.0) -> None:
        """Wait until no ``imap`` process of this instance is left (a dialog's session
        writes its indexes after the client has gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = []
            for pid in self.processes():
                try:
                    names.append(Path(f"/proc/{pid}/comm").read_text().strip())
                except OSError:
                    continue
            if "imap" not in names:
                return
            time.sleep(0.02)


# --- normalising transcripts -------------------------------------------------------------------

_STATUS = re.compile(r"(\*|[^ *+]\S*) (OK|NO|BAD|BYE|PREAUTH)(?: \[([^\]]*)\])?.*")
#: Untagged OK codes only one of the servers sends, and codes that only add information.
_EXTRA_CODES = ("HIGHESTMODSEQ", "MAILBOXID", "NOMODSEQ", "URLMECH")
_CHILDREN = re.compile(r" ?\\Has(No)?Children")


def _code(code: str) -> str | None:
    """A response code with its server-specific values blanked (None: drop it)."""
    name, _, value = code.partition(" ")
    name = name.upper()
    if name in _EXTRA_CODES:
        return None
    if name == "CAPABILITY":
        return ""  # keep the response, without the list
    if name == "UIDVALIDITY":
        return name
    if name in ("APPENDUID", "COPYUID"):
        return f"{name} _ {value.partition(' ')[2]}"
    if name == "PERMANENTFLAGS":
        return f"{name} {_sorted_list(value)}"
    return code


def _sorted_list(text: str) -> str:
    """``(b a)`` as ``(a b)``: the order of flags and attributes carries no meaning."""
    return "(" + " ".join(sorted(text.strip("()").split(), key=str.lower)) + ")"


def _tokens(text: str) -> list[str]:
    """Top-level tokens of ``text``: atoms (with their [...] section), quoted strings,
    parenthesised lists."""
    tokens, depth, current, quoted, bracket = [], 0, "", False, 0
    for index, char in enumerate(text):
        if quoted:
            current += char
            if char == '"' and text[index - 1] != "\\":
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "([" and not (char == "(" and bracket):
            depth += char == "("
            bracket += char == "["
        elif char in ")]" and not (char == ")" and bracket):
            depth -= char == ")"
            bracket -= char == "]"
        if char == " " and depth == 0 and bracket == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    return [token for token in tokens if token]


def _fetch_items(items: str) -> str:
    """The items of one FETCH response, sorted by name, server-specific values blanked."""
    tokens = _tokens(items)
    pairs = []
    for name, value in zip(tokens[::2], tokens[1::2], strict=False):
        upper = name.upper()
        if upper in ("INTERNALDATE", "SAVEDATE"):
            value = "_"
        elif upper in ("MODSEQ", "EMAILID", "THREADID"):
            continue
        elif upper == "FLAGS":
            value = _sorted_list(value)
        elif upper == "BODYSTRUCTURE" or upper == "BODY":
            value = value.upper()  # RFC 2045 types, subtypes and parameter names ignore case
        pairs.append(f"{upper} {value}")
    return "(" + " ".join(sorted(pairs)) + ")"


def normalise_line(line: str, command: str) -> str | None:
    """One server line with the allowed variations taken out (None: the line is dropped).
    ``command`` is the client's command the line answers ("" when not known)."""
    verb = command.split(" ", 2)[1].upper() if command.count(" ") else ""
    if line.startswith("+"):
        return "+"
    match = _STATUS.fullmatch(line)
    if match:
        tag, status, code = match.groups()
        if code is not None:
            code = _code(code)
            if code and status in ("NO", "BAD", "OK") and tag != "*":
                # RFC 5530 codes on a refusal are advisory (SHOULD); the ones a dialog
                # depends on are checked by the dialog itself, for both servers.
                if code.split(" ")[0].upper() in (
                    "ALERT",
                    "CANNOT",
                    "CLIENTBUG",
                    "NONEXISTENT",
                    "ALREADYEXISTS",
                    "HASCHILDREN",
                    "INUSE",
                    "SERVERBUG",
                    "PARSE",
                ):
                    code = None
            if code is None and tag == "*" and status == "OK":
                return None
        return f"{tag} {status}" + (f" [{code}]" if code else "")
    words = line.split(" ", 3)
    kind = words[1].upper() if len(words) > 1 else ""
    if kind == "CAPABILITY":
        return None  # untagged or as a response code, either is allowed; contents vary
    if kind == "ID":
        return "* ID _"
    if kind == "FLAGS":
        return "* FLAGS " + _sorted_list(line[len("* FLAGS ") :])
    if kind == "ENABLED" and len(words) == 2:
        return None  # RFC 5161: an ENABLED listing nothing may be left out
    if (
        len(words) > 2
        and words[2].upper() == "RECENT"
        and verb in ("EXPUNGE", "UID", "CLOSE", "MOVE")
    ):
        return None  # a RECENT update after an expunge repeats what EXPUNGE said
    if kind == "SEARCH":
        # the order of the numbers carries no meaning; MODSEQ values are each server's count
        numbers = re.sub(r"\(MODSEQ \d+\)", "", line[len("* SEARCH") :]).split()
        return "* SEARCH " + " ".join(sorted(numbers, key=lambda n: int(n) if n.isdigit() else 0))
    if kind == "STATUS":
        name, _, items = line[len("* STATUS ") :].rpartition(" (")
        name = "INBOX" if name.upper() == "INBOX" else name
        tokens = _tokens(items.rstrip(")"))
        pairs = sorted(
            f"{key.upper()} {'_' if key.upper() == 'UIDVALIDITY' else value}"
            for key, value in zip(tokens[::2], tokens[1::2], strict=False)
        )
        return f"* STATUS {name} (" + " ".join(pairs) + ")"
    if kind in ("LIST", "LSUB"):
        tokens = _tokens(line[len(f"* {kind} ") :])
        attributes = tokens[0]
        extended = command.upper().split(" ")[2:3] != [] and command.split(" ")[2].startswith("(")
        if "RETURN" in command.upper() or extended:
            if "CHILDREN" not in command.upper():
                attributes = _CHILDREN.sub("", attributes)  # RFC 5258 §4: MAY be sent
        if kind == "LSUB":  # RFC 3501 §6.3.9: only \Noselect has a meaning in LSUB
            attributes = "(\\Noselect)" if "\\Noselect" in attributes else "()"
        name = "INBOX" if len(tokens) > 2 and tokens[2].upper() == "INBOX" else tokens[2]
        rest = " ".join(tokens[3:]).replace('"CHILDINFO"', "CHILDINFO")
        return " ".join(
            filter(None, (f"* {kind}", _sorted_list(attributes), tokens[1], name, rest))
        )
    if len(words) > 2 and words[2].upper() == "FETCH":
        items = line.split(" FETCH ", 1)[1]
        return f"* {words[1]} FETCH " + _fetch_items(items[1:-1])
    return line


def _quoted(data: bytes) -> str:
    """Literal octets as one quoted-string token (so items around it can be compared)."""
    text = data.decode("utf-8", "backslashreplace").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "\\r").replace("\n", "\\n") + '"'


def response_lines(transcript: list[bytes]) -> list[str]:
    """The server's lines with every literal folded into its line as a quoted string."""
    blob = b"".join(transcript)
    lines, position = [], 0
    while position < len(blob):
        end = blob.find(b"\r\n", position)
        end = len(blob) if end < 0 else end
        line, position = blob[position:end], end + 2
        while (found := re.search(rb"~?\{(\d+)\+?\}$", line)) and position <= len(blob):
            size = int(found.group(1))
            literal, position = blob[position : position + size], position + size
            end = blob.find(b"\r\n", position)
            end = len(blob) if end < 0 else end
            rest, position = blob[position:end], end + 2
            line = line[: found.start()] + _quoted(literal).encode() + rest
        lines.append(line.decode("utf-8", "backslashreplace"))
    return lines


def normalise(transcript: list[bytes], dialog: Any) -> list[list[str]]:
    """The transcript as responses (everything up to and including one tagged line, or the
    greeting), each normalised line by line, the untagged lines of one response sorted."""
    commands = {}
    for step in dialog.steps:
        if step.kind in (runner.SEND, runner.SEND_RAW):
            text = (
                step.data.decode("utf-8", "replace") if step.kind == runner.SEND_RAW else step.text
            )
            for part in text.split("\r\n"):
                commands.setdefault(part.split(" ", 1)[0], part)
    responses: list[list[str]] = []
    current: list[str] = []
    for line in response_lines(transcript):
        match = _STATUS.fullmatch(line)
        tag = match.group(1) if match else None
        current.append(line)
        if (tag and tag != "*") or not responses and not current[:-1] and line.startswith("* "):
            command = commands.get(tag or "", "")
            lines = [normalise_line(entry, command) for entry in current]
            kept = [entry for entry in lines if entry is not None]
            responses.append(sorted(kept[:-1]) + kept[-1:])
            current = []
    if current:
        responses.append(current)
    return responses


# --- the test ----------------------------------------------------------------------------------

#: Differences we know about, by dialog, with why they are left as they are. A listed dialog
#: that stops differing fails (so the list is kept honest).
KNOWN: dict[str, str] = {
    "authenticate-bad-base64.dialog": "a SASL response that is not base64: both refuse the "
    "AUTHENTICATE, we with BAD, Dovecot with NO",
    "delete-parent.dialog": "DELETE of a mailbox with inferiors: we refuse (NO [HASCHILDREN]), "
    "Dovecot deletes it and keeps the name \\Noselect (RFC 9051 §6.3.5 permits that, RFC 5530 "
    "HASCHILDREN is the code for a server that does not)",
    "enable.dialog": "ENABLE of an extension already enabled: Dovecot lists it again",
    "expunge-readonly.dialog": "EXPUNGE after EXAMINE: neither expunges anything, we answer "
    "NO [READ-ONLY], Dovecot OK",
    "fetch-binary-bad.dialog": "Dovecot sends the UID of the message before NO [UNKNOWN-CTE]",
    "sasl-ir-empty.dialog": "a PLAIN message that is not authzid NUL authcid NUL password: "
    "we answer BAD (as for any malformed SASL response), Dovecot NO [AUTHENTICATIONFAILED]",
    "search-not-list.dialog": "Dovecot 2.3 answers NOT (SEEN FLAGGED) as if it were NOT SEEN "
    "(2 3 instead of 1 2 3); RFC 9051 §6.4.4: a parenthesised list is an AND, NOT negates it",
    "fetch-bodystructure.dialog": "body lines of a part whose last line has no CRLF: "
    "we count it (1), Dovecot counts line ends (0)",
}

PLAYED = [path for path in DIALOGS if runner.parse_dialog(path).plays_against("dovecot")]


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialogDovecot]:
    """One private Dovecot for the module; :meth:`DialogDovecot.reset` before each dialog."""
    if REASON is not None:
        pytest.skip(REASON)
    users = {f"{user}@example.org": PASSWORD for user in USERS}
    try:
        instance = DialogDovecot(tmp_path_factory.mktemp("dovecot"), users=users, tls=True)
        instance.start()
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


def _differences(ours: list[list[str]], theirs: list[list[str]]) -> list[str]:
    found = []
    for number, (mine, other) in enumerate(zip(ours, theirs, strict=False), start=1):
        if mine != other:
            found.append(f"response {number}: ours {mine!r} / dovecot {other!r}")
    if len(ours) != len(theirs):
        found.append(f"ours sent {len(ours)} responses, dovecot {len(theirs)}")
    return found


def test_every_known_difference_names_a_played_dialog():
    assert set(KNOWN) <= {path.name for path in PLAYED}


@pytest.mark.parametrize("path", PLAYED, ids=[path.name for path in PLAYED])
@pytest_twisted.ensureDeferred
async def test_same_dialog_same_answers(dialog_server, dovecot, path):
    """The dialog passes against both servers and, once the allowed variations are taken
    out, both answered the same."""
    dialog = runner.parse_dialog(path)
    await in_thread(dovecot.reset)
    theirs: list[bytes] = []
    port = dovecot.imaps_port if dialog.tls == "implicit" else dovecot.imap_port
    result = await in_thread(runner.play, dialog, dovecot.host, port, 5.0, None, theirs)
    ours: list[bytes] = []
    mine = await in_thread(
        runner.play, dialog, HOST, dialog_server.port_for(dialog), 5.0, None, ours
    )
    assert mine.passed, mine.summary()
    differences = [] if result.passed else [f"dovecot fails the dialog: {result.summary()}"]
    if result.passed:
        differences = _differences(normalise(ours, dialog), normalise(theirs, dialog))
    if path.name in KNOWN:
        assert differences, f"{path.name} no longer differs: remove it from KNOWN"
        pytest.xfail(f"{KNOWN[path.name]}: " + "; ".join(differences))
    assert not differences, "\n".join(differences)


# --- the normaliser itself (no Dovecot needed) -------------------------------------------------

SAMPLE = runner.parse_dialog_text(
    "# protocol: imap\n"
    "c: a1 LOGIN alice@example.org secret\nc: a2 SELECT INBOX\n"
    'c: a3 FETCH 1 (FLAGS INTERNALDATE BODY[TEXT])\nc: a4 LIST (SUBSCRIBED) "" *\n'
    "c: a5 STATUS Work (MESSAGES UIDNEXT)\nc: a6 SEARCH ALL\nc: a7 APPEND Work {3}\n",
    "sample.dialog",
)


def _transcript(text: str) -> list[bytes]:
    return [line.encode() + b"\r\n" for line in text.split("\n")]


OURS = _transcript(
    "* OK [CAPABILITY IMAP4rev1 IMAP4rev2 AUTH=PLAIN] imap.test IMAP4rev2 server ready\n"
    "a1 OK [CAPABILITY IMAP4rev1 IMAP4rev2] Logged in\n"
    "* FLAGS (\\Answered \\Seen)\n* 3 EXISTS\n* OK [UIDVALIDITY 17] UIDs valid\n"
    "* OK [HIGHESTMODSEQ 4] Highest\n* OK [MAILBOXID (F1)] Mailbox id\n"
    "a2 OK [READ-WRITE] SELECT completed\n"
    "* 1 FETCH (BODY[TEXT] {4}\nab\n FLAGS (\\Seen \\Recent)"
    ' INTERNALDATE " 1-Jan-2024 10:00:00 +0000")\n'
    "a3 OK FETCH completed\n"
    '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\na4 OK LIST completed\n'
    "* STATUS Work (MESSAGES 1 UIDNEXT 2)\na5 OK STATUS completed\n"
    "* SEARCH 1 2 3\na6 OK SEARCH completed\n"
    "+ Ready\na7 OK [APPENDUID 17 2] APPEND completed"
)
THEIRS_TEXT = (
    "* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.\n"
    "* CAPABILITY IMAP4rev1 SORT\na1 OK Logged in\n"
    "* 3 EXISTS\n* OK [UIDVALIDITY 99] UIDs valid\n* FLAGS (\\Seen \\Answered)\n"
    "a2 OK [READ-WRITE] Select completed (0.001 secs).\n"
    '* 1 FETCH (FLAGS (\\Recent \\Seen) INTERNALDATE "01-Jan-2024 10:00:00 +0000"'
    " BODY[TEXT] {4}\nab\n)\n"
    "a3 OK Fetch completed.\n"
    '* LIST (\\Subscribed) "/" INBOX\na4 OK List completed.\n'
    "* STATUS Work (UIDNEXT 2 MESSAGES 1)\na5 OK Status completed.\n"
    "* SEARCH 3 2 1\na6 OK Search completed.\n"
    "+ OK\na7 OK [APPENDUID 99 2] Append completed."
)
THEIRS = _transcript(THEIRS_TEXT)


def test_allowed_variations_are_normalised_away():
    """Texts, CAPABILITY lists (untagged or code), UIDVALIDITY, informational untagged OKs,
    untagged order, FETCH item order around a literal, flag order, INTERNALDATE, unrequested
    CHILDREN attributes, STATUS item order and SEARCH number order make no difference."""
    assert normalise(OURS, SAMPLE) == normalise(THEIRS, SAMPLE)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("a2 OK [READ-WRITE]", "a2 OK [READ-ONLY]"),
        ("* 3 EXISTS", "* 4 EXISTS"),
        ("FLAGS (\\Recent \\Seen)", "FLAGS (\\Recent)"),
        ("\nab\n)", "\nAB\n)"),
        ("* SEARCH 3 2 1", "* SEARCH 3 2"),
        ("[APPENDUID 99 2]", "[APPENDUID 99 3]"),
        ("a5 OK Status", "a5 NO Status"),
        ("* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.", "* PREAUTH Dovecot ready."),
    ],
)
def test_real_differences_remain(old, new):
    """A different status, response code, count, flag, body octet, search result or UID is
    still a difference after normalising."""
    assert old in THEIRS_TEXT
    changed = _transcript(THEIRS_TEXT.replace(old, new))
    assert normalise(changed, SAMPLE) != normalise(OURS, SAMPLE)
