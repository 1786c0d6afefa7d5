"""The [msgauth] config section: on by default, refusing DMARC p=reject failures, and a bad
value is one line naming the key and the fix."""

from __future__ import annotations

import pytest

from mailserver.config import Config, loads
from mailserver.errors import ConfigError


def test_defaults() -> None:
    """Checks are on, p=reject failures refused, the host name is the authserv-id."""
    msgauth = Config().msgauth
    assert (msgauth.enabled, msgauth.dmarc_reject, msgauth.authserv_id) == (True, "refuse", "")
    assert msgauth.timeout == 20.0


def test_quarantine_and_authserv_id() -> None:
    """The keys are read from [msgauth]."""
    config = loads('[msgauth]\ndmarc_reject = "quarantine"\nauthserv_id = "mx1.example.org"\n')
    assert (config.msgauth.dmarc_reject, config.msgauth.authserv_id) == (
        "quarantine",
        "mx1.example.org",
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('dmarc_reject = "drop"', "msgauth.dmarc_reject"),
        ('authserv_id = "mx; spf=pass"', "msgauth.authserv_id"),
        ("timeout = 0", "msgauth.timeout"),
        ("enabled = 1", "msgauth.enabled"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    """A bad value is a ConfigError naming the dotted key."""
    with pytest.raises(ConfigError) as error:
        loads(f"[msgauth]\n{text}\n")
    assert error.value.key == key
