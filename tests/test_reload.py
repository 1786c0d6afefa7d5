"""SIGHUP config reload (mailserver/reload.py): which keys changed, that every reloadable key
is a real config key with a policy field behind it, and that a reload keeps the running value
of everything else. The real process is tests/e2e/test_sighup.py."""

from __future__ import annotations

import dataclasses

from mailserver import reload
from mailserver.config import Config, loads
from mailserver.imap.factory import IMAPPolicy
from mailserver.pop3.factory import POP3Policy
from mailserver.smtp.factory import SMTPPolicy


def test_every_reloadable_key_is_a_config_key():
    config = Config()
    for dotted in reload.RELOADABLE:
        section, key = dotted.split(".")
        assert hasattr(getattr(config, section), key), dotted


def test_every_mapped_policy_field_exists():
    for fields, policy in (
        (reload._SMTP_FIELDS, SMTPPolicy),
        (reload._MX_ONLY, SMTPPolicy),
        (reload._SUBMISSION_FIELDS, SMTPPolicy),
        (reload._IMAP_FIELDS, IMAPPolicy),
        (reload._POP3_FIELDS, POP3Policy),
    ):
        names = {f.name for f in dataclasses.fields(policy)}
        assert set(fields.values()) <= names, (policy, set(fields.values()) - names)


def test_changed_keys_and_merge_keep_what_needs_a_restart():
    old = loads('[server]\nhostname = "a.test"\n[store]\nmin_free_mb = 5\n')
    new = loads('[server]\nhostname = "b.test"\n[store]\nmin_free_mb = 7\n'
                '[smtp]\nmax_connections = 9\n')
    changed = reload.changed_keys(old, new)
    assert changed == ["server.hostname", "store.min_free_mb", "smtp.max_connections"]
    applied = [key for key in changed if key in reload.RELOADABLE]
    merged = reload._merged(old, new, applied)
    assert merged.server.hostname == "a.test"  # needs a restart: the running value stays
    assert (merged.store.min_free_mb, merged.smtp.max_connections) == (7, 9)
    assert reload.changed_keys(merged, new) == ["server.hostname"]
