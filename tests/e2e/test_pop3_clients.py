"""Real POP3 clients against the real server (`twistd mailserver`, issue 7): mail arrives by
SMTP, then fetchmail retrieves and deletes it over STLS, getmail6 retrieves and deletes over
implicit TLS, mpop keeps it on the server and fetches only what is new by UIDL (pipelined,
SASL PLAIN after STLS), and curl lists, retrieves, asks UIDL and deletes. Each client checks
the server's self-signed certificate where it can.

Each client skips with the Debian package to install when it is missing; each run has a
timeout and a failure shows what the client printed (its protocol trace where it has one).
"""

from __future__ import annotations

import poplib
import shutil
import ssl
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.imap_clients import DOMAIN, USER, run, server_cert, smtp_send
from tests.e2e.mail import PASSWORD, provision

pytestmark = pytest.mark.e2e

#: Debian package of each client binary, for the skip reason.
PACKAGES = {"fetchmail": "fetchmail", "getmail": "getmail6", "mpop": "mpop", "curl": "curl"}


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(
            f"{binary} is not installed (Debian package {PACKAGES[binary]}; "
            "run scripts/install-debian-deps as root)"
        )
    return path


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(
        tmp_path / "server",
        listen_keys=("http.listen", "smtp.listen", "pop3.listen", "pop3.tls_listen"),
    ) as process:
        yield process


async def start(server: ServerProcess, subjects: list[str]) -> None:
    await provision(Path(server.data_dir), DOMAIN)
    await deferToThread(server.start)
    for subject in subjects:
        await deferToThread(smtp_send, server, subject)


def server_view(server: ServerProcess) -> list[bytes]:
    """The INBOX as the server lists it now: UIDL lines, over verified implicit TLS."""
    context = ssl.create_default_context(cafile=str(server_cert(server)))
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3.tls_listen"], context=context)
    client.user(USER)
    client.pass_(PASSWORD)
    ids = client.uidl()[1]
    client.quit()
    return ids


async def inbox_messages_live(server: ServerProcess) -> dict[str, bytes]:
    """Subject -> stored bytes of the INBOX, read with poplib while the server runs."""

    def read() -> dict[str, bytes]:
        context = ssl.create_default_context(cafile=str(server_cert(server)))
        client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3.tls_listen"], context=context)
        client.user(USER)
        client.pass_(PASSWORD)
        out = {}
        for number in range(1, client.stat()[0] + 1):
            data = b"\r\n".join(client.retr(number)[1]) + b"\r\n"
            subject = next(
                line[9:].decode() for line in data.split(b"\r\n") if line.startswith(b"Subject: ")
            )
            out[subject] = data
        client.quit()
        return out

    return await deferToThread(read)


def mda(home: Path, out: Path) -> Path:
    """A delivery script that writes the message on its stdin to a new file in ``out``."""
    script = home / "deliver.sh"
    script.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXX)"\n')
    script.chmod(0o755)
    return script


def written(directory: Path) -> dict[str, bytes]:
    """Subject -> bytes (LF line ends) of every message file a client wrote."""
    out = {}
    for path in directory.iterdir():
        data = path.read_bytes().replace(b"\r\n", b"\n")
        subject = next(
            line[9:].decode() for line in data.split(b"\n") if line.startswith(b"Subject: ")
        )
        out[subject] = data
    return out


@pytest_twisted.ensureDeferred
async def test_fetchmail_over_stls_retrieves_and_deletes(server, tmp_path):
    fetchmail = require("fetchmail")
    await start(server, ["first", "second", "third"])
    stored = await inbox_messages_live(server)
    home, out = tmp_path / "fetchmail", tmp_path / "fetchmail" / "out"
    out.mkdir(parents=True)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {server.ports['pop3.listen']} protocol POP3 uidl\n"
        f"  user '{USER}' there with password '{PASSWORD}' is 'alice' here\n"
        f"  sslproto 'TLS1.2+' sslcertck sslcertfile '{server_cert(server)}'"
        " sslcommonname localhost\n"
        "  nokeep fetchall\n"
        f"  mda '{mda(home, out)}'\n"
    )
    rc.chmod(0o600)
    result = await deferToThread(
        run,
        [
            fetchmail,
            "-v",
            "--nodetach",
            "-f",
            str(rc),
            "--pidfile",
            str(home / "pid"),
            "-i",
            str(home / "ids"),
        ],
        home,
    )
    assert "POP3> STLS" in result.output and "upgrade to TLS succeeded" in result.output, result
    got = written(out)
    assert set(got) == {"first", "second", "third"}, result
    for subject, data in stored.items():
        # fetchmail puts its own Received: after the Return-Path: line; the rest is ours.
        after_return_path = data.split(b"\r\n", 1)[1].replace(b"\r\n", b"\n")
        assert got[subject].endswith(after_return_path), result
    assert await deferToThread(server_view, server) == []  # deleted at QUIT


@pytest_twisted.ensureDeferred
async def test_getmail6_over_implicit_tls_retrieves_and_deletes(server, tmp_path):
    getmail = require("getmail")
    await start(server, ["one", "two"])
    stored = await inbox_messages_live(server)
    home, out = tmp_path / "getmail", tmp_path / "getmail" / "out"
    out.mkdir(parents=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = 127.0.0.1\nport = {server.ports['pop3.tls_listen']}\n"
        f"username = {USER}\npassword = {PASSWORD}\n"
        f"ca_certs = {server_cert(server)}\n"
        "\n[destination]\n"
        f"type = MDA_external\npath = {mda(home, out)}\n"
        "allow_root_commands = true\n"
        "\n[options]\n"
        "delete = true\nread_all = true\nverbose = 2\n"
        "delivered_to = false\nreceived = false\n"
    )
    result = await deferToThread(run, [getmail, f"--rcfile={rc}", f"--getmaildir={home}"], home)
    assert "2 messages" in result.output and "deleted" in result.output, result
    got = written(out)
    assert set(got) == {"one", "two"}, result
    for subject, data in stored.items():
        assert got[subject] == data.replace(b"\r\n", b"\n"), result  # byte for byte
    assert await deferToThread(server_view, server) == []


@pytest_twisted.ensureDeferred
async def test_mpop_keeps_mail_and_fetches_only_new_by_uidl(server, tmp_path):
    mpop = require("mpop")
    await start(server, ["a", "b"])
    home = tmp_path / "mpop"
    mail = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (mail / sub).mkdir(parents=True)
    rc = home / "mpoprc"
    rc.write_text(
        "defaults\ntls on\ntls_starttls on\n"
        f"tls_trust_file {server_cert(server)}\n"
        "account default\nhost 127.0.0.1\n"
        f"port {server.ports['pop3.listen']}\nuser {USER}\npassword {PASSWORD}\n"
        f"delivery maildir {mail}\nkeep on\nuidls_file {home / 'uidls'}\n"
    )
    rc.chmod(0o600)
    first = await deferToThread(run, [mpop, "-C", str(rc), "--debug"], home)
    assert "--> STLS" in first.output and "--> AUTH PLAIN" in first.output, first
    assert len(list((mail / "new").iterdir())) == 2, first
    await deferToThread(smtp_send, server, "c")
    second = await deferToThread(run, [mpop, "-C", str(rc)], home)
    assert "new: 1 message" in second.output, second
    assert len(list((mail / "new").iterdir())) == 3, second
    ids = await deferToThread(server_view, server)
    assert len(ids) == 3  # kept on the server
    uidls = (home / "uidls").read_text().split()
    assert all(line.split()[1].decode() in uidls for line in ids)  # the server's UIDL


@pytest_twisted.ensureDeferred
async def test_curl_lists_retrieves_and_deletes(server, tmp_path):
    curl = require("curl")
    await start(server, ["x", "y"])
    stored = await inbox_messages_live(server)
    home = tmp_path / "curl"
    home.mkdir()
    cert = str(server_cert(server))
    stls = f"pop3://127.0.0.1:{server.ports['pop3.listen']}"
    implicit = f"pop3s://127.0.0.1:{server.ports['pop3.tls_listen']}"
    common = [curl, "-sS", "--cacert", cert, "-u", f"{USER}:{PASSWORD}"]
    listing = await deferToThread(run, [*common, "--ssl-reqd", f"{stls}/"], home)
    sizes = [len(data) for data in stored.values()]
    assert listing.output.split("\r\n")[:2] == [f"1 {sizes[0]}", f"2 {sizes[1]}"], listing
    retrieved = await deferToThread(
        run, [*common, "--ssl-reqd", "-o", str(home / "m2"), f"{stls}/2"], home
    )
    assert (home / "m2").read_bytes() == list(stored.values())[1], retrieved
    uidl = await deferToThread(run, [*common, "-X", "UIDL", f"{implicit}/"], home)
    ids = await deferToThread(server_view, server)
    assert uidl.output.split("\r\n")[:2] == [i.decode() for i in ids], uidl
    await deferToThread(run, [*common, "-X", "DELE", "-I", f"{implicit}/1"], home)
    remaining = await deferToThread(server_view, server)
    assert remaining == [b"1 " + ids[1].split()[1]]
