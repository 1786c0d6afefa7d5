"""Drafts on the web mail page, in a real headless Chromium against the real server: save
a draft, save it again, reopen it from the Drafts folder and send it (see
:mod:`tests.web.page_harness`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    ALICE,
    BOB,
    By,
    api,
    ec,
    eventually,
    folder_page,
    message_item,
    open_folder,
    page_problems,
    sign_in,
    token_of,
    wait,
)

pytestmark = pytest.mark.e2e

# The harness's fixtures (pytest finds them by their names in this module).
browser = page_harness.browser
mail_server = page_harness.mail_server
server_process = page_harness.server_process


def _drafts(server: Any, token: str) -> list[dict[str, Any]]:
    return folder_page(server, token, "Drafts")


def test_save_a_draft_reopen_it_and_send_it(mail_server, browser, tmp_path) -> None:
    """"Save draft" stores the message in Drafts flagged \\Draft (its attachment and Bcc
    kept); saving again replaces it (one draft, a new UID). Reopened from the Drafts folder
    with "Edit draft", the form holds what was saved; sending it delivers the final text
    with the attachment to bob (and the Bcc copy to alice, with no Bcc header), files a
    copy in Sent, and the draft is gone."""
    notes = tmp_path / "agenda.txt"
    notes.write_text("1. drafts\n2. live updates\n")
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "compose-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to"))).send_keys(BOB)
    browser.find_element(By.ID, "compose-bcc").send_keys(ALICE)
    browser.find_element(By.ID, "compose-subject").send_keys("Agenda for Monday")
    browser.find_element(By.ID, "compose-text").send_keys("First thoughts.")
    browser.find_element(By.ID, "compose-files").send_keys(str(notes))
    browser.find_element(By.ID, "compose-save").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"),
                                                         "Draft saved in Drafts"))
    token = token_of(mail_server, ALICE)
    [first] = _drafts(mail_server, token)
    assert first["subject"] == "Agenda for Monday" and "\\Draft" in first["flags"]
    assert first["has_attachments"]
    # The attachment now rides on the saved draft; saving again replaces the draft.
    assert "agenda.txt" in browser.find_element(By.ID, "compose-forwarded").text
    browser.find_element(By.ID, "compose-text").send_keys(" Second thoughts.")
    browser.find_element(By.ID, "compose-save").click()
    eventually("the replaced draft",
               lambda: [d["uid"] for d in _drafts(mail_server, token)] not in ([], [first["uid"]]))
    [second] = _drafts(mail_server, token)
    assert second["uid"] > first["uid"] and second["has_attachments"]
    browser.find_element(By.ID, "compose-cancel").click()
    assert not browser.find_element(By.ID, "compose").is_displayed()

    open_folder(browser, "Drafts")
    message_item(browser, "Agenda for Monday").click()
    edit = wait(browser).until(ec.element_to_be_clickable((By.ID, "edit-draft-button")))
    assert not browser.find_element(By.ID, "reply-button").is_displayed()
    edit.click()
    to = wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to")))
    assert to.get_attribute("value") == BOB
    assert browser.find_element(By.ID, "compose-bcc").get_attribute("value") == ALICE
    assert browser.find_element(By.ID, "compose-subject").get_attribute(
        "value") == "Agenda for Monday"
    assert browser.find_element(By.ID, "compose-text").get_attribute(
        "value") == "First thoughts. Second thoughts."
    assert "agenda.txt" in browser.find_element(By.ID, "compose-forwarded").text
    browser.find_element(By.ID, "compose-text").send_keys(" Final.")
    browser.find_element(By.ID, "compose-send").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Message sent"))

    bob = token_of(mail_server, BOB)
    [arrived] = eventually("the message in bob's INBOX", lambda: [
        m for m in folder_page(mail_server, bob, "INBOX") if m["subject"] == "Agenda for Monday"])
    status, message = api(mail_server, "GET", f"/folders/INBOX/messages/{arrived['uid']}",
                          token=bob)
    assert status == 200, message
    assert message["text"].rstrip("\n") == "First thoughts. Second thoughts. Final."
    assert [a["filename"] for a in message["attachments"]] == ["agenda.txt"]
    assert all(h["name"].lower() != "bcc" for h in message["headers"])
    [copy] = eventually("the Bcc copy in alice's INBOX", lambda: [
        m for m in folder_page(mail_server, token, "INBOX") if m["subject"] == "Agenda for Monday"])
    assert copy["from"][0]["address"] == ALICE
    assert _drafts(mail_server, token) == []
    assert [m["subject"] for m in folder_page(mail_server, token, "Sent")] == ["Agenda for Monday"]
    # The live stream takes the sent draft out of the open Drafts list.
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages li") == [])
    assert page_problems(browser) == []


def test_a_draft_needs_no_recipient_but_sending_does(mail_server, browser) -> None:
    """A draft with no recipient yet is saved; sending it to something that is not an
    address keeps the form open with the API's reason naming it, and the draft stays."""
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "compose-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-subject"))).send_keys(
        "Idea")
    browser.find_element(By.ID, "compose-text").send_keys("Write this up later.")
    browser.find_element(By.ID, "compose-save").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "Draft saved"))
    browser.find_element(By.ID, "compose-to").send_keys("bob at example.org")
    browser.find_element(By.ID, "compose-send").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "compose-error"),
                                                         "'bob at example.org' in to"))
    assert "is not an address" in browser.find_element(By.ID, "compose-error").text
    assert browser.find_element(By.ID, "compose").is_displayed()
    token = token_of(mail_server, ALICE)
    assert [d["subject"] for d in _drafts(mail_server, token)] == ["Idea"]
    # The one console error is the refused send's 400.
    assert all("/api/v1/send" in m and "400" in m for m in page_problems(browser))
