"""Shared parts of the web mail page's browser tests (``tests/web/test_page_*.py``): the real
server from the e2e ``server_process`` fixture (so no twistd outlives a test), a headless
Chromium, and the steps the tests share.

Bind the fixtures in a test module under their names (pytest finds them there)::

    from tests.web import page_harness

    browser = page_harness.browser
    mail_server = page_harness.mail_server
    server_process = page_harness.server_process

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; the
``browser`` fixture skips with the reason otherwise. Every wait is explicit and bounded
(:data:`WAIT` seconds); nothing is timed.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from tests.e2e.conftest import ServerProcess, server_process
from tests.e2e.mail import PASSWORD, provision

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

__all__ = [
    "ALICE",
    "BOB",
    "PASSWORD",
    "WAIT",
    "By",
    "api",
    "browser",
    "deliver",
    "ec",
    "eventually",
    "folder_page",
    "mail_server",
    "message_item",
    "open_folder",
    "page_problems",
    "server_process",
    "sign_in",
    "text_message",
    "token_of",
    "wait",
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: Seconds any one wait may take.
WAIT = 30.0
WIDTH, HEIGHT = 1280, 800
ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
def mail_server(server_process: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """The real server with alice and bob of example.org, HTTP and SMTP on loopback."""
    server = server_process({"server": {"hostname": "mx.test"}},
                            listen_keys=("http.listen", "smtp.listen"))
    pytest_twisted.blockon(ensureDeferred(
        provision(server.data_dir, "example.org", users=("alice", "bob"))))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium at :data:`WIDTH` x :data:`HEIGHT` (no sandbox: CI runs as root),
    keeping the page's console log (see :func:`page_problems`)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}",
                     "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def deliver(server: ServerProcess, message: EmailMessage | bytes, to: str = ALICE) -> None:
    """Hand ``message`` to the server's port 25 for ``to``."""
    data = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=WAIT) as client:
        client.sendmail("carol@example.net", [to], data)


def text_message(subject: str, body: str, message_id: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Carol <carol@example.net>"
    message["To"] = ALICE
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{abs(hash(subject))}@example.net>"
    message.set_content(body)
    return message


def api(server: ServerProcess, method: str, path: str, body: Any = None,
        token: str | None = None) -> tuple[int, Any]:
    """One call to the server's API from outside the browser: (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url("/api/v1" + path), data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def token_of(server: ServerProcess, user: str) -> str:
    status, tokens = api(server, "POST", "/auth/login", {"username": user, "password": PASSWORD})
    assert status == 200, tokens
    return str(tokens["access_token"])


def folder_page(server: ServerProcess, token: str, folder: str) -> list[dict[str, Any]]:
    """The newest messages of ``folder`` as the API lists them."""
    status, page = api(server, "GET", f"/folders/{urllib.parse.quote(folder)}/messages",
                       token=token)
    assert status == 200, page
    return list(page["messages"])


def eventually(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something true (bounded), and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait(driver: Any) -> WebDriverWait:
    return WebDriverWait(driver, WAIT)


def sign_in(driver: Any, server: ServerProcess, user: str = ALICE) -> None:
    """Sign in on the page and wait for the folder list and the live stream."""
    driver.get(server.url("/mail/"))
    wait(driver).until(ec.visibility_of_element_located((By.ID, "username")))
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signin-button").click()
    wait(driver).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]')))
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))


def message_item(driver: Any, subject: str) -> Any:
    """The message list's entry with ``subject`` (waited for)."""
    return wait(driver).until(ec.element_to_be_clickable((
        By.XPATH, f'//ul[@id="messages"]/li[.//span[@class="subject"][text()="{subject}"]]')))


def open_folder(driver: Any, name: str) -> None:
    """Click folder ``name`` in the folder list and wait for its list."""
    wait(driver).until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, f'#folders li[data-folder="{name}"]'))).click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "status"), f" in {name}"))


def page_problems(driver: Any) -> list[str]:
    """The page's console errors and Content-Security-Policy reports so far, but for the
    401 of "am I signed in?" before signing in."""
    return [e["message"] for e in driver.get_log("browser")
            if (e["level"] == "SEVERE" or "Content Security Policy" in e["message"])
            and not ("/api/v1/auth/session" in e["message"] and "401" in e["message"])]
