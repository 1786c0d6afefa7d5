"""The user's spam judgements, kept on the messages themselves.

:class:`VerdictFeedback` provides :class:`~mailserver.interfaces.IJunkFeedback` by recording a
:class:`~mailserver.types.SpamVerdict` from the classifier ``"user"`` on each judged message
(shared by all its labels, see ``IMessage.set_spam_verdict``): a later verdict by a machine
never outranks it in the UI, and the trainers read these verdicts as labelled examples.
Designed to be wrapped: a trainer that wants every judgement as it happens wraps this object
(``on_judged``) rather than re-reading the index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.interfaces import IAccount, IJunkFeedback
from mailserver.types import SpamVerdict

__all__ = ["USER_CLASSIFIER", "VerdictFeedback", "user_verdict"]

log = Logger(namespace="mailserver.filter")

#: The ``classifier`` of verdicts that come from the user, not from a model.
USER_CLASSIFIER = "user"


def user_verdict(is_spam: bool, folder: str) -> SpamVerdict:
    reason = f"moved to {folder} by the user" if is_spam else f"moved out of Junk to {folder}"
    return SpamVerdict(
        score=1.0 if is_spam else 0.0,
        is_spam=is_spam,
        reasons=(reason,),
        classifier=USER_CLASSIFIER,
    )


@implementer(IJunkFeedback)
class VerdictFeedback:
    """Records the judgement on each message; ``on_judged(address, folder, uids, is_spam)``
    is called after that (e.g. by an online trainer)."""

    def __init__(
        self, on_judged: Callable[[str, str, list[int], bool], Any] | None = None
    ) -> None:
        self.on_judged = on_judged

    @inlineCallbacks
    def judged(
        self, account: IAccount, folder: str, uids: Iterable[int], is_spam: bool
    ) -> Deferred[None]:  # type: ignore[misc]
        wanted = sorted(set(uids))
        verdict = user_verdict(is_spam, folder)
        # One batch read (messages expunged meanwhile are absent), then every write queued
        # at once so the index commits them together instead of one commit per message.
        messages = account.folder(folder).messages(wanted, meta=False)
        yield gatherResults([m.set_spam_verdict(verdict) for m in messages], consumeErrors=True)
        log.info(
            "{user} judged {count} message(s) in {folder} as {kind}",
            user=account.address,
            count=len(wanted),
            folder=folder,
            kind="spam" if is_spam else "not spam",
        )
        if self.on_judged is not None:
            yield self.on_judged(account.address, folder, wanted, is_spam)
