"""The filter's contracts with the protocols (the filtering issue adds ICheck/ICheckSession).

:class:`IJunkFeedback` is how a user's spam judgement reaches the filter: moving (or copying)
a message into the Junk folder says "this is spam", moving it out of Junk into anything but
Trash says "this is not". IMAP (and later the web API) call it; the spam classifiers learn
from it.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IJunkFeedback"]


class IJunkFeedback(Interface):
    """Receives the user's spam judgements."""

    def judged(account: object, folder: str, uids: object, is_spam: bool) -> object:
        """The user put the messages ``uids`` (UIDs in ``folder`` of ``account``, an
        IAccount, where they are now) into Junk (``is_spam``) or took them out of it.
        Deferred; the caller logs a failure and never shows it to the client."""
