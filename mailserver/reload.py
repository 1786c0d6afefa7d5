"""SIGHUP: reload the config file's reloadable keys without dropping a session.

What a reload does (``kill -HUP <pid>``; :meth:`mailserver.service.MailService.reload`):

1. The certificates are read again (``mailserver.tls``; a broken file keeps the old ones).
2. The config file the server was started with is read and checked again. A file that no
   longer loads (syntax, a bad value) is logged with the key and the fix, and the running
   config stays as it was.
3. Each changed key in :data:`RELOADABLE` is applied: the free-space reserve at once, the
   listener limits and timeouts to every connection accepted from now on (a session keeps
   the limits it started with, so nobody is cut off by a reload). A changed key that needs a
   restart (listeners, the data directory, the index, TLS paths ...) is named in the log
   line and keeps its running value.
4. Users, domains, aliases, passwords and quotas need no reload: they live in the index,
   which every session reads live, so ``mailserver user add`` takes effect at once.

One log line reports the outcome: ``config reloaded from PATH: applied [...]; needs a
restart: [...]``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from mailserver.config import EMBEDDED, Config, load
from mailserver.errors import ConfigError
from mailserver.imap.factory import IMAPFactory
from mailserver.pop3.factory import POP3Factory
from mailserver.smtp.factory import SMTPFactory

if TYPE_CHECKING:
    from mailserver.service import MailService

__all__ = ["RELOADABLE", "changed_keys", "reload_config"]

log = Logger(namespace="mailserver.reload")

#: SMTP policy fields that follow [smtp] on every SMTP listener (port 25 and submission).
_SMTP_FIELDS = {
    "max_line_length": "max_line_length",
    "command_timeout": "command_timeout",
    "data_timeout": "data_timeout",
    "min_data_rate": "min_data_rate",
    "max_connections": "max_connections",
    "max_connections_per_ip": "max_connections_per_ip",
    "helo_check": "helo_check",
    "vrfy": "vrfy",
    "bare_newline": "bare_newline",
}
#: [smtp] keys for the port-25 listener only; submission has its own [submission] ones.
_MX_ONLY = {"max_message_size": "max_message_size", "max_recipients": "max_recipients"}
_SUBMISSION_FIELDS = {"max_message_size": "max_message_size", "max_recipients": "max_recipients"}
_IMAP_FIELDS = {
    "idle_timeout": "idle_timeout",
    "max_literal": "max_literal",
    "max_connections": "max_connections",
    "max_connections_per_ip": "max_connections_per_ip",
}
_POP3_FIELDS = {
    "timeout": "timeout",
    "max_connections": "max_connections",
    "max_connections_per_ip": "max_connections_per_ip",
    "leave_on_server": "leave_on_server",
    "login_delay": "login_delay",
}

#: Every dotted key a SIGHUP applies to the running server.
RELOADABLE = frozenset(
    {"store.min_free_mb"}
    | {f"smtp.{key}" for key in (*_SMTP_FIELDS, *_MX_ONLY)}
    | {f"submission.{key}" for key in _SUBMISSION_FIELDS}
    | {f"imap.{key}" for key in _IMAP_FIELDS}
    | {f"pop3.{key}" for key in _POP3_FIELDS}
)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between ``old`` and ``new``, in config order."""
    changed = []
    for section in dataclasses.fields(Config):
        before, after = getattr(old, section.name), getattr(new, section.name)
        if not dataclasses.is_dataclass(before):
            continue
        for key in dataclasses.fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                changed.append(f"{section.name}.{key.name}")
    return changed


def _merged(old: Config, new: Config, keys: list[str]) -> Config:
    """``old`` with the values of ``keys`` taken from ``new``."""
    sections: dict[str, dict[str, Any]] = {}
    for dotted in keys:
        section, key = dotted.split(".", 1)
        sections.setdefault(section, {})[key] = getattr(getattr(new, section), key)
    return dataclasses.replace(
        old,
        **{
            section: dataclasses.replace(getattr(old, section), **values)
            for section, values in sections.items()
        },
    )


def _policy_changes(config: Config, section: str, fields: dict[str, str]) -> dict[str, Any]:
    """Policy field -> value for the keys ``fields`` maps from ``config``'s ``section``."""
    values = getattr(config, section)
    return {policy: getattr(values, key) for key, policy in fields.items()}


def apply(service: MailService, config: Config) -> None:
    """Put the reloadable values of ``config`` into the running ``service``: the reserve,
    and a new policy on each listener factory (used by the connections it accepts next)."""
    space = getattr(service.store, "free_space", None)
    if space is not None:
        space.minimum = config.store.min_free_mb * 1024 * 1024
    smtp = _policy_changes(config, "smtp", _SMTP_FIELDS)
    mx = {**smtp, **_policy_changes(config, "smtp", _MX_ONLY)}
    submission = {**smtp, **_policy_changes(config, "submission", _SUBMISSION_FIELDS)}
    imap = _policy_changes(config, "imap", _IMAP_FIELDS)
    pop3 = _policy_changes(config, "pop3", _POP3_FIELDS)
    for factory in service.factories:
        if isinstance(factory, SMTPFactory):
            changes = submission if factory.policy.require_auth else mx
        elif isinstance(factory, IMAPFactory):
            changes = imap
        elif isinstance(factory, POP3Factory):
            changes = pop3
        else:
            continue
        factory.policy = dataclasses.replace(factory.policy, **changes)


def reload_config(service: MailService) -> bool:
    """Read the config file again and apply what may change while running (see the module
    docstring). True when the file loaded; False (and the running config kept) otherwise."""
    running: Config = service.config
    if running.source == EMBEDDED:
        log.info("config reload: running on embedded defaults, no file to read")
        return False
    try:
        fresh = load(running.source)
    except ConfigError as error:
        log.error("config reload failed, keeping the running config: {error}", error=error)
        return False
    changed = changed_keys(running, fresh)
    applied = [key for key in changed if key in RELOADABLE]
    restart = [key for key in changed if key not in RELOADABLE]
    service.config = _merged(running, fresh, applied)
    apply(service, service.config)
    log.info(
        "config reloaded from {path}: applied [{applied}]; needs a restart: [{restart}]",
        path=running.source,
        applied=", ".join(applied),
        restart=", ".join(restart),
    )
    return True
