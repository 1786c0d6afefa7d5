"""The web mail page's not-spam report, in a real headless Chromium against the real
server: in Junk, "Not spam" reports the message through ``POST .../spam`` and moves it back
to INBOX (see :mod:`tests.web.page_harness`)."""

from __future__ import annotations

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    ALICE,
    By,
    api,
    deliver,
    ec,
    eventually,
    folder_page,
    message_item,
    open_folder,
    page_problems,
    sign_in,
    text_message,
    token_of,
    wait,
)

pytestmark = pytest.mark.e2e

# The harness's fixtures (pytest finds them by their names in this module).
browser = page_harness.browser
mail_server = page_harness.mail_server
server_process = page_harness.server_process


def test_not_spam_moves_a_message_from_junk_back_to_inbox(mail_server, browser) -> None:
    """A message in Junk offers "Not spam" (and no "Move to Junk"); clicking it takes the
    message out of the Junk list and back into INBOX, where it carries the user's
    not-spam verdict (what the classifiers learn from)."""
    deliver(mail_server, text_message("Team dinner", "Friday at eight.\n"))
    token = token_of(mail_server, ALICE)
    [summary] = folder_page(mail_server, token, "INBOX")
    status, judged = api(mail_server, "POST", f"/folders/INBOX/messages/{summary['uid']}/spam",
                         {"is_spam": True}, token=token)
    assert status == 200 and judged["folder"] == "Junk"
    sign_in(browser, mail_server)
    open_folder(browser, "Junk")
    item = message_item(browser, "Team dinner")
    item.click()
    button = wait(browser).until(ec.element_to_be_clickable((By.ID, "not-spam-button")))
    assert not browser.find_element(By.ID, "junk-button").is_displayed()
    button.click()
    wait(browser).until(ec.staleness_of(item))
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"),
                                                         "Not spam: moved to INBOX"))
    assert browser.find_elements(By.CSS_SELECTOR, "#messages li") == []
    assert folder_page(mail_server, token, "Junk") == []
    [back] = eventually("the user's verdict on the message in INBOX", lambda: [
        m for m in folder_page(mail_server, token, "INBOX")
        if m["spam"] and m["spam"]["classifier"] == "user"])
    assert back["subject"] == "Team dinner" and back["spam"]["is_spam"] is False
    open_folder(browser, "INBOX")
    message_item(browser, "Team dinner").click()
    wait(browser).until(ec.element_to_be_clickable((By.ID, "junk-button")))
    assert not browser.find_element(By.ID, "not-spam-button").is_displayed()
    assert page_problems(browser) == []
