"""Differential test: the SMTP conformance dialogs against our MX listener and a private Postfix.

Postfix (tests/peers/postfix.py) is configured as the MX of example.org the way our test
listener is (tests/smtp/conftest.py): users alice and bob, postmaster an alias of alice,
``+`` sub-addresses, 100000-octet messages, at most 100 recipients, STARTTLS with a
self-signed certificate, no relaying for anyone (``mynetworks`` names no loopback address),
HELO/EHLO required before MAIL (``smtpd_helo_required``), bare LF refused
(``smtpd_forbid_bare_newline = reject``, the strict anti-smuggling setting), and accepted mail
discarded (``virtual_transport = discard``). Every
``rfc-conformance/dialogs/smtp/*.dialog`` whose ``# peers:`` header allows Postfix is played
against both, except the ``submission-*`` dialogs (they need AUTH, which Postfix takes from a
SASL back end this private instance does not have; see :data:`NOT_PORTABLE`). Responses are
normalised by ``rfc-conformance/differential.py`` (a reply is its code and enhanced code; a
multi-line reply counts once, so the EHLO keyword list is not compared) and compared step by
step; every remaining difference must be an allowed variation in
``rfc-conformance/variations.tsv``, and every recorded one must still occur.

Skips when Postfix is not installed or the suite does not run as root (Postfix's master needs
it).
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from mailserver.tls import ensure_self_signed
from tests.conformance import CONFORMANCE
from tests.peers.postfix import PostfixInstance, PostfixUnavailable, unavailable_reason
from tests.smtp.conftest import in_thread, smtp_policy, smtp_server
from tests.smtp.test_dialogs import DIALOGS, runner

if str(CONFORMANCE) not in sys.path:
    sys.path.insert(0, str(CONFORMANCE))  # rfc-conformance/ is a directory, not a package
import differential

__all__ = ["smtp_policy", "smtp_server"]  # fixtures re-used from tests/smtp/conftest.py

NOT_PORTABLE = {
    "submission-": "submission dialogs need AUTH; the private Postfix has no SASL back end",
}
PLAYED = [
    path
    for path in DIALOGS
    if runner.parse_dialog(path).plays_against("postfix")
    and not any(path.name.startswith(prefix) for prefix in NOT_PORTABLE)
]


def mx_settings(tls_dir: Path) -> dict[str, str]:
    """main.cf for an MX of example.org shaped like our test listener (module docstring)."""
    cert, key = ensure_self_signed(str(tls_dir), "postfix-peer.test")
    return {
        "myorigin": "example.org",
        "mynetworks": "192.0.2.1/32",  # TEST-NET: no loopback client may relay
        "smtpd_relay_restrictions": "reject_unauth_destination",
        "virtual_mailbox_domains": "example.org",
        "virtual_mailbox_maps": "inline:{ alice@example.org=alice/, bob@example.org=bob/ }",
        "virtual_alias_maps": "inline:{ postmaster@example.org=alice@example.org }",
        "virtual_transport": "discard",
        "recipient_delimiter": "+",
        "message_size_limit": "100000",
        "smtpd_recipient_limit": "100",
        "smtpd_helo_required": "yes",  # as ours: no mail transaction before HELO/EHLO
        "smtpd_forbid_bare_newline": "reject",  # as ours: a bare LF is refused (smuggling)
        "smtpd_forbid_bare_newline_exclusions": "",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
    }


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixInstance]:
    """One private Postfix MX for the module (see :func:`mx_settings`)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        instance = PostfixInstance()
        tls_dir = instance.root / "tls"
        tls_dir.mkdir()
        instance.settings.update(mx_settings(tls_dir))
        os.chown(tls_dir, 0, pwd.getpwnam("root").pw_gid)
        instance.start()
    except PostfixUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


@pytest.mark.parametrize("path", PLAYED, ids=[path.name for path in PLAYED])
@pytest_twisted.ensureDeferred
async def test_same_dialog_same_answers(smtp_server, postfix, path):
    """Both MXs answer the dialog alike, up to the allowed variations recorded in
    variations.tsv (and every variation recorded for it still occurs)."""
    dialog = differential.parse_dialog(path)
    ours = (smtp_server.host, smtp_server.port)
    theirs = (postfix.smtpd_host, postfix.smtpd_port)
    name = path.relative_to(CONFORMANCE).as_posix()
    result, found = await in_thread(differential.compare, dialog, name, ours, theirs)
    assert result.passed, result.summary()
    variations, _ = differential.load_variations()
    unexplained, stale = differential.judge(found, variations, name)
    assert not unexplained and not stale, differential.report(unexplained, stale)
