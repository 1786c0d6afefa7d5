"""The layout of the web mail page's panels and bar, in a real headless Chromium at
1280x800 against the real server: coarse rectangles (stable across machines) on the
screenshot, beside the three-pane check in ``tests/web/test_webmail_browser.py`` (see
:mod:`tests.web.page_harness`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web import page_harness
from tests.web.page_harness import By, ec, page_problems, sign_in, wait

pytestmark = pytest.mark.e2e

# The harness's fixtures (pytest finds them by their names in this module).
browser = page_harness.browser
mail_server = page_harness.mail_server
server_process = page_harness.server_process


def rect(driver: Any, selector: str) -> dict[str, float]:
    return dict(driver.find_element(By.CSS_SELECTOR, selector).rect)


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (outer["x"] - 1 <= inner["x"] and outer["y"] - 1 <= inner["y"]
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1)


def apart(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["x"] + a["width"] <= b["x"] + 1 or b["x"] + b["width"] <= a["x"] + 1
            or a["y"] + a["height"] <= b["y"] + 1 or b["y"] + b["height"] <= a["y"] + 1)


def screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bar_and_compose_panel_layout(mail_server, browser, tmp_path) -> None:
    """The bar holds its controls in one row, none overlapping, the live indicator among
    them; the compose panel opens below the bar, inside the window, with every field and
    its three buttons (Send, Save draft, Cancel) on screen and apart."""
    sign_in(browser, mail_server)
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    window = {"x": 0, "y": 0, "width": width, "height": height}
    bar = rect(browser, "header.bar")
    controls = [rect(browser, f"#{i}") for i in ("compose-button", "search-form", "live",
                                                 "whoami", "settings-button", "signout-button")]
    for n, control in enumerate(controls):
        assert inside(control, bar)
        for other in controls[n + 1:]:
            assert apart(control, other)
    browser.find_element(By.ID, "compose-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to")))
    screenshot(browser, tmp_path / "compose.png")
    panel = rect(browser, "#compose")
    assert inside(panel, window) and panel["y"] >= bar["y"] + bar["height"] - 1
    parts = [rect(browser, f"#{i}") for i in ("compose-to", "compose-cc", "compose-bcc",
                                              "compose-subject", "compose-text",
                                              "compose-files")]
    buttons = [rect(browser, f"#{i}") for i in ("compose-send", "compose-save",
                                                "compose-cancel")]
    for n, part in enumerate(parts + buttons):
        assert inside(part, panel), part
        for other in (parts + buttons)[n + 1:]:
            assert apart(part, other)
    assert buttons[0]["y"] == pytest.approx(buttons[1]["y"], abs=1) == buttons[2]["y"]
    assert page_problems(browser) == []


def test_settings_panel_layout(mail_server, browser, tmp_path) -> None:
    """Settings opens as a panel below the bar, inside the window, closing compose; its
    sections are on screen in order: app passwords, then two-factor sign-in."""
    sign_in(browser, mail_server)
    browser.find_element(By.ID, "compose-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "compose-to")))
    browser.find_element(By.ID, "settings-button").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "totp-enrol")))
    assert not browser.find_element(By.ID, "compose").is_displayed()
    screenshot(browser, tmp_path / "settings.png")
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    panel = rect(browser, "#settings")
    bar = rect(browser, "header.bar")
    assert inside(panel, {"x": 0, "y": 0, "width": width, "height": height})
    assert panel["y"] >= bar["y"] + bar["height"] - 1
    form, enrol = rect(browser, "#app-password-form"), rect(browser, "#totp-enrol")
    assert inside(form, panel) and inside(enrol, panel)
    assert form["y"] + form["height"] <= enrol["y"]
    assert page_problems(browser) == []
