"""twistd plugin: ``twistd mailserver`` (no ``__init__.py`` may sit above this file)."""

from twisted.application.service import ServiceMaker

mailserver = ServiceMaker(
    "mailserver",
    "mailserver.tap",
    "A protocol-first mail server: SMTP, submission, IMAP, POP3 and the web API.",
    "mailserver",
)
