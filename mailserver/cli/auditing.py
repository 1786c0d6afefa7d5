"""The audit trail of the command line: every command that changes something is recorded
once, in one place, after it ran (who: the operating-system user; where: ``cli``).

:data:`AUDITED` maps a handler (``module.function``) to its audit event; read-only verbs
(list, show, tail, search, check, example) are absent and never recorded. Arguments are
recorded as given; secrets never are, because no command takes a secret on its command line
(passwords come from a prompt or stdin, app passwords and tokens are printed, not read).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Any

from mailserver.auth import audit
from mailserver.auth.audit import AuditLog
from mailserver.cli.common import load_config

#: handler -> audit event
AUDITED: dict[str, str] = {
    "mailserver.cli.domain.add_domain": audit.ADMIN_ACTION,
    "mailserver.cli.domain.delete_domain": audit.ADMIN_ACTION,
    "mailserver.cli.user.add_user": audit.ADMIN_ACTION,
    "mailserver.cli.user.delete_user": audit.ADMIN_ACTION,
    "mailserver.cli.user.set_role": audit.ADMIN_ACTION,
    "mailserver.cli.user.set_quota": audit.ADMIN_ACTION,
    "mailserver.cli.user.set_pop3": audit.ADMIN_ACTION,
    "mailserver.cli.user.change_password": audit.PASSWORD_CHANGED,
    "mailserver.cli.user.add_app_password": audit.APP_PASSWORD_ADDED,
    "mailserver.cli.user.revoke_app_password": audit.APP_PASSWORD_REVOKED,
    "mailserver.cli.user.enable_totp": audit.TOTP_ENABLED,
    "mailserver.cli.user.disable_totp": audit.TOTP_DISABLED,
    "mailserver.cli.user.issue_token": audit.ADMIN_ACTION,
    "mailserver.cli.user.revoke_token": audit.ADMIN_ACTION,
    "mailserver.cli.alias.add_alias": audit.ADMIN_ACTION,
    "mailserver.cli.alias.delete_alias": audit.ADMIN_ACTION,
    "mailserver.cli.reindex.run_reindex": audit.ADMIN_ACTION,
    "mailserver.cli.filter.allow_entry": audit.ADMIN_ACTION,
    "mailserver.cli.filter.block_entry": audit.ADMIN_ACTION,
    "mailserver.cli.filter.unlist_entry": audit.ADMIN_ACTION,
    "mailserver.cli.filter.prune_greylist": audit.ADMIN_ACTION,
    "mailserver.cli.spam.train": audit.ADMIN_ACTION,
    "mailserver.cli.queue.retry_entry": audit.QUEUE_ACTION,
    "mailserver.cli.queue.hold_entry": audit.QUEUE_ACTION,
    "mailserver.cli.queue.release_entry": audit.QUEUE_ACTION,
    "mailserver.cli.queue.delete_entry": audit.QUEUE_ACTION,
    "mailserver.cli.queue.flush_queue": audit.QUEUE_ACTION,
    "mailserver.cli.dkim.keygen": audit.ADMIN_ACTION,
    "mailserver.cli.dkim.rotate": audit.ADMIN_ACTION,
    "mailserver.cli.dkim.remove": audit.ADMIN_ACTION,
    "mailserver.cli.dmarc.import_reports": audit.ADMIN_ACTION,
}


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _who(args: argparse.Namespace) -> str:
    acting_as = getattr(args, "acting_as", None)
    if acting_as:
        return f"{acting_as} (via the command line, run by {_operator()})"
    return f"{_operator()} (operator)"


def record(args: argparse.Namespace, argv: Sequence[str], status: int) -> None:
    """Write the audit line for a command that changes something; never fails the command
    (a problem with the audit log is reported on stderr)."""
    handler: Any = getattr(args, "handler", None)
    event = AUDITED.get(f"{getattr(handler, '__module__', '')}.{getattr(handler, '__name__', '')}")
    if event is None:
        return
    try:
        config = load_config(args)
        log = AuditLog(
            config.security.audit_path(config.server.data_path),
            max_bytes=config.security.audit_max_bytes,
            keep=config.security.audit_keep,
            fsync=config.security.audit_fsync,
        )
        try:
            log.record(
                event,
                who=_who(args),
                where=audit.WHERE_CLI,
                outcome=audit.OK if status == 0 else audit.FAILED,
                command=" ".join(argv),
                status=status,
            )
        finally:
            log.close()
    except Exception as error:  # the command already ran; say so, do not hide its result
        print(f"note: could not write the audit log: {error}", file=sys.stderr)
