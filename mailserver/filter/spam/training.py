"""Online training from the user's judgements (moving mail into or out of Junk).

:class:`OnlineTrainer` is the ``on_judged`` hook of
:class:`~mailserver.filter.feedback.VerdictFeedback` (IMAP MOVE/COPY, and the API's
spam/not-spam report later). Design rules:

1. The user's own model learns every judgement; the global model too when ``learn_global``
   (an operator's choice: one user's taste then shifts everyone's filter).
2. Each model is changed by one writer at a time (a lock per model name), as load, learn,
   save on the thread pool; a concurrent judgement waits rather than losing an update.
3. Bounded work: at most ``max_messages`` of one judgement are learned (a user moving ten
   thousand messages at once is not training, it is housekeeping), each read up to
   ``max_size`` bytes.
4. Every judged message is recorded in the spam_classifications log with source ``user``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, gatherResults, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.filter.feedback import user_verdict
from mailserver.filter.spam.model import ModelError, ModelStore, SpamModel
from mailserver.interfaces import IAccount

__all__ = ["OnlineTrainer"]

log = Logger(namespace="mailserver.filter")


class OnlineTrainer:
    """Learns judged messages into the user's (and optionally the global) model."""

    def __init__(
        self,
        reactor: Any,
        models: ModelStore,
        account: Callable[[str], IAccount],
        *,
        learn_global: bool = False,
        record: Callable[[dict[str, Any]], Any] | None = None,
        max_messages: int = 200,
        max_size: int = 512 * 1024,
    ) -> None:
        self.reactor = reactor
        self.models = models
        self.account = account
        self.learn_global = learn_global
        self.record = record
        self.max_messages = max_messages
        self.max_size = max_size
        self._locks: dict[str, DeferredLock] = {}

    def __call__(
        self, address: str, folder: str, uids: Sequence[int], is_spam: bool
    ) -> Deferred[None]:
        return Deferred.fromCoroutine(self.judged(address, folder, uids, is_spam))

    async def judged(self, address: str, folder: str, uids: Sequence[int], is_spam: bool) -> None:
        wanted = sorted(uids)[: self.max_messages]
        pool = self.reactor.getThreadPool()
        messages: list[tuple[str, bytes]] = await deferToThreadPool(
            self.reactor, pool, self._read, address, folder, wanted
        )
        if not messages:
            return
        names = [address] + ([ModelStore.GLOBAL] if self.learn_global else [])
        await gatherResults([self._learn(name, messages, is_spam) for name in names])
        log.info(
            "learned {count} message(s) of {user} as {kind} into {models}",
            count=len(messages), user=address, kind="spam" if is_spam else "ham",
            models=", ".join(names),
        )
        if self.record is not None:
            await gatherResults(
                [self._recorded(mid, address, folder, is_spam) for mid, _data in messages]
            )

    def _recorded(
        self, message_id: str, address: str, folder: str, is_spam: bool
    ) -> Deferred[None]:
        """Rule 4 (a failed record is logged; the judgement stands)."""
        assert self.record is not None
        entry = {
            "source": "user",
            "message_id": message_id,
            "recipients": [address],
            "is_spam": is_spam,
            "classifier": "user",
            "score": 1.0 if is_spam else 0.0,
            "reasons": [user_verdict(is_spam, folder).reasons[0]],
        }
        d = maybeDeferred(self.record, entry)
        return d.addErrback(lambda f: log.failure("recording a user report failed", f))

    def _read(self, address: str, folder: str, uids: list[int]) -> list[tuple[str, bytes]]:
        """Blocking: (Message-ID, bytes) of each judged message still present."""
        mailbox = self.account(address).folder(folder)
        out = []
        for message in mailbox.messages(uids, meta="envelope"):
            with message.open() as source:
                data = source.read(self.max_size)
            envelope = message.info.envelope or {}
            out.append((str(envelope.get("message_id") or ""), data))
        return out

    def _learn(self, name: str, messages: list[tuple[str, bytes]], is_spam: bool) -> Deferred[None]:
        lock = self._locks.setdefault(name, DeferredLock())
        return lock.run(self._learn_locked, name, messages, is_spam)

    async def _learn_locked(
        self, name: str, messages: list[tuple[str, bytes]], is_spam: bool
    ) -> None:
        pool = self.reactor.getThreadPool()

        def learn() -> SpamModel:
            try:
                model = self.models.load(name, private=True) or self._new_model()
            except ModelError:  # stored by another version: start this model afresh
                model = self._new_model()
            for _message_id, data in messages:
                model.learn(data, is_spam)
            return model

        model = await deferToThreadPool(self.reactor, pool, learn)
        await self.models.save(name, model)

    def _new_model(self) -> SpamModel:
        """A fresh user model with the global model's threshold."""
        try:
            base = self.models.load()
        except ModelError:
            base = None
        return SpamModel(threshold=base.threshold) if base is not None else SpamModel()
