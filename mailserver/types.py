"""Frozen value types shared by every layer (a leaf: imports nothing from mailserver).

Interfaces speak these types; no lmdb, dnspython or Twisted object crosses an interface.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

#: IMAP system flags (RFC 9051 §2.3.2). ``\\Recent`` is session state, never stored.
SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
SYSTEM_FLAGS = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT})


class SpecialUse(enum.Enum):
    """RFC 6154 special-use attributes of the default folders."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    JUNK = "\\Junk"
    TRASH = "\\Trash"
    ARCHIVE = "\\Archive"
    ALL = "\\All"
    FLAGGED = "\\Flagged"


#: The folders every new account gets, with their special use (INBOX has none).
DEFAULT_FOLDERS: tuple[tuple[str, SpecialUse | None], ...] = (
    ("INBOX", None),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Junk", SpecialUse.JUNK),
    ("Trash", SpecialUse.TRASH),
    ("Archive", SpecialUse.ARCHIVE),
)

#: The hierarchy delimiter of folder names as the protocols show them.
DELIMITER = "/"


class FlagMode(enum.Enum):
    """How a STORE-like operation combines the given flags with the current ones."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Address:
    """An RFC 5321 mailbox: local part and domain (the domain is stored in lower-case A-label
    or U-label form as given by the parser; comparisons use :attr:`key`)."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The canonical lookup key: the local part as given, the domain lower-cased."""
        return f"{self.local}@{self.domain.lower()}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope of one message transaction.

    ``sender`` is ``None`` for the null reverse-path ``<>`` (bounces). ``params`` holds the
    validated ESMTP MAIL parameters (e.g. ``RET``, ``ENVID``, ``SMTPUTF8``, ``BODY``).
    ``queue_id`` is the id the SMTP server gives the transaction (its 250 reply and Received
    header name it; "" when the message did not come by SMTP), so the log events of every
    part that handles the message can be joined.
    """

    sender: Address | None
    helo: str = ""
    client_address: str = ""
    authenticated_as: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    received_at: float = 0.0
    queue_id: str = ""


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """The status of one folder, as SELECT/STATUS report it."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    exists: int
    unseen: int
    size: int
    special_use: SpecialUse | None = None
    subscribed: bool = True
    folder_id: int = 0
    #: RFC 8474 MAILBOXID: 1-255 of ``[A-Za-z0-9_-]``, kept across RENAME, never reused.
    mailbox_id: str = ""


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """An account's quota (RFC 9208): what it uses and its limits (None = unlimited), in
    bytes (STORAGE) and messages (MESSAGE)."""

    used_bytes: int
    used_messages: int
    limit_bytes: int | None = None
    limit_messages: int | None = None


@dataclass(frozen=True, slots=True)
class FlagInfo:
    """The mutable state of one message: what listing flags over a range returns."""

    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """The stored facts about one message in one folder.

    ``object_id`` identifies the message's bytes (RFC 8474 EMAILID): every folder the message
    sits in (its labels) shares it. ``envelope`` and ``bodystructure`` are the cached parse
    results of :mod:`mailserver.message.mime`; ``attachments`` lists attachment metadata.
    """

    uid: int
    flags: frozenset[str]
    modseq: int
    size: int
    internaldate: float
    object_id: str
    savedate: float = 0.0
    envelope: Mapping[str, object] = field(default_factory=dict)
    bodystructure: Mapping[str, object] = field(default_factory=dict)
    attachments: tuple[Mapping[str, object], ...] = ()
    spam: SpamVerdict | None = None
    #: IMAP items as rendered at delivery (``meta="rendered"``; see
    #: :mod:`mailserver.message.imap_render`); empty when the store keeps none.
    rendered: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """A classifier's verdict on a message: score, threshold decision and the reasons."""

    score: float
    is_spam: bool
    reasons: tuple[str, ...] = ()
    classifier: str = ""


class Action(enum.Enum):
    """What a filter check decides, from mildest to strongest (the pipeline keeps the
    strongest): deliver, deliver into Junk, refuse for now (4xx), refuse (5xx)."""

    ACCEPT = 0
    QUARANTINE = 1
    TEMPFAIL = 2
    REJECT = 3


@dataclass(frozen=True, slots=True)
class Peer:
    """The SMTP client as the filter checks see it: its IP address, what it said in HELO,
    and whether it authenticated (``authenticated_as``) or uses TLS."""

    address: str
    helo: str = ""
    tls: bool = False
    authenticated_as: str | None = None
    #: Which listener it came in on: ``"smtp"`` (port 25) or ``"submission"``.
    listener: str = "smtp"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's answer in one SMTP phase.

    ``score`` is in points, SpamAssassin style (positive = spammy); the pipeline adds the
    points of every verdict of a message and quarantines or refuses above its thresholds.
    ``rule`` names the signal in the ``X-Spam-Status`` header (e.g. ``RDNS_NONE``).
    ``code``/``enhanced``/``text`` override the reply for TEMPFAIL/REJECT. ``trusted`` says
    the sender is allow-listed: the pipeline skips later checks that honour allow lists.
    ``headers`` are fields to add to the message; ``spam`` a classifier verdict to store.
    """

    action: Action = Action.ACCEPT
    check: str = ""
    rule: str = ""
    score: float = 0.0
    reason: str = ""
    code: int = 0
    enhanced: str = ""
    text: str = ""
    trusted: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    spam: SpamVerdict | None = None


#: The verdict of a check with nothing to say.
ACCEPT = Verdict()


class Role(enum.Enum):
    """Account roles, from least to most powerful."""

    USER = "user"
    DOMAIN_ADMIN = "domain-admin"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    """A mail account as the directory keeps it. ``password_hash`` is a bcrypt (or argon2)
    hash; it never leaves the directory in logs or replies."""

    address: str
    password_hash: str
    roles: frozenset[Role] = frozenset({Role.USER})
    created: float = 0.0
    quota_bytes: int = 0
    display_name: str = ""
    admin_domains: frozenset[str] = frozenset()
    #: POP3 "leave mail on the server" for this account; None: the [pop3] default.
    pop3_leave_on_server: bool | None = None


@dataclass(frozen=True, slots=True)
class Domain:
    """A domain this server accepts mail for."""

    name: str
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class Alias:
    """``source`` (``local@domain``, or ``@domain`` for a catch-all) forwards to ``targets``."""

    source: str
    targets: tuple[str, ...]


class RecipientState(enum.Enum):
    """Where one queued recipient stands (the spool's per-recipient state)."""

    PENDING = "pending"  # not tried yet
    DEFERRED = "deferred"  # tried; a temporary failure; tried again later
    DELIVERED = "delivered"  # a remote server (or the local store) took it
    FAILED = "failed"  # permanently refused, or given up on: bounced to the sender


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    """One recipient of a queued message, with its DSN parameters and delivery history."""

    address: str
    params: Mapping[str, str] = field(default_factory=dict)
    state: RecipientState = RecipientState.PENDING
    last_reply: str = ""
    attempts: int = 0
    updated: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in (RecipientState.DELIVERED, RecipientState.FAILED)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A message in the outbound spool: envelope, recipients and schedule."""

    queue_id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[QueuedRecipient, ...]
    size: int
    created: float
    next_attempt: float
    params: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 0
    held: bool = False
    authenticated_as: str | None = None
    warned: bool = False  # a "delayed" DSN was sent

    @property
    def pending(self) -> tuple[QueuedRecipient, ...]:
        """Recipients still to deliver."""
        return tuple(r for r in self.recipients if not r.done)
