"""The web mail page in a real headless Chromium against the real server (``twistd
mailserver`` with HTTP and SMTP on 127.0.0.1): sign in and read a message delivered by SMTP,
send one that arrives, move one to Junk, a hostile HTML message that runs nothing, and a
layout check on a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skips
with the reason otherwise. Every wait is explicit and bounded (:data:`WAIT` seconds).
"""

from __future__ import annotations

import http.server
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.policy import SMTP
from typing import Any

import pytest

from tests.e2e.mail import PASSWORD
from tests.web import page_harness

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402

pytestmark = pytest.mark.e2e

#: Seconds any one wait may take.
WAIT = 30.0
WIDTH, HEIGHT = 1280, 800
ALICE, BOB = "alice@example.org", "bob@example.org"


# The real server (from the e2e ``server_process`` fixture, so no twistd outlives a test) and
# headless Chromium, shared with the page tests.
mail_server = page_harness.mail_server
server_process = page_harness.server_process
browser = page_harness.browser


# -- helpers ----------------------------------------------------------------------------------


# The helpers are the page tests' own (tests/web/page_harness.py).
deliver = page_harness.deliver
text_message = page_harness.text_message
api = page_harness.api
token_of = page_harness.token_of
eventually = page_harness.eventually
wait = page_harness.wait
sign_in = page_harness.sign_in
message_item = page_harness.message_item


# -- tests ------------------------------------------------------------------------------------


def test_sign_in_and_read_a_message_delivered_by_smtp(mail_server, browser) -> None:
    """A message delivered on port 25 shows in the INBOX list after signing in, and its
    text in the reading pane when clicked; the session is a cookie no script can read."""
    deliver(mail_server, text_message("Lunch on Friday?", "Shall we meet at noon?\n"))
    sign_in(browser, mail_server)
    assert browser.find_element(By.ID, "whoami").text == ALICE
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly
    message_item(browser, "Lunch on Friday?").click()
    wait(browser).until(ec.text_to_be_present_in_element(
        (By.ID, "reader-text"), "Shall we meet at noon?"))
    assert "Carol" in browser.find_element(By.ID, "reader-from").text
    assert browser.find_element(By.ID, "reader-subject").text == "Lunch on Friday?"


def test_send_a_message_with_an_attachment_that_arrives(mail_server, browser, tmp_path) -> None:
    """Compose to bob with a file attached: bob's INBOX gets it with the attachment."""
    attachment = tmp_path / "notes.txt"
    attachment.write_text("the attached notes\n")
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "compose-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to")))
    browser.find_element(By.ID, "compose-to").send_keys(BOB)
    browser.find_element(By.ID, "compose-subject").send_keys("Sent from the web page")
    browser.find_element(By.ID, "compose-text").send_keys("Hello Bob, from a browser.")
    browser.find_element(By.ID, "compose-files").send_keys(str(attachment))
    browser.find_element(By.ID, "compose-send").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Message sent"))
    assert not browser.find_element(By.ID, "compose").is_displayed()
    token = token_of(mail_server, BOB)

    def arrived() -> Any:
        status, page = api(mail_server, "GET", "/folders/INBOX/messages", token=token)
        assert status == 200
        return [m for m in page["messages"] if m["subject"] == "Sent from the web page"]

    [summary] = eventually("the message in bob's INBOX", arrived)
    status, message = api(mail_server, "GET", f"/folders/INBOX/messages/{summary['uid']}",
                          token=token)
    assert status == 200 and "Hello Bob, from a browser." in message["text"]
    assert message["from"][0]["address"] == ALICE
    assert [a["filename"] for a in message["attachments"]] == ["notes.txt"]


def test_move_a_message_to_junk(mail_server, browser) -> None:
    """"Move to Junk" takes the message out of the list and into the Junk folder."""
    deliver(mail_server, text_message("Cheap watches", "Buy now!\n"))
    sign_in(browser, mail_server)
    item = message_item(browser, "Cheap watches")
    item.click()
    wait(browser).until(ec.element_to_be_clickable((By.ID, "junk-button"))).click()
    wait(browser).until(ec.staleness_of(item))
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Moved to Junk"))
    token = token_of(mail_server, ALICE)
    status, junk = api(mail_server, "GET", "/folders/Junk/messages", token=token)
    assert status == 200 and [m["subject"] for m in junk["messages"]] == ["Cheap watches"]
    status, inbox = api(mail_server, "GET", "/folders/INBOX/messages", token=token)
    assert status == 200 and inbox["messages"] == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request path it gets (the hostile message's would-be beacons)."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def beacon() -> Iterator[tuple[str, list[str]]]:
    """An HTTP listener on 127.0.0.1 recording request paths: (base URL, paths)."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def hostile_html(base: str) -> str:
    """Every way a message could try to run code or call home."""
    return f"""<html><head>
<meta http-equiv="refresh" content="0;url={base}/meta-refresh">
<link rel="stylesheet" href="{base}/link-stylesheet">
<style>@import url("{base}/css-import"); body {{ background: url({base}/css-style) }}
input[value^="a"] {{ background-image: url({base}/css-exfiltrate) }}</style>
<script>document.title = "pwned-script"; window.name = "pwned";
fetch("{base}/script-fetch"); parent.document.title = "pwned-parent";</script>
</head><body onload="document.title='pwned-onload'; new Image().src='{base}/body-onload'">
<p>Dear customer,</p>
<img src="x" onerror="parent.document.title='pwned-onerror'; new Image().src='{base}/onerror'">
<img src="{base}/remote-image.gif" alt="tracker">
<svg onload="new Image().src='{base}/svg-onload'"><image href="{base}/svg-image"/></svg>
<div style="background-image: url({base}/css-attribute)">styled</div>
<a id="js-link" href="javascript:parent.document.title='pwned-link'">click here</a>
<iframe src="{base}/iframe"></iframe>
<object data="{base}/object"></object><embed src="{base}/embed">
<form action="{base}/form"><input name="a" value="abc"><button>go</button></form>
<video poster="{base}/video-poster"></video>
<p>HOSTILE-END</p>
</body></html>"""


def test_a_hostile_html_message_runs_nothing(mail_server, browser, beacon) -> None:
    """Scripts, event handlers, javascript: links, CSS url() exfiltration and remote images
    in a message do nothing: the page's title and window name are untouched, the frame is
    an opaque origin, and the listener they aim at gets no request; "Show images" then
    loads the remote image alone (with a control request made after, the only two the
    listener sees)."""
    base, seen = beacon
    message = text_message("Your invoice", "see the HTML part")
    message.add_alternative(hostile_html(base), subtype="html")
    deliver(mail_server, message)
    sign_in(browser, mail_server)
    message_item(browser, "Your invoice").click()
    frame = wait(browser).until(ec.visibility_of_element_located((By.ID, "reader-frame")))
    assert frame.get_attribute("sandbox") == ""
    assert browser.execute_script(
        "return document.getElementById('reader-frame').contentDocument") is None
    wait(browser).until(ec.visibility_of_element_located((By.ID, "images-button")))
    browser.switch_to.frame(frame)
    try:
        wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"),
                                                             "HOSTILE-END"))
        wait(browser).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        for link in browser.find_elements(By.TAG_NAME, "a"):  # the javascript: link is inert
            assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
        assert browser.find_elements(By.TAG_NAME, "script") == []
        assert browser.find_elements(By.TAG_NAME, "iframe") == []
    finally:
        browser.switch_to.default_content()
    assert browser.title == "Mail"
    assert browser.execute_script("return window.name") == ""
    assert browser.find_element(By.ID, "reader-subject").text == "Your invoice"
    assert seen == []
    # "Show images" loads the remote image, and nothing else.
    browser.find_element(By.ID, "images-button").click()
    eventually("the remote image", lambda: "/remote-image.gif" in seen)
    assert not browser.find_element(By.ID, "images-button").is_displayed()
    assert browser.title == "Mail"
    # A control request after all that: the listener is reachable, and the image and the
    # control are the only requests it ever sees.
    browser.get(base + "/control")
    eventually("the control request", lambda: "/control" in seen, 10)
    # (the browser may ask for the control page's /favicon.ico: that is the control's)
    assert [p for p in seen if p != "/favicon.ico"] == ["/remote-image.gif", "/control"]


def test_layout_screenshot(mail_server, browser, tmp_path) -> None:
    """At 1280x800, signed in with a message open: folders on the left, the list in the
    middle, the reader on the right taking the most room, under the bar, none overlapping
    (coarse rectangles, stable across machines); the screenshot is kept in tmp_path."""
    deliver(mail_server, text_message("Layout check", "A body for the reader.\n"))
    sign_in(browser, mail_server)
    message_item(browser, "Layout check").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "reader-text"), "A body"))
    viewport = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    shot = tmp_path / "webmail.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (
        viewport[0], viewport[1])

    def rect(element_id: str) -> dict[str, float]:
        return dict(browser.find_element(By.ID, element_id).rect)

    bar = browser.find_element(By.CSS_SELECTOR, "header.bar").rect
    folders, listing, reader = rect("folder-pane"), rect("list-pane"), rect("reader")
    width, height = viewport
    assert bar["x"] == 0 and bar["y"] == 0 and bar["width"] == width
    for pane in (folders, listing, reader):
        assert pane["y"] == pytest.approx(bar["height"], abs=1)
        assert pane["height"] > height * 0.7
    assert folders["x"] == 0 and folders["width"] == pytest.approx(200, abs=1)
    assert listing["x"] == pytest.approx(folders["x"] + folders["width"], abs=1)
    assert reader["x"] == pytest.approx(listing["x"] + listing["width"], abs=1)
    assert reader["x"] + reader["width"] == pytest.approx(width, abs=1)
    assert reader["width"] > listing["width"] > folders["width"]
    inbox = browser.find_element(By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]').rect
    assert folders["x"] <= inbox["x"] and inbox["x"] + inbox["width"] <= folders["width"] + 1
    assert "current" in browser.find_element(
        By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]').get_attribute("class")
    # The page itself lives within its policy: no violation, no script error (the one
    # expected failure is the 401 of "am I signed in?" before signing in).
    problems = [e["message"] for e in browser.get_log("browser")
                if (e["level"] == "SEVERE" or "Content Security Policy" in e["message"])
                and not ("/api/v1/auth/session" in e["message"] and "401" in e["message"])]
    assert problems == []


def test_search_finds_a_message_by_its_text(mail_server, browser) -> None:
    """Text typed in the search box becomes an IMAP TEXT search of the folder."""
    deliver(mail_server, text_message("Quarterly report", "numbers: forty-two\n"))
    deliver(mail_server, text_message("Something else", "nothing here\n"))
    sign_in(browser, mail_server)
    message_item(browser, "Something else")
    box = browser.find_element(By.ID, "search-q")
    box.send_keys('forty-two "quoted\\')
    box.clear()
    box.send_keys("forty-two")
    box.submit()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "list-title"), "1 found"))
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#messages .subject")]
    assert subjects == ["Quarterly report"]


def test_settings_create_and_revoke_an_app_password(mail_server, browser) -> None:
    """Settings lists app passwords; one created is shown once and can be revoked."""
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "settings-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "app-password-name")))
    browser.find_element(By.ID, "app-password-name").send_keys("phone")
    browser.find_element(By.CSS_SELECTOR, "#app-password-form button").click()
    shown = wait(browser).until(ec.visibility_of_element_located((By.ID, "app-password-created")))
    assert "phone" in shown.text
    item = wait(browser).until(ec.visibility_of_element_located((By.CSS_SELECTOR,
                                                                 "#app-passwords li")))
    item.find_element(By.TAG_NAME, "button").click()
    try:
        wait(browser).until(ec.staleness_of(item))
    except TimeoutException:
        pytest.fail("the revoked app password is still listed")
    assert browser.find_elements(By.CSS_SELECTOR, "#app-passwords li") == []


def test_two_factor_sign_in_then_sign_out(mail_server, browser) -> None:
    """With TOTP on, the password alone brings up the code field; with the code the page
    opens. Signing out ends the session: a reload shows the sign-in form again."""
    pyotp = pytest.importorskip("pyotp")
    token = token_of(mail_server, ALICE)
    status, enrolment = api(mail_server, "POST", "/me/totp", token=token)
    assert status == 200
    totp = pyotp.TOTP(enrolment["secret"])
    status, _ = api(mail_server, "POST", "/me/totp/confirm",
                    {"code": totp.at(time.time() - 30)}, token=token)
    assert status == 200
    browser.get(mail_server.url("/mail/"))
    wait(browser).until(ec.visibility_of_element_located((By.ID, "username")))
    browser.find_element(By.ID, "username").send_keys(ALICE)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin-button").click()
    code = wait(browser).until(ec.visibility_of_element_located((By.ID, "totp")))
    assert browser.find_element(By.ID, "app-view").is_displayed() is False
    code.send_keys(totp.now())
    browser.find_element(By.ID, "signin-button").click()
    wait(browser).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]')))
    browser.find_element(By.ID, "signout-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "username")))
    browser.refresh()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "username")))
    assert not browser.find_element(By.ID, "app-view").is_displayed()


def test_the_message_list_pages(mail_server, browser) -> None:
    """51 messages: the list shows the newest 50 and "Older messages" loads the last one."""
    with smtplib.SMTP("127.0.0.1", mail_server.ports["smtp.listen"], timeout=WAIT) as client:
        for n in range(51):
            client.sendmail("carol@example.net", [ALICE],
                            text_message(f"Message {n:02d}", "body\n").as_bytes(policy=SMTP))
    sign_in(browser, mail_server)
    message_item(browser, "Message 50")
    items = browser.find_elements(By.CSS_SELECTOR, "#messages li")
    assert len(items) == 50 and items[-1].text.endswith("Message 01")
    wait(browser).until(ec.element_to_be_clickable((By.ID, "more-button"))).click()
    message_item(browser, "Message 00")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#messages li")) == 51
    assert not browser.find_element(By.ID, "more-button").is_displayed()


def test_reply_arrives_threaded_and_marks_the_original_answered(mail_server, browser) -> None:
    """Reply fills in the sender and "Re:"; the reply reaches bob with In-Reply-To set to
    the original's Message-ID, and the original is flagged \\Answered."""
    original = text_message("Plans", "What are the plans?\n")
    original.replace_header("From", f"Bob <{BOB}>")
    original.replace_header("Message-ID", "<plans-1@example.org>")
    deliver(mail_server, original)
    sign_in(browser, mail_server)
    message_item(browser, "Plans").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "reader-text"), "plans?"))
    browser.find_element(By.ID, "reply-button").click()
    to = wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to")))
    assert BOB in to.get_attribute("value")
    assert browser.find_element(By.ID, "compose-subject").get_attribute("value") == "Re: Plans"
    browser.find_element(By.ID, "compose-text").send_keys("Lunch at noon.")
    browser.find_element(By.ID, "compose-send").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Message sent"))
    bob = token_of(mail_server, BOB)

    def arrived() -> Any:
        _, page = api(mail_server, "GET", "/folders/INBOX/messages", token=bob)
        return [m for m in page["messages"] if m["subject"] == "Re: Plans"]

    [summary] = eventually("the reply in bob's INBOX", arrived)
    _, reply = api(mail_server, "GET", f"/folders/INBOX/messages/{summary['uid']}", token=bob)
    assert reply["in_reply_to"] == "<plans-1@example.org>"
    assert "Lunch at noon." in reply["text"] and "> What are the plans?" in reply["text"]
    _, inbox = api(mail_server, "GET", "/folders/INBOX/messages",
                   token=token_of(mail_server, ALICE))
    [mine] = inbox["messages"]
    assert "\\Answered" in mine["flags"]


def test_forward_keeps_the_attachments(mail_server, browser) -> None:
    """Forward sends the original's text and its attachments on to bob."""
    original = text_message("The contract", "Please see the attached contract.\n")
    original.add_attachment(b"%PDF-1.4 not really\n", maintype="application",
                            subtype="pdf", filename="contract.pdf")
    deliver(mail_server, original)
    sign_in(browser, mail_server)
    message_item(browser, "The contract").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "attachments"),
                                                         "contract.pdf"))
    browser.find_element(By.ID, "forward-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to"))).send_keys(BOB)
    assert "contract.pdf" in browser.find_element(By.ID, "compose-forwarded").text
    browser.find_element(By.ID, "compose-send").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Message sent"))
    bob = token_of(mail_server, BOB)

    def arrived() -> Any:
        _, page = api(mail_server, "GET", "/folders/INBOX/messages", token=bob)
        return [m for m in page["messages"] if m["subject"] == "Fwd: The contract"]

    [summary] = eventually("the forwarded message in bob's INBOX", arrived)
    _, forwarded = api(mail_server, "GET", f"/folders/INBOX/messages/{summary['uid']}",
                       token=bob)
    assert "Please see the attached contract." in forwarded["text"]
    [part] = forwarded["attachments"]
    assert part["filename"] == "contract.pdf" and part["content_type"] == "application/pdf"
    request = urllib.request.Request(
        mail_server.url(f"/api/v1/folders/INBOX/messages/{summary['uid']}/attachments/"
                        f"{part['part']}"), headers={"Authorization": f"Bearer {bob}"})
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        assert answer.read() == b"%PDF-1.4 not really\n"
