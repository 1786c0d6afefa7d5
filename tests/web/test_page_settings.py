"""The web mail page's two-factor settings, in a real headless Chromium against the real
server: enrol an authenticator app from Settings, then signing in asks for its code; a
recovery code switches it off (see :mod:`tests.web.page_harness`)."""

from __future__ import annotations

import time

import pytest

from tests.web import page_harness
from tests.web.page_harness import (
    ALICE,
    PASSWORD,
    By,
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


def test_enrol_totp_in_settings_then_sign_in_needs_the_code(mail_server, browser) -> None:
    """Settings -> "Set up an authenticator app" shows the secret and its otpauth URI; a
    wrong code is refused with the reason; the right one turns two-factor on and shows the
    recovery codes once. After signing out, the password alone brings up the code field,
    and the app's code opens the page. A recovery code then switches it off again, and the
    password alone opens the page."""
    pyotp = pytest.importorskip("pyotp", reason="pyotp is not installed")
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "settings-button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "totp-state"), "Off."))
    browser.find_element(By.ID, "totp-enrol").click()
    secret = wait(browser).until(ec.visibility_of_element_located((By.ID, "totp-secret"))).text
    assert browser.find_element(By.ID, "totp-uri").text.startswith("otpauth://totp/")
    totp = pyotp.TOTP(secret)
    wrong = "000000" if totp.now() != "000000" else "111111"
    browser.find_element(By.ID, "totp-code").send_keys(wrong)
    browser.find_element(By.CSS_SELECTOR, "#totp-confirm-form button").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "settings-error").text != "")
    assert browser.find_element(By.ID, "totp-confirm-form").is_displayed()
    code = browser.find_element(By.ID, "totp-code")
    code.clear()
    code.send_keys(totp.at(time.time() - 30))  # the current code is kept for signing in
    browser.find_element(By.CSS_SELECTOR, "#totp-confirm-form button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "totp-state"), "On"))
    items = browser.find_elements(By.CSS_SELECTOR, "#recovery-codes li")
    assert len(items) > 1 and "Recovery codes" in items[0].text
    recovery = [item.text for item in items[1:]]
    assert not browser.find_element(By.ID, "totp-enrol").is_displayed()
    browser.find_element(By.ID, "settings-close").click()

    browser.find_element(By.ID, "signout-button").click()
    username = wait(browser).until(ec.visibility_of_element_located((By.ID, "username")))
    assert username.get_attribute("value") == ALICE  # kept for the next sign-in
    assert browser.find_element(By.ID, "password").get_attribute("value") == ""
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin-button").click()
    field = wait(browser).until(ec.visibility_of_element_located((By.ID, "totp")))
    assert not browser.find_element(By.ID, "app-view").is_displayed()
    field.send_keys(totp.now())
    browser.find_element(By.ID, "signin-button").click()
    wait(browser).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]')))

    # Switched off again with a recovery code: the password alone opens the page.
    browser.find_element(By.ID, "settings-button").click()
    off = wait(browser).until(ec.visibility_of_element_located((By.ID, "totp-disable-code")))
    off.send_keys(recovery[0])
    browser.find_element(By.CSS_SELECTOR, "#totp-disable-form button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "totp-state"), "Off."))
    assert not browser.find_element(By.ID, "totp-disable-form").is_displayed()
    assert browser.find_element(By.ID, "totp-enrol").is_displayed()
    browser.find_element(By.ID, "settings-close").click()
    browser.find_element(By.ID, "signout-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "password"))).send_keys(PASSWORD)
    browser.find_element(By.ID, "signin-button").click()
    wait(browser).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, '#folders li[data-folder="INBOX"]')))
    # The expected refusals: the wrong code, and the sign-in that lacked one.
    assert all(("/me/totp/confirm" in m and "400" in m) or ("/auth/session" in m and "401" in m)
               for m in page_problems(browser))
