"""A damaged index on the real server (``twistd mailserver``) is reported clearly, and
``mailserver reindex`` brings every message back with its flags (the maildir files are the
truth: flags are mirrored in their names, mailserver/store/reindex.py).

- Index entries lost (written here straight into LMDB while the server is stopped): the
  server starts, and its start-up check (mailserver/store/consistency.py) logs which folder
  is out of step and the command to run; ``mailserver reindex ADDRESS`` restores the
  messages, their flags and the folder's counters.
- The index file damaged so LMDB cannot open it: start-up ends with one line on stderr and
  exit status 2, no traceback. Moved aside, the server starts on a new index and logs that
  the mailbox on disk is unknown; after re-adding the domain and user (they live in the
  index too: a backup restores them) ``mailserver reindex --adopt`` rebuilds every folder
  and message with its flags.
"""

from __future__ import annotations

import imaplib
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from mailserver.db.schema import SUBDBS, folder_key, msg_key, name_key
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
MAILSERVER = str(Path(sys.executable).parent / "mailserver")
#: The flags each message is given over IMAP (system flags: mirrored in the file names).
FLAGS = {
    "one": {"\\Seen"},
    "two": {"\\Flagged", "\\Answered"},
    "three": {"\\Seen", "\\Draft"},
    "four": set(),
}
FETCHED = re.compile(rb"FLAGS \(([^)]*)\)")


def cli(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``mailserver ARGS --config <the server's>``; fails the test on a non-zero exit."""
    done = subprocess.run(
        [MAILSERVER, *args, "--config", str(server.config_path)],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=server.directory,
    )
    assert done.returncode == 0, f"mailserver {' '.join(args)}:\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def imap(server: ServerProcess) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", server.ports["imap.tls_listen"], ssl_context=insecure_context(), timeout=10
    )
    client.login(ALICE, PASSWORD)
    return client


def folder_flags(client: imaplib.IMAP4_SSL, folder: str) -> dict[str, set[str]]:
    """Subject -> flags of every message in ``folder``."""
    typ, data = client.select(folder)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return {}
    typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    found = {}
    for part in data:
        if isinstance(part, tuple):
            flags = FETCHED.search(part[0])
            assert flags is not None, part[0]
            subject = part[1].decode().split(":", 1)[1].strip()
            found[subject] = set(flags.group(1).decode().split()) - {"\\Recent"}
    return found


def fill(server: ServerProcess) -> None:
    """Four messages for alice with the FLAGS, and a copy of "four" in Archive."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as smtp:
        for subject in FLAGS:
            smtp.sendmail(
                "carol@example.net", [ALICE],
                f"From: carol@example.net\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode(),
            )
    client = imap(server)
    client.create("Archive")
    client.select("INBOX")
    for number, flags in enumerate(FLAGS.values(), 1):
        if flags:
            assert client.store(str(number), "+FLAGS", f"({' '.join(flags)})")[0] == "OK"
    assert client.copy("4", "Archive")[0] == "OK"
    assert folder_flags(client, "INBOX") == FLAGS
    client.logout()


def wait_for_log(server: ServerProcess, text: str, count: int = 1) -> str:
    deadline = time.monotonic() + 15
    while server.stdout().count(text) < count:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    return [line for line in server.stdout().splitlines() if text in line][-1]


def lose_entries(data_dir: Path, uids: list[int]) -> None:
    """Delete the index entries of INBOX messages ``uids`` (flags, record, name) directly
    in LMDB, leaving the files and the folder's counters as they were."""
    env = lmdb.open(str(data_dir / "index"), max_dbs=len(SUBDBS) + 4, map_size=1 << 30)
    dbs = {name: env.open_db(name) for name in (b"folders", b"flags", b"messages", b"names")}
    with env.begin(write=True) as txn:
        fid = int.from_bytes(txn.get(folder_key(ALICE, "INBOX"), db=dbs[b"folders"]), "big")
        for uid in uids:
            record = txn.get(msg_key(fid, uid), db=dbs[b"messages"])
            base = re.search(rb'"base":\s*"([^"]+)"', record).group(1).decode()
            txn.delete(msg_key(fid, uid), db=dbs[b"flags"])
            txn.delete(msg_key(fid, uid), db=dbs[b"messages"])
            txn.delete(name_key(fid, base), db=dbs[b"names"])
    env.close()


@pytest.fixture
def filled(server_process):
    """A stopped server whose alice has the four flagged messages and the Archive copy."""
    server = server_process(
        {"store": {"fsync": True}},
        listen_keys=("http.listen", "smtp.listen", "imap.tls_listen"),
    )
    pytest_twisted.blockon(ensureDeferred(provision(server.data_dir, "example.org")))
    server.start()
    fill(server)
    assert server.stop() == 0, server.output()
    return server


@pytest_twisted.ensureDeferred
async def test_lost_entries_are_reported_and_reindex_restores_them(filled):
    """Two INBOX entries lost: the start-up check names the folder and the command, and
    the folder's header index, which still holds the lost messages' entries (orphans); after
    ``mailserver reindex alice@example.org`` every message and flag is back and the check
    is quiet."""
    server = filled
    lose_entries(server.data_dir, [2, 3])
    await deferToThread(server.start)
    line = await deferToThread(wait_for_log, server, "index out of step with the maildir files")
    assert "alice@example.org INBOX: 4 message file(s), 2 index entries, EXISTS 4" in line
    assert f"mailserver reindex {ALICE}" in line
    line = await deferToThread(wait_for_log, server, "index out of step with its messages")
    assert "alice@example.org INBOX: header index has " in line
    assert "10 header_text entries of expunged messages" in line
    assert f"mailserver reindex {ALICE}" in line
    assert server.get("/healthz")[0] == 200
    assert server.stop() == 0, server.output()

    done = await deferToThread(cli, server, "reindex", ALICE)
    assert f"{ALICE}: " in done.stdout and "messages +2 -0" in done.stdout, done.stdout

    await deferToThread(server.start)
    await deferToThread(wait_for_log, server, "store recovered", 2)

    def check() -> None:
        client = imap(server)
        assert folder_flags(client, "INBOX") == FLAGS
        assert folder_flags(client, "Archive") == {"four": set()}
        typ, data = client.status("INBOX", "(MESSAGES UNSEEN)")
        assert typ == "OK" and b"MESSAGES 4 UNSEEN 2" in data[0], data
        client.logout()

    await deferToThread(check)
    assert server.stop() == 0, server.output()
    assert server.stdout().count("index out of step") == 2  # only the first start


@pytest_twisted.ensureDeferred
async def test_damaged_index_is_one_line_and_reindex_adopt_rebuilds(filled):
    """An index LMDB cannot open: exit status 2 and one line naming the index, no
    traceback. Moved aside: the server starts and names the unknown mailbox; with the user
    added again, ``mailserver reindex --adopt`` brings back both folders and every flag."""
    server = filled
    index = server.data_dir / "index"
    with open(index / "data.mdb", "r+b") as damaged:
        damaged.write(b"\xff" * 8192)  # the two meta pages
    await deferToThread(server.start, False)
    assert await deferToThread(server.wait_exit) == 2
    stderr = server.stderr().strip().splitlines()
    assert len(stderr) == 1 and "cannot open the index" in stderr[0], server.stderr()
    assert str(index) in stderr[0]
    assert "Traceback" not in server.output()

    shutil.move(index, server.data_dir / "index.damaged")
    await deferToThread(server.start)
    line = await deferToThread(wait_for_log, server, "not in the index")
    assert "1 mailbox(es) on disk are not in the index (alice@example.org)" in line
    assert "mailserver reindex --adopt" in line
    with pytest.raises(imaplib.IMAP4.error):
        await deferToThread(imap, server)  # the user went with the index
    assert server.stop(signal.SIGTERM) == 0, server.output()

    await deferToThread(cli, server, "domain", "add", "example.org")
    await deferToThread(cli, server, "user", "add", ALICE, "--password-stdin",
                        stdin=PASSWORD + "\n")
    done = await deferToThread(cli, server, "reindex", "--adopt")
    assert f"{ALICE}: " in done.stdout, done.stdout

    await deferToThread(server.start)

    def check() -> None:
        client = imap(server)
        assert folder_flags(client, "INBOX") == FLAGS
        assert folder_flags(client, "Archive") == {"four": set()}
        client.logout()

    await deferToThread(check)
    assert server.stop() == 0, server.output()
