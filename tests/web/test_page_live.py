"""The web mail page's live updates (Server-Sent Events from ``GET /api/v1/events``), in a
real headless Chromium against the real server: mail delivered by SMTP, and flag changes
and moves made elsewhere, show up in the open page without a reload (see
:mod:`tests.web.page_harness`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    ALICE,
    By,
    api,
    deliver,
    ec,
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

#: Set on the page's window before a change; still there after it proves no reload.
MARK = "window.__notReloaded = 'yes'"
MARKED = "return window.__notReloaded || null"


def folder_count(driver: Any, name: str) -> str | None:
    """The unseen count shown beside folder ``name`` ("" for none; None: no such folder)."""
    found = driver.execute_script(
        "for (const item of document.getElementById('folders').children)"
        "  if (item.dataset.folder === arguments[0])"
        "    return item.querySelector('.count').textContent;"
        "return null;", name)
    return None if found is None else str(found)


def test_mail_delivered_by_smtp_appears_without_reload(mail_server, browser) -> None:
    """With the INBOX open, a message delivered on port 25 appears at the top of the list,
    bold (unseen), and the INBOX's unseen count goes up, all without a reload."""
    deliver(mail_server, text_message("Already here", "old\n"))
    sign_in(browser, mail_server)
    message_item(browser, "Already here")
    assert folder_count(browser, "INBOX") == "1"
    browser.execute_script(MARK)
    deliver(mail_server, text_message("Fresh news", "It just arrived.\n"))
    item = message_item(browser, "Fresh news")
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#messages .subject")]
    assert subjects == ["Fresh news", "Already here"]
    assert "unseen" in item.get_attribute("class")
    wait(browser).until(lambda d: folder_count(d, "INBOX") == "2")
    assert browser.execute_script(MARKED) == "yes"
    item.click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "reader-text"),
                                                         "It just arrived."))
    wait(browser).until(lambda d: folder_count(d, "INBOX") == "1")
    assert browser.execute_script(MARKED) == "yes"
    assert page_problems(browser) == []


def test_flag_changes_and_moves_elsewhere_are_reflected(mail_server, browser) -> None:
    """Flags set through another client (here the API with a bearer token) show in the open
    list (read: no longer bold; flagged: starred); messages moved to Junk elsewhere leave
    the list (the one open in the reader closes there), and the folders' unseen counts
    follow, all without a reload."""
    deliver(mail_server, text_message("Keep me", "one\n", "<keep@example.net>"))
    deliver(mail_server, text_message("Move me", "two\n", "<move@example.net>"))
    deliver(mail_server, text_message("Unread", "three\n", "<unread@example.net>"))
    sign_in(browser, mail_server)
    keep = message_item(browser, "Keep me")
    move = message_item(browser, "Move me")
    assert "unseen" in keep.get_attribute("class")
    move.click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "reader-subject"), "Move me"))
    browser.execute_script(MARK)
    token = token_of(mail_server, ALICE)
    uids = {m["subject"]: m["uid"] for m in folder_page(mail_server, token, "INBOX")}

    status, _ = api(mail_server, "PATCH", f"/folders/INBOX/messages/{uids['Keep me']}",
                    {"flags_add": ["\\Seen", "\\Flagged"]}, token=token)
    assert status == 200
    wait(browser).until(lambda d: "flagged" in keep.get_attribute("class"))
    assert "unseen" not in keep.get_attribute("class")

    for subject in ("Move me", "Unread"):
        status, moved = api(mail_server, "POST",
                            f"/folders/INBOX/messages/{uids[subject]}/move", {"to": "Junk"},
                            token=token)
        assert status == 200 and moved["folder"] == "Junk"
    wait(browser).until(ec.staleness_of(move))
    wait(browser).until(ec.visibility_of_element_located((By.ID, "reader-empty")))
    wait(browser).until(lambda d: [e.text for e in d.find_elements(
        By.CSS_SELECTOR, "#messages .subject")] == ["Keep me"])
    wait(browser).until(lambda d: folder_count(d, "Junk") == "1")  # "Unread" is unseen
    assert folder_count(browser, "INBOX") == ""
    assert browser.execute_script(MARKED) == "yes"
    assert page_problems(browser) == []


def test_a_folder_renamed_elsewhere_is_renamed_in_the_page(mail_server, browser) -> None:
    """Renaming the open folder through another client replaces it in the folder list
    (no reload), and the page opens INBOX instead of the folder that is gone."""
    token = token_of(mail_server, ALICE)
    status, _ = api(mail_server, "POST", "/folders", {"name": "Projects"}, token=token)
    assert status == 201
    sign_in(browser, mail_server)
    open_folder(browser, "Projects")
    browser.execute_script(MARK)
    status, renamed = api(mail_server, "PATCH", "/folders/Projects", {"name": "Work"},
                          token=token)
    assert status == 200 and renamed["name"] == "Work"
    wait(browser).until(lambda d: folder_count(d, "Work") is not None)
    assert folder_count(browser, "Projects") is None
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "list-title"), "INBOX"))
    current = browser.find_element(By.CSS_SELECTOR, "#folders li.current")
    assert current.get_attribute("data-folder") == "INBOX"
    assert browser.execute_script(MARKED) == "yes"
    assert page_problems(browser) == []
