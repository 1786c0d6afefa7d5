"""The web mail page when its session ends elsewhere, in a real headless Chromium against
the real server (see :mod:`tests.web.page_harness`)."""

from __future__ import annotations

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    By,
    deliver,
    ec,
    message_item,
    page_problems,
    sign_in,
    text_message,
    wait,
)

pytestmark = pytest.mark.e2e

# The harness's fixtures (pytest finds them by their names in this module).
browser = page_harness.browser
mail_server = page_harness.mail_server
server_process = page_harness.server_process


def test_signing_out_in_another_tab_ends_this_one(mail_server, browser) -> None:
    """Two tabs share the session cookie: the second opens signed in, and signing out
    there sends the first back to the sign-in form at its next request, with no message
    shown."""
    deliver(mail_server, text_message("Still here?", "body\n"))
    sign_in(browser, mail_server)
    item = message_item(browser, "Still here?")
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(mail_server.url("/mail/"))
    wait(browser).until(ec.element_to_be_clickable((By.ID, "signout-button"))).click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "username")))
    browser.close()
    browser.switch_to.window(first)
    item.click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "password")))
    assert not browser.find_element(By.ID, "app-view").is_displayed()
    assert browser.find_element(By.ID, "live").get_attribute("textContent") == "○ offline"
    # The refusal that ended it: the message read answered 401.
    assert all("401" in m for m in page_problems(browser))
