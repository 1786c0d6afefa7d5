"""DMARC aggregate reports through the real server: reports mailed by SMTP to
dmarc-reports@example.org on port 25 are delivered and recorded (with [msgauth] checks off,
as the harness runs), a broken one is delivered all the same, and ``mailserver dmarc
summary`` run beside the live server shows the tallies."""

from __future__ import annotations

import smtplib
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cli.conftest import mailserver_script
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import inbox_messages, provision
from tests.msgauth.dmarc_reports import report_message, report_xml

pytestmark = pytest.mark.e2e

REPORTS = "dmarc-reports@example.org"


def send(port: int, data: bytes, recipient: str = REPORTS) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.reporter.example")
        client.mail("dmarc-noreply@reporter.example")
        client.rcpt(recipient)
        try:
            return client.data(data)
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mailserver_script(), "--config", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


@pytest_twisted.ensureDeferred
async def test_reports_sent_by_smtp_show_in_the_summary(tmp_path: Path):
    server = ServerProcess(tmp_path / "server", listen_keys=("http.listen", "smtp.listen"))
    await provision(server.data_dir, "example.org", ("alice", "dmarc-reports"))
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    end = (int(time.time()) // 86400) * 86400 - 1
    rows = [("192.0.2.1", 40, "none", "pass", "pass"),
            ("198.51.100.4", 2, "reject", "fail", "fail")]
    zipped = report_message(report_xml(org="big.example", report_id="b-7", begin=end - 86399,
                                       end=end, rows=rows, p="reject"), "zip")
    gzipped = report_message(report_xml(org="small.example", report_id="s-1", begin=end - 86399,
                                        end=end, p="reject"), "gzip")
    broken = report_message(b"<feedback><report_metadata>", "gzip")
    for data in (zipped, gzipped, broken, zipped):  # the last one again: recorded once
        code, reply = await deferToThread(send, port, data)
        assert code == 250, reply
    code, reply = await deferToThread(send, port, gzipped, "alice@example.org")
    assert code == 250, reply

    done = await deferToThread(cli, server, "dmarc", "summary", "example.org", "--days", "2")
    assert done.returncode == 0, done.stderr + server.output()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DMARC reports for example.org, the last 2 day(s): 2 report(s)")
    assert lines[1].startswith("45 message(s): DMARC pass 43 (96%)")
    rows_by_name = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
    assert rows_by_name["big.example"][1:3] == ["1", "42"]
    assert rows_by_name["small.example"][1:3] == ["1", "3"]
    assert rows_by_name["198.51.100.4"][-1] == "reject=2"
    listing = await deferToThread(cli, server, "dmarc", "list", "example.org")
    reporters = sorted(line.split()[3] for line in listing.stdout.splitlines()[1:])
    assert reporters == ["big.example", "small.example"]
    assert all(line.endswith("smtp") for line in listing.stdout.splitlines()[1:])

    server.stop()
    assert len(await inbox_messages(server.data_dir, REPORTS)) == 4  # every one delivered
    assert len(await inbox_messages(server.data_dir, "alice@example.org")) == 1
    log = server.stdout() + server.stderr()
    assert "DMARC report not recorded: not well-formed XML" in log
    assert "Traceback" not in log
