"""SMTP replies: the :class:`Reply` value and the replies the server sends, in one table.

Every reply carries an enhanced status code (RFC 2034 §3, codes from RFC 3463) except the 220
greeting and the replies to EHLO/HELO, which come before the client has seen the
ENHANCEDSTATUSCODES keyword (and whose lines are keywords). Handlers pick a constant and,
where the text says something specific, replace the text with :meth:`Reply.with_text`.
A leaf module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailserver.errors import MailError


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: code, enhanced status code ("" for none), text lines, close after."""

    code: int
    enhanced: str
    text: tuple[str, ...]
    close: bool = False

    def with_text(self, *lines: str) -> Reply:
        """The same reply with other text (one line per argument; a multi-line reply)."""
        return replace(self, text=tuple(lines) or self.text)

    def lines(self) -> list[str]:
        """The reply lines as sent, without CRLF (RFC 5321 §4.2.1: ``-`` on all but the last)."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        texts = self.text or ("",)
        out = []
        for index, text in enumerate(texts):
            separator = " " if index == len(texts) - 1 else "-"
            line = f"{self.code}{separator}{prefix}{text}"
            out.append(line if self.code == 334 else line.rstrip())  # "334 " + empty challenge
        return out

    def encode(self) -> bytes:
        """The reply as bytes on the wire (UTF-8: texts may hold SMTPUTF8 addresses)."""
        return "".join(line + "\r\n" for line in self.lines()).encode("utf-8", "replace")

    @property
    def positive(self) -> bool:
        """2xx or 3xx."""
        return self.code < 400


def _reply(code: int, enhanced: str, text: str, close: bool = False) -> Reply:
    return Reply(code, enhanced, (text,), close)


# --- positive (RFC 5321 §4.2.2; enhanced codes RFC 3463 §3) -------------------------------
GREETING = _reply(220, "", "ESMTP ready")
READY_TLS = _reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 §4
CLOSING = _reply(221, "2.0.0", "Bye", close=True)
OK = _reply(250, "2.0.0", "OK")
HELLO = _reply(250, "", "Hello")  # RFC 2034 §3: EHLO/HELO replies carry no enhanced code
SENDER_OK = _reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = _reply(250, "2.1.5", "Recipient OK")
QUEUED = _reply(250, "2.0.0", "OK: queued")
HELP = _reply(214, "2.0.0", "See RFC 5321")
CANNOT_VRFY = _reply(  # RFC 5321 §3.5.3
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)
START_DATA = _reply(354, "", "End data with <CR><LF>.<CR><LF>")
AUTH_OK = _reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6
CHALLENGE = _reply(334, "", "")  # RFC 4954 §4: the text is the base64 challenge

# --- transient (4yz) ---------------------------------------------------------------------
SHUTTING_DOWN = _reply(421, "4.3.2", "Service not available, closing channel", close=True)
TIMEOUT = _reply(421, "4.4.2", "Timeout, closing connection", close=True)
TOO_MANY_CONNECTIONS = _reply(421, "4.7.0", "Too many connections", close=True)
LOCAL_ERROR = _reply(451, "4.3.0", "Local error in processing; try again later")
AUTH_TEMPORARY = _reply(454, "4.7.0", "Temporary authentication failure")
TOO_MANY_RECIPIENTS = _reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
INSUFFICIENT_STORAGE = _reply(452, "4.3.1", "Insufficient system storage")  # RFC 1870 §6

# --- permanent (5yz) ---------------------------------------------------------------------
SYNTAX_ERROR = _reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = _reply(500, "5.5.6", "Line too long")  # RFC 5321 §4.5.3.1.4/6
BAD_ARGUMENTS = _reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_SENDER_SYNTAX = _reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = _reply(501, "5.1.3", "Bad recipient address syntax")
BAD_DOMAIN = _reply(501, "5.5.4", "Invalid domain name")
NOT_IMPLEMENTED = _reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = _reply(503, "5.5.1", "Bad sequence of commands")
PARAM_NOT_IMPLEMENTED = _reply(504, "5.5.4", "Command parameter not implemented")
BARE_NEWLINE = _reply(521, "5.5.2", "Error: bare <LF> received", close=True)
NEED_BINARY = _reply(  # RFC 3030 §3: BINARYMIME content only through BDAT
    503, "5.5.1", "BODY=BINARYMIME requires BDAT"
)
MESSAGE_TOO_BIG = _reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
MAILBOX_NAME_NOT_ALLOWED = _reply(553, "5.1.3", "Mailbox name not allowed")
UTF8_REQUIRED = _reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")  # RFC 6531 §3.5
AUTH_REQUIRED = _reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
TLS_REQUIRED = _reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 §4
AUTH_FAILED = _reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = _reply(  # RFC 4954 §6
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
AUTH_CANCELLED = _reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = _reply(501, "5.5.2", "Cannot decode response")
MECHANISM_UNKNOWN = _reply(504, "5.5.4", "Unrecognized authentication type")
TOO_MANY_HOPS = _reply(554, "5.4.6", "Too many hops")  # RFC 5321 §6.3, RFC 3463 routing loop
TRANSACTION_FAILED = _reply(554, "5.0.0", "Transaction failed")
PARAMS_NOT_RECOGNIZED = _reply(555, "5.5.4", "Parameter not recognized")  # RFC 5321 §4.1.1.11


def reply_for_error(error: MailError) -> Reply:
    """The reply that reports ``error`` to the client (its code, enhanced code and text)."""
    return Reply(error.code, error.enhanced, (error.text,))
