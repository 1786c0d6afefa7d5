"""The REST API in the real server: sign in with a password, list folders, read a message
delivered by SMTP, and an unauthenticated call answered with a problem document."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, provision

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: over the API\r\n"
    b"Message-ID: <api-1@example.net>\r\n\r\nRead me in a browser.\r\n"
)


def call(server: ServerProcess, method: str, path: str, body: Any = None,
         token: str | None = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url("/api/v1" + path), data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


@pytest_twisted.ensureDeferred
async def test_sign_in_and_read_mail_delivered_by_smtp(server_process: Any) -> None:
    server: ServerProcess = server_process(
        {"server": {"hostname": "mx.test"}}, listen_keys=("http.listen", "smtp.listen")
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)

    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=20) as client:
            client.sendmail("bob@example.net", ["alice@example.org"], MESSAGE)

    await deferToThread(deliver)
    status, headers, problem = await deferToThread(call, server, "GET", "/folders")
    assert status == 401 and headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, tokens = await deferToThread(
        call, server, "POST", "/auth/login",
        {"username": "alice@example.org", "password": PASSWORD},
    )
    assert status == 200 and tokens["token_type"] == "Bearer"
    token = tokens["access_token"]
    status, _, folders = await deferToThread(call, server, "GET", "/folders", None, token)
    assert status == 200
    inbox = next(f for f in folders["folders"] if f["name"] == "INBOX")
    assert inbox["exists"] == 1
    status, _, page = await deferToThread(
        call, server, "GET", "/folders/INBOX/messages", None, token
    )
    [summary] = page["messages"]
    assert summary["subject"] == "over the API"
    status, _, message = await deferToThread(
        call, server, "GET", f"/folders/INBOX/messages/{summary['uid']}", None, token
    )
    assert status == 200 and "Read me in a browser." in message["text"]
    status, _, document = await deferToThread(call, server, "GET", "/openapi.json")
    assert status == 200 and "/folders" in document["paths"]
