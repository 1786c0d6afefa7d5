"""The embedding examples in examples/ work as their READMEs say: each is loaded from its file
and served on free 127.0.0.1 ports, then driven with real clients (smtplib, imaplib, treq)."""

from __future__ import annotations

import base64
import imaplib
import importlib.util
import json
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface.verify import verifyObject

from mailserver.interfaces import IAccount, IDelivery, IDeliveryTarget, IMailbox, IMessage
from mailserver.types import Address, Envelope

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOST = "127.0.0.1"


def load(name: str) -> ModuleType:
    """examples/<name>/app.py as a module (examples are not a package)."""
    module_name = f"mailserver_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Listening:
    """Ports opened by a test, closed at its end."""

    def __init__(self) -> None:
        self.ports: list[Any] = []

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface=HOST)  # type: ignore[attr-defined]
        self.ports.append(port)
        return int(port.getHost().port)

    def close(self) -> None:
        for port in self.ports:
            pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def listening() -> Iterator[Listening]:
    opened = Listening()
    yield opened
    opened.close()


def test_every_example_has_a_readme_and_a_main() -> None:
    """Each example directory has a README.md and an app.py with main() and build()."""
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert names == ["imap_dict_store", "web_inbox", "webhook_delivery"]
    for name in names:
        assert (EXAMPLES / name / "README.md").read_text().startswith("# ")
        module = load(name)
        assert callable(module.main) and callable(module.build)


@pytest.mark.parametrize("name", ["imap_dict_store", "web_inbox", "webhook_delivery"])
def test_example_command_line(name: str) -> None:
    """``python examples/<name>/app.py --help`` prints its usage (the entry point imports
    and parses its arguments)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "app.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: app.py")


def test_examples_provide_the_interfaces() -> None:
    """The examples' own targets and store objects provide the interfaces they claim."""
    envelope = Envelope(sender=Address("bob", "example.net"))
    inbox, _, _ = load("web_inbox").build("inbox@example.org")
    target = load("web_inbox").InboxTarget(inbox)
    webhook = load("webhook_delivery").WebhookTarget("http://127.0.0.1:9/", "example.org")
    for delivery_target in (target, webhook):
        assert verifyObject(IDeliveryTarget, delivery_target)
        assert verifyObject(IDelivery, delivery_target.start(envelope))
    app = load("imap_dict_store")
    account = app.DictStore(app.SAMPLE).account("alice@example.org")
    assert verifyObject(IAccount, account)
    assert verifyObject(IMailbox, account.folder("inbox"))
    assert verifyObject(IMessage, account.folder("INBOX").message(1))


def test_examples_type_check(tmp_path: Path) -> None:
    """The examples are fully typed: mypy with setup.cfg's settings (the zope plugin,
    disallow_untyped_defs) reports nothing."""
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    pytest.importorskip("mypy_zope", reason="mypy-zope not installed (pip install -e '.[test]')")
    checkout = EXAMPLES.parent
    command = [sys.executable, "-m", "mypy", "--config-file", str(checkout / "setup.cfg")]
    command += ["--cache-dir", str(tmp_path / "mypy-cache"), "--explicit-package-bases"]
    command += [str(path.relative_to(checkout)) for path in sorted(EXAMPLES.glob("*/app.py"))]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=600)
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, report
    assert report.startswith("Success: no issues found in 3 source files"), report


# -- web_inbox -------------------------------------------------------------------------


async def test_web_inbox_shows_mail_received_over_smtp(listening: Listening) -> None:
    """Mail to the inbox's address is on the page after the 250, with its subject, sender
    and text HTML-escaped."""
    app = load("web_inbox")
    inbox, smtp, site = app.build("inbox@example.org")
    smtp_port, http_port = listening.listen(smtp), listening.listen(site)
    message = (
        b"From: bob@example.net\r\nTo: inbox@example.org\r\n"
        b"Subject: <b>Hello</b> & welcome\r\n\r\nSee you <soon>.\r\n"
    )

    def send() -> None:
        with smtplib.SMTP(HOST, smtp_port, timeout=10) as client:
            client.sendmail("bob@example.net", ["inbox@example.org"], message)

    await deferToThread(send)
    response = await treq.get(f"http://{HOST}:{http_port}/", persistent=False)
    page = await treq.text_content(response)
    assert response.code == 200
    assert "<b>&lt;b&gt;Hello&lt;/b&gt; &amp; welcome</b> from bob@example.net" in page
    assert "See you &lt;soon&gt;." in page
    assert "<p>1 message(s)</p>" in page
    assert [m.subject for m in inbox.messages] == ["<b>Hello</b> & welcome"]


async def test_web_inbox_refuses_other_addresses(listening: Listening) -> None:
    """The realm's target accepts only the one address: another gets 550 5.1.1 and nothing
    is shown."""
    app = load("web_inbox")
    inbox, smtp, _ = app.build("inbox@example.org")
    smtp_port = listening.listen(smtp)

    def send() -> Any:
        with smtplib.SMTP(HOST, smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("bob@example.net")
            return client.rcpt("someone-else@example.org")

    code, text = await deferToThread(send)
    assert (code, text[:5]) == (550, b"5.1.1")
    assert inbox.messages == []


# -- webhook_delivery ------------------------------------------------------------------


class Webhook(Resource):
    """A webhook that records every POST body and answers with ``code``."""

    isLeaf = True

    def __init__(self, code: int = 200) -> None:
        super().__init__()
        self.code = code
        self.received: list[dict[str, Any]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.received.append(json.loads(request.content.read()))
        request.setResponseCode(self.code)
        return b"thanks" if self.code < 300 else b"unavailable"


def send_to(port: int, recipients: list[str], message: bytes) -> Any:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        return client.sendmail("bob@example.net", recipients, message)


async def test_webhook_receives_each_message_before_the_250(listening: Listening) -> None:
    """The webhook gets the sender, the recipients (domains in lower case) and the exact
    message bytes (base64, after the Received header) by the time the client has its 250."""
    app = load("webhook_delivery")
    webhook = Webhook()
    hook_port = listening.listen(Site(webhook))
    smtp_port = listening.listen(app.build(f"http://{HOST}:{hook_port}/mail", "example.org"))
    message = b"From: bob@example.net\r\nSubject: ping\r\n\r\nHello webhook.\r\n"
    refused = await deferToThread(
        send_to, smtp_port, ["ops@example.org", "dev@Example.ORG"], message
    )
    assert refused == {}
    [posted] = webhook.received
    assert posted["from"] == "bob@example.net"
    assert posted["to"] == ["ops@example.org", "dev@example.org"]
    assert base64.b64decode(posted["message"]).endswith(message)


async def test_webhook_failure_is_a_temporary_error(listening: Listening) -> None:
    """A webhook answering 503 makes the end of data 451 4.4.1: the client keeps the
    message and retries."""
    app = load("webhook_delivery")
    webhook = Webhook(code=503)
    hook_port = listening.listen(Site(webhook))
    smtp_port = listening.listen(app.build(f"http://{HOST}:{hook_port}/mail", "example.org"))
    with pytest.raises(smtplib.SMTPDataError) as raised:
        await deferToThread(send_to, smtp_port, ["ops@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert raised.value.smtp_code == 451
    assert raised.value.smtp_error.startswith(b"4.4.1")
    assert len(webhook.received) == 1


async def test_webhook_unreachable_is_a_temporary_error(listening: Listening) -> None:
    """A webhook nobody listens for is 451 4.4.1 too, not a traceback."""
    app = load("webhook_delivery")
    closed = reactor.listenTCP(0, Site(Webhook()), interface=HOST)  # type: ignore[attr-defined]
    dead_port = closed.getHost().port
    await closed.stopListening()
    smtp_port = listening.listen(app.build(f"http://{HOST}:{dead_port}/mail", "example.org"))
    with pytest.raises(smtplib.SMTPDataError) as raised:
        await deferToThread(send_to, smtp_port, ["ops@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert raised.value.smtp_code == 451


async def test_webhook_target_refuses_relaying(listening: Listening) -> None:
    """Recipients outside the domain are refused 550 5.7.1 and nothing is posted."""
    app = load("webhook_delivery")
    webhook = Webhook()
    hook_port = listening.listen(Site(webhook))
    smtp_port = listening.listen(app.build(f"http://{HOST}:{hook_port}/mail", "example.org"))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
        await deferToThread(send_to, smtp_port, ["x@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
    code, text = raised.value.recipients["x@elsewhere.test"]
    assert (code, text[:5]) == (550, b"5.7.1")
    assert webhook.received == []


# -- imap_dict_store -------------------------------------------------------------------


async def test_imap_serves_the_dict_store(listening: Listening) -> None:
    """imaplib logs in with the dict's password, lists both folders, and reads the exact
    bytes; SEARCH and flags work; writes are refused NO [CANNOT]."""
    app = load("imap_dict_store")
    port = listening.listen(app.build(app.SAMPLE))
    inbox = app.SAMPLE["alice@example.org"]["folders"]["INBOX"]

    def session() -> dict[str, Any]:
        client = imaplib.IMAP4(HOST, port, timeout=10)
        seen: dict[str, Any] = {}
        try:
            client.login("alice@example.org", "secret")
            seen["list"] = client.list()[1]
            seen["select"] = client.select("INBOX")[1]
            seen["body"] = client.uid("FETCH", "2", "(BODY[])")[1][0][1]
            seen["flags"] = client.uid("FETCH", "1:2", "(FLAGS)")[1]
            seen["search"] = client.uid("SEARCH", "SUBJECT", "lunch")[1]
            seen["store"] = client.uid("STORE", "1", "+FLAGS", "(\\Flagged)")[1]
            seen["append"] = client.append("INBOX", None, None, b"Subject: new\r\n\r\nx\r\n")
        finally:
            client.logout()
        return seen

    seen = await deferToThread(session)
    assert sorted(line.rsplit(b" ", 1)[-1] for line in seen["list"]) == [b"Archive", b"INBOX"]
    assert seen["select"] == [b"2"]
    assert seen["body"] == inbox[1]
    assert b"\\Seen" in seen["flags"][1] and b"\\Seen" not in seen["flags"][0]
    assert seen["search"] == [b"1"]
    assert b"\\Flagged" in seen["store"][0]
    assert seen["append"] == ("NO", [b"[CANNOT] This store is read-only"])


async def test_imap_dict_store_refuses_a_wrong_password(listening: Listening) -> None:
    """The app's checker refuses a wrong password like any IMAP server: NO, no session."""
    app = load("imap_dict_store")
    port = listening.listen(app.build(app.SAMPLE))

    def login() -> str:
        client = imaplib.IMAP4(HOST, port, timeout=10)
        try:
            client.login("alice@example.org", "wrong")
        except imaplib.IMAP4.error as error:
            return str(error)
        finally:
            client.shutdown()
        return "logged in"

    assert "AUTHENTICATIONFAILED" in await deferToThread(login)
