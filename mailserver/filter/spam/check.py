"""The content classifiers as a filter check: the ``spam`` ICheck.

Design rules:

1. Only the DATA phase does anything: the message is classified on the thread pool (model
   look-up, tokenising and scoring are CPU work), at most ``max_size`` bytes of it (spam is
   small; a large attachment adds nothing but time).
2. With one recipient that has a model of their own judgements, that model shifts the score
   (:meth:`SpamModel.classify`); with several recipients the global model alone decides,
   because the pipeline gives one verdict per message.
3. The classifier's probability becomes points on the pipeline's scale so that one threshold
   governs everything: the model's own threshold maps to ``quarantine_score``, certainty to
   ``max_points``, clear ham to up to 2 points off (like SpamAssassin's BAYES_00). The rule
   name is SpamAssassin's probability bucket (BAYES_00 ... BAYES_999), which users know.
4. No model trained yet: no verdict (ACCEPT), and the log says how to train one.
5. Mail from authenticated senders is not classified (they are our own users).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.filter.session import Abstaining
from mailserver.filter.spam.model import Classification, ModelError, ModelStore
from mailserver.interfaces import ICheck
from mailserver.types import ACCEPT, Address, Envelope, Peer, SpamVerdict, Verdict

__all__ = ["CLASSIFIER", "SpamCheck", "points", "rule"]

log = Logger(namespace="mailserver.filter")

#: The ``classifier`` of SpamVerdicts from this check.
CLASSIFIER = "bayes+logreg"
#: SpamAssassin's BAYES_nn buckets: (lower bound of the probability, rule name).
BUCKETS = (
    (0.999, "BAYES_999"),
    (0.99, "BAYES_99"),
    (0.95, "BAYES_95"),
    (0.80, "BAYES_80"),
    (0.60, "BAYES_60"),
    (0.40, "BAYES_50"),
    (0.20, "BAYES_40"),
    (0.05, "BAYES_20"),
    (0.01, "BAYES_05"),
    (0.0, "BAYES_00"),
)
#: Points clear ham may take off (rule 3).
HAM_POINTS = -2.0


def rule(probability: float) -> str:
    """The SpamAssassin-style bucket of ``probability``."""
    for bound, name in BUCKETS:
        if probability >= bound:
            return name
    return "BAYES_00"


def points(result: Classification, quarantine_score: float, max_points: float) -> float:
    """Rule 3: the probability on the pipeline's points scale."""
    threshold = min(max(result.threshold, 0.5 + 1e-6), 1 - 1e-9)
    z_threshold = math.log(threshold / (1 - threshold))
    p = min(max(result.probability, 1e-12), 1 - 1e-12)
    z = math.log(p / (1 - p))
    value = quarantine_score * z / z_threshold
    return round(min(max(value, HAM_POINTS), max(max_points, quarantine_score)), 2)


@implementer(ICheck)
class SpamCheck:
    """The ``spam`` check over the models in ``models``."""

    name = "spam"
    honours_allow_list = True

    def __init__(
        self,
        reactor: Any,
        models: ModelStore,
        *,
        quarantine_score: float = 5.0,
        max_points: float = 6.0,
        max_size: int = 512 * 1024,
        threadpool: Any = None,
        resolve: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.models = models
        self.quarantine_score = quarantine_score
        self.max_points = max_points
        self.max_size = max_size
        self.threadpool = threadpool
        #: Recipient address -> the accounts it reaches (aliases), to find a user model.
        self.resolve = resolve
        self._untrained_logged = False

    def session(self, peer: Peer) -> SpamSession:
        return SpamSession(self, peer)

    def classify(self, message: bytes, recipients: Sequence[Address]) -> Classification | None:
        """Blocking: the classification of ``message`` (None without a usable global model)."""
        try:
            model = self.models.load()
        except ModelError as error:  # e.g. a model stored by an older program
            if not self._untrained_logged:
                self._untrained_logged = True
                log.error("the stored spam model cannot be used ({error}); mail is not scored "
                          "until 'mailserver spam train' runs again", error=error)
            return None
        if model is None:
            return None
        user = None
        if len(recipients) == 1:
            accounts = self.resolve(str(recipients[0])) if self.resolve else [recipients[0].key]
            if len(accounts) == 1:
                try:
                    user = self.models.load(accounts[0])
                except ModelError:
                    user = None  # the global model alone; the next judgement rebuilds it
        return model.classify(message[: self.max_size], user)

    def verdict(self, result: Classification | None) -> Verdict:
        if result is None:
            if not self._untrained_logged:
                self._untrained_logged = True
                log.warn("no spam model trained yet; run 'mailserver spam train' to score mail")
            return ACCEPT
        reasons = tuple(f"{token} {weight:+.2f}" for token, weight in result.top[:8])
        spam = SpamVerdict(
            score=round(result.probability, 6),
            is_spam=result.is_spam,
            reasons=reasons,
            classifier=CLASSIFIER,
        )
        summary = f"p={result.probability:.4f} (threshold {result.threshold:.2f})"
        if result.user is not None:
            summary += f", user model p={result.user:.4f}"
        if reasons:
            summary += "; " + ", ".join(reasons[:5])
        return Verdict(
            check=self.name,
            rule=rule(result.probability),
            score=points(result, self.quarantine_score, self.max_points),
            reason=summary,
            spam=spam,
        )


class SpamSession(Abstaining):
    def __init__(self, check: SpamCheck, peer: Peer) -> None:
        self.check = check
        self.peer = peer

    def body(
        self, envelope: Envelope, recipients: Sequence[Address], message: bytes
    ) -> Verdict | Deferred[Verdict]:
        if envelope.authenticated_as or self.peer.authenticated_as:
            return ACCEPT
        check = self.check
        reactor = check.reactor
        pool = check.threadpool or reactor.getThreadPool()
        d = deferToThreadPool(reactor, pool, check.classify, message, tuple(recipients))
        return d.addCallback(check.verdict)
