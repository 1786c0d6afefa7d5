"""The configuration tree: every key, its type, default and meaning live in this package.

A config file is TOML (read with :mod:`tomllib`). Every section and key is optional; a missing
key takes the default given here, and ``load(None)`` runs entirely on these embedded defaults.
``etc/mailserver.toml.example`` is generated from the section dataclasses by
:func:`render_example` (``mailserver config example``) and a test keeps the two in step.

Every problem raises :class:`mailserver.errors.ConfigError` naming the dotted key and the fix,
so that start-up and ``mailserver config check`` can report it as one line.

This module is the public face; the parts live in modules named for what they do:

- :mod:`~mailserver.config.checks`: the value checks and :func:`_key`, which declares a key;
- :mod:`~mailserver.config.servers`: the sections of the process and its listeners
  ([server], [tls], [store], [auth], [smtp], [submission], [imap], [pop3], [delivery],
  [http], [log]);
- :mod:`~mailserver.config.policy`: [security], [msgauth], [filter], [tracking];
- :mod:`~mailserver.config.tree`: :class:`Config`, one field per section;
- :mod:`~mailserver.config.load`: :func:`load`, :func:`loads`, :func:`from_mapping`;
- :mod:`~mailserver.config.example`: :func:`render_example`.

To add a key: add a field with :func:`_key` (default, one-line doc, optional check) to its
section dataclass, then regenerate the example. To add a section: add a frozen dataclass and a
field of that type on :class:`Config`.
"""

from __future__ import annotations

from mailserver.config.checks import (
    Check,
    endpoint_problem,
)
from mailserver.config.example import render_example
from mailserver.config.load import (
    from_mapping,
    load,
    loads,
)
from mailserver.config.policy import FilterConfig, MsgAuthConfig, SecurityConfig, TrackingConfig
from mailserver.config.servers import (
    LOG_FORMATS,
    LOG_LEVELS,
    TRACE_LISTENERS,
    AuthConfig,
    DeliveryConfig,
    HTTPConfig,
    IMAPConfig,
    LogConfig,
    POP3Config,
    ServerConfig,
    SMTPConfig,
    StoreConfig,
    SubmissionConfig,
    TLSConfig,
)
from mailserver.config.tree import EMBEDDED, Config

__all__ = [
    "EMBEDDED",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TRACE_LISTENERS",
    "AuthConfig",
    "Check",
    "Config",
    "DeliveryConfig",
    "FilterConfig",
    "HTTPConfig",
    "IMAPConfig",
    "LogConfig",
    "MsgAuthConfig",
    "POP3Config",
    "SMTPConfig",
    "SecurityConfig",
    "ServerConfig",
    "StoreConfig",
    "SubmissionConfig",
    "TLSConfig",
    "TrackingConfig",
    "endpoint_problem",
    "from_mapping",
    "load",
    "loads",
    "render_example",
]
