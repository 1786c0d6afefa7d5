"""The web mail page shows hostile header text as text, in a real headless Chromium
against the real server: markup in a subject, a sender's name, a plain-text body or an
attachment's file name is never parsed as HTML, so it runs nothing (see
:mod:`tests.web.page_harness`; the hostile HTML body is
``tests/web/test_webmail_browser.py``'s)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    ALICE,
    By,
    deliver,
    ec,
    page_problems,
    sign_in,
    wait,
)

pytestmark = pytest.mark.e2e

# The harness's fixtures (pytest finds them by their names in this module).
browser = page_harness.browser
mail_server = page_harness.mail_server
server_process = page_harness.server_process

SUBJECT = "<img src=x onerror=\"document.title='pwned-subject'\">Invoice"
NAME = "<script>document.title='pwned-from'</script>Mallory"
BODY = "<b>bold?</b><img src=x onerror=\"document.title='pwned-body'\">\n"
FILENAME = "\"><svg onload=\"document.title='pwned-file'\">.html"


def test_markup_in_headers_text_and_file_names_is_shown_as_text(mail_server, browser) -> None:
    """The list and the reader show the subject, sender and body characters as they are
    (no element is made of them), the attachment's file name is plain link text, and the
    page's title and console stay clean."""
    message = EmailMessage()
    message["From"] = f'"{NAME}" <mallory@example.net>'
    message["To"] = ALICE
    message["Subject"] = SUBJECT
    message["Message-ID"] = "<hostile-headers@example.net>"
    message.set_content(BODY)
    message.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html",
                           filename=FILENAME)
    deliver(mail_server, message)
    sign_in(browser, mail_server)
    item = wait(browser).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#messages li")))
    assert item.find_element(By.CLASS_NAME, "subject").text == SUBJECT
    assert item.find_element(By.CLASS_NAME, "from").text == NAME
    item.click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "reader-text"), "bold?"))
    assert browser.find_element(By.ID, "reader-subject").text == SUBJECT
    assert NAME in browser.find_element(By.ID, "reader-from").text
    assert browser.find_element(By.ID, "reader-text").text == BODY.strip()
    [link] = browser.find_elements(By.CSS_SELECTOR, "#attachments a")
    assert link.text.startswith(FILENAME)
    for where in ("messages", "reader-message"):
        pane = browser.find_element(By.ID, where)
        for tag in ("img", "script", "svg", "b"):
            assert pane.find_elements(By.TAG_NAME, tag) == []
    assert browser.title == "Mail"
    assert page_problems(browser) == []
