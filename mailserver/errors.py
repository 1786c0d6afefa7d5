"""Errors that carry an SMTP reply code, an enhanced status code and a temporary flag.

The client sees :attr:`MailError.text`; :attr:`MailError.detail` goes only to the log.
A leaf module: imports nothing from mailserver.
"""

from __future__ import annotations


class MailError(Exception):
    """Base of every error the mail system reports to a peer or an operator."""

    code = 451
    enhanced = "4.3.0"
    text = "Local error in processing"

    def __init__(self, text: str | None = None, *, detail: str = "") -> None:
        if text is not None:
            self.text = text
        self.detail = detail
        super().__init__(self.text if not detail else f"{self.text} ({detail})")

    @property
    def temporary(self) -> bool:
        """True when the peer should try again later (4xx), False when it should give up."""
        return 400 <= self.code < 500


class NoSuchUser(MailError):
    code = 550
    enhanced = "5.1.1"
    text = "No such user here"


class NoSuchDomain(MailError):
    code = 550
    enhanced = "5.1.2"
    text = "Domain not served here"


class RelayDenied(MailError):
    """A recipient in a domain this server does not serve, from a client that may not relay."""

    code = 550
    enhanced = "5.7.1"
    text = "Relaying denied"


class AlreadyExists(MailError):
    code = 550
    enhanced = "5.2.0"
    text = "Already exists"


class NoSuchFolder(MailError):
    code = 550
    enhanced = "5.2.0"
    text = "No such folder"


class FolderExists(AlreadyExists):
    text = "Folder already exists"


class InvalidName(MailError):
    code = 553
    enhanced = "5.1.3"
    text = "Invalid name"


class NoSuchMessage(MailError):
    code = 550
    enhanced = "5.2.0"
    text = "No such message"


class QuotaExceeded(MailError):
    """Over the account's quota for good: the message is larger than the whole quota."""

    code = 552
    enhanced = "5.2.2"
    text = "Mailbox full"


class MailboxFull(QuotaExceeded):
    """Over the account's quota for now (RFC 3463 X.2.2): it may fit once the user frees
    space, so SMTP answers 452 4.2.2 and the sender tries again later."""

    code = 452
    enhanced = "4.2.2"
    text = "Mailbox full, try again later"


class StoreUnavailable(MailError):
    code = 451
    enhanced = "4.3.0"
    text = "Mail store temporarily unavailable"


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        message = f"config error: {key}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
