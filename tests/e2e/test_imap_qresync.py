"""A real QRESYNC client against the real server: mutt with a header cache and
``imap_qresync`` resynchronises INBOX (``ENABLE QRESYNC``, ``SELECT ... (CONDSTORE)``, then
``UID FETCH ... (CHANGEDSINCE n VANISHED)``, RFC 7162 §3.2.6) after another client expunged
and flagged messages, and shows the result.

mutt skips with the Debian package to install when it is missing; a failure shows what mutt
printed and its protocol trace.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.imap_clients import (
    DOMAIN,
    Run,
    ServerView,
    require,
    run_in_pty,
    smtp_send,
    write_muttrc,
)
from tests.e2e.mail import provision

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(
        tmp_path / "server", listen_keys=("http.listen", "smtp.listen", "imap.tls_listen")
    ) as process:
        yield process


def muttrc(home: Path, server: ServerProcess) -> Path:
    """mutt over implicit TLS with a header cache and CONDSTORE/QRESYNC turned on."""
    config = write_muttrc(home, server, f"""\
set header_cache="{home / "hcache"}"
set imap_condstore=yes
set imap_qresync=yes
""")
    (home / "hcache").mkdir()
    return config


@pytest_twisted.ensureDeferred
async def test_mutt_resynchronises_with_qresync(server, tmp_path):
    """mutt opens INBOX (3 messages, cached); another client deletes one and flags another;
    mutt opens INBOX again, asks for what changed since its cached modseq with UID FETCH
    (CHANGEDSINCE n VANISHED), learns of the expunge from VANISHED (EARLIER) and of the flag
    from a FETCH with MODSEQ, and shows 2 messages, one flagged."""
    mutt = require("mutt")
    await provision(Path(server.data_dir), DOMAIN)
    await deferToThread(server.start)
    home = tmp_path / "mutt"
    home.mkdir()
    config = muttrc(home, server)
    inbox = f"imaps://localhost:{server.ports['imap.tls_listen']}/INBOX"

    def run_mutt(keys: str) -> tuple[Run, str]:
        debug = home / ".muttdebug0"
        debug.unlink(missing_ok=True)
        screen = run_in_pty([mutt, "-d", "5", "-n", "-F", str(config), "-f", inbox,
                             "-e", f'push "{keys}"'], home)  # fmt: skip
        trace = debug.read_text(errors="replace") if debug.exists() else ""
        screen.output += f"\n--- trace ---\n{trace}"
        return screen, trace

    def scenario() -> None:
        for subject in ("first", "second", "third"):
            smtp_send(server, subject)
        screen, trace = run_mutt("<quit>")
        assert "Msgs:3" in screen.output, screen
        assert "ENABLE QRESYNC" in trace, screen
        with ServerView(server) as view:
            client = view.client
            assert client.select("INBOX")[0] == "OK"
            assert client.store("2", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
            assert client.store("1", "+FLAGS.SILENT", "(\\Flagged)")[0] == "OK"
        screen, trace = run_mutt("<quit>")
        assert re.search(r"SELECT \"?INBOX\"? \(CONDSTORE\)", trace), screen
        assert re.search(r"UID FETCH 1:3 \(FLAGS\) \(CHANGEDSINCE \d+ VANISHED\)", trace), screen
        assert "VANISHED (EARLIER) 2" in trace, screen
        assert re.search(r"FETCH \(UID 1 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", trace), screen
        assert "Msgs:2" in screen.output and "Flag:1" in screen.output, screen

    await deferToThread(scenario)
