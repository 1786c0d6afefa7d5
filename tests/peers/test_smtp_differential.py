"""Differential test: the SMTP conformance dialogs against our MX listener and a private Postfix.

Postfix (tests/peers/postfix.py) is configured as the MX of example.org the way our test
listener is (tests/smtp/conftest.py): users alice and bob, postmaster an alias of alice,
``+`` sub-addresses, 100000-octet messages, at most 100 recipients, STARTTLS with a
self-signed certificate, no relaying for anyone (``mynetworks`` names no loopback address),
HELO/EHLO required before MAIL (``smtpd_helo_required``), envelope addresses in angle
brackets (``strict_rfc821_envelopes``), bare LF refused
(``smtpd_forbid_bare_newline = reject``, the strict anti-smuggling setting), and accepted mail
discarded (``virtual_transport = discard``). Every
``rfc-conformance/dialogs/smtp/*.dialog`` whose ``# peers:`` header allows Postfix is played
against both. The ``submission-*`` dialogs are played against our submission listener and a
second Postfix doing submission (:func:`submission_settings`), which authenticates through a
private Dovecot's SASL socket (:class:`SaslDovecot`), as Debian's Postfix does. Responses are
normalised by ``rfc-conformance/differential.py`` (a reply is its code and enhanced code; a
multi-line reply counts once, so the EHLO keyword list is not compared) and compared step by
step, the whole dialog (Postfix's play goes on past an expectation it does not meet). Every
remaining difference must be a line of ``rfc-conformance/variations.tsv`` (a variation the
RFC text there allows, a Postfix deviation from a rule we keep, or a consequence of an earlier
difference), and every recorded one must still occur.

Skips when Postfix is not installed or the suite does not run as root (Postfix's master needs
it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from mailserver.tls import ensure_self_signed
from tests.conformance import CONFORMANCE
from tests.peers.dovecot import DovecotInstance, DovecotUnavailable
from tests.peers.dovecot import unavailable_reason as dovecot_unavailable
from tests.peers.postfix import PostfixInstance, PostfixUnavailable, unavailable_reason
from tests.smtp.conftest import in_thread, smtp_policy, smtp_server, submission_server
from tests.smtp.test_dialogs import DIALOGS, runner

if str(CONFORMANCE) not in sys.path:
    sys.path.insert(0, str(CONFORMANCE))  # rfc-conformance/ is a directory, not a package
import differential

# fixtures re-used from tests/smtp/conftest.py
__all__ = ["smtp_policy", "smtp_server", "submission_server"]

PLAYED = [
    path
    for path in DIALOGS
    if runner.parse_dialog(path).plays_against("postfix")
    and not path.name.startswith("submission-")
]
"""The MX dialogs; the ``submission-*`` ones go to the submission pair below."""


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
        "strict_rfc821_envelopes": "yes",  # as ours: MAIL FROM:<path>, not a bare address
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
        instance.start()
    except PostfixUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


@pytest.mark.parametrize("path", PLAYED, ids=[path.name for path in PLAYED])
@pytest_twisted.ensureDeferred
async def test_same_dialog_same_answers(
    smtp_server: Any, postfix: PostfixInstance, path: Path
) -> None:
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


# --- submission: Postfix with Dovecot's SASL back end -------------------------------------------


class SaslDovecot(DovecotInstance):
    """A private Dovecot that is only Postfix's SASL back end: its auth service also listens on
    :attr:`auth_socket`, which Postfix's smtpd (user ``postfix``) can open."""

    @property
    def auth_socket(self) -> Path:
        return self.root / "auth-client"

    def config_text(self) -> str:
        listener = (
            "service auth {\n  chroot =\n"
            f"  unix_listener {self.auth_socket} {{\n    mode = 0666\n  }}\n}}"
        )
        return super().config_text().replace("service auth {\n  chroot =\n}", listener)


def submission_settings(tls_dir: Path, auth_socket: Path) -> dict[str, str]:
    """main.cf for submission shaped like our submission listener: AUTH (PLAIN, LOGIN) only
    after STARTTLS, relaying for authenticated users only, a sender the user does not own
    refused at MAIL (``reject_sender_login_mismatch``, evaluated at once)."""
    settings = mx_settings(tls_dir)
    settings.update(
        {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": str(auth_socket),
            "smtpd_tls_auth_only": "yes",
            "smtpd_delay_reject": "no",
            "smtpd_sender_login_maps": (
                "inline:{ alice@example.org=alice@example.org, bob@example.org=bob@example.org }"
            ),
            "smtpd_sender_restrictions": "reject_sender_login_mismatch",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
        }
    )
    return settings


SUBMISSION = [
    path
    for path in DIALOGS
    if path.name.startswith("submission-") and runner.parse_dialog(path).plays_against("postfix")
]


@pytest.fixture(scope="module")
def postfix_submission() -> Iterator[PostfixInstance]:
    """A private Postfix doing submission, authenticating through a private Dovecot."""
    reason = unavailable_reason() or dovecot_unavailable()
    if reason:
        pytest.skip(reason)
    users = {"alice@example.org": "secret", "bob@example.org": "secret"}
    try:
        sasl = SaslDovecot(users=users)
        sasl.start()
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    try:
        instance = PostfixInstance()
        tls_dir = instance.root / "tls"
        tls_dir.mkdir()
        instance.settings.update(submission_settings(tls_dir, sasl.auth_socket))
        instance.start()
    except PostfixUnavailable as error:
        sasl.stop()
        pytest.skip(str(error))
    yield instance
    instance.stop()
    sasl.stop()


@pytest.mark.parametrize("path", SUBMISSION, ids=[path.name for path in SUBMISSION])
@pytest_twisted.ensureDeferred
async def test_same_submission_dialog_same_answers(
    submission_server: Any, postfix_submission: PostfixInstance, path: Path
) -> None:
    """Both submission servers answer the dialog alike, up to the allowed variations recorded
    in variations.tsv (and every variation recorded for it still occurs)."""
    dialog = differential.parse_dialog(path)
    ours = (submission_server.host, submission_server.port)
    theirs = (postfix_submission.smtpd_host, postfix_submission.smtpd_port)
    name = path.relative_to(CONFORMANCE).as_posix()
    result, found = await in_thread(differential.compare, dialog, name, ours, theirs)
    assert result.passed, result.summary()
    variations, _ = differential.load_variations()
    unexplained, stale = differential.judge(found, variations, name)
    assert not unexplained and not stale, differential.report(unexplained, stale)
