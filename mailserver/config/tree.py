"""The whole configuration: :class:`Config`, one field per TOML section.

``Config()`` is the embedded defaults; :mod:`mailserver.config.load` builds one from a file.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from mailserver.config.policy import FilterConfig, MsgAuthConfig, SecurityConfig, TrackingConfig
from mailserver.config.servers import (
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

EMBEDDED = "embedded defaults"


@dataclass(frozen=True)
class Config:
    """The whole configuration; each field of a dataclass type is one TOML section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    log: LogConfig = field(default_factory=LogConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    msgauth: MsgAuthConfig = field(default_factory=MsgAuthConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    #: Where this configuration came from: a file path or "embedded defaults" (not a key).
    source: str = EMBEDDED


def _sections() -> dict[str, type]:
    """Section name -> section dataclass, in declaration order."""
    hints = typing.get_type_hints(Config)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(hints[f.name])
    }
