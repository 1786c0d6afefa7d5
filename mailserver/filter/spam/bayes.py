"""Multinomial naive Bayes over token counts, updatable one message at a time.

The state is four integer tables: how often each token occurred in spam and in ham, and how
many messages of each class were learned. Learning or unlearning a message adds or
subtracts its counts, so a user moving a message out of Junk undoes exactly what moving it
in did.

A message's log-odds is the prior log-odds plus, for every token seen in training, its
count (capped at :data:`MAX_COUNT` per message, so one word repeated a hundred times does not
decide alone) times the token's log-likelihood ratio
``log P(token | spam) - log P(token | ham)``, with Laplace smoothing ``alpha`` over the
vocabulary (Robinson's ``s`` plays the same role: a token seen a few times pulls only a
little). Tokens never seen in training say nothing and are skipped.

Multinomial log-odds grow with the length of the message, so :meth:`NaiveBayes.score` also
returns them divided by the square root of the tokens counted: that is the feature the
combined model (:mod:`mailserver.filter.spam.model`) weighs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

__all__ = ["MAX_COUNT", "NaiveBayes", "capped_counts"]

#: A token counts at most this often in one message.
MAX_COUNT = 3


def capped_counts(tokens: Iterable[str]) -> dict[str, int]:
    """Token -> occurrences in one message, capped at :data:`MAX_COUNT`."""
    return {token: min(count, MAX_COUNT) for token, count in Counter(tokens).items()}


class NaiveBayes:
    """Token counts per class; :meth:`learn`/:meth:`unlearn` one message, :meth:`score` one."""

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha
        #: token -> [spam count, ham count]
        self.counts: dict[str, list[int]] = {}
        self.spam_tokens = 0
        self.ham_tokens = 0
        self.spam_messages = 0
        self.ham_messages = 0

    @property
    def messages(self) -> int:
        return self.spam_messages + self.ham_messages

    def learn(self, counts: dict[str, int], is_spam: bool, sign: int = 1) -> None:
        """Add one message's capped counts (``sign=-1`` removes them again)."""
        column = 0 if is_spam else 1
        total = 0
        for token, count in counts.items():
            row = self.counts.get(token)
            if row is None:
                if sign < 0:
                    continue
                row = self.counts[token] = [0, 0]
            row[column] = max(0, row[column] + sign * count)
            total += count
            if row[0] == 0 and row[1] == 0:
                del self.counts[token]
        if is_spam:
            self.spam_tokens = max(0, self.spam_tokens + sign * total)
            self.spam_messages = max(0, self.spam_messages + sign)
        else:
            self.ham_tokens = max(0, self.ham_tokens + sign * total)
            self.ham_messages = max(0, self.ham_messages + sign)

    def unlearn(self, counts: dict[str, int], is_spam: bool) -> None:
        """Remove a message learned earlier with the same label."""
        self.learn(counts, is_spam, sign=-1)

    def _denominators(self) -> tuple[float, float]:
        vocabulary = max(1, len(self.counts))
        return (
            self.spam_tokens + self.alpha * vocabulary,
            self.ham_tokens + self.alpha * vocabulary,
        )

    def token_weight(self, token: str) -> float:
        """``log P(token | spam) - log P(token | ham)``; 0 for an unseen token."""
        row = self.counts.get(token)
        if row is None:
            return 0.0
        spam_den, ham_den = self._denominators()
        return math.log((row[0] + self.alpha) / spam_den) - math.log(
            (row[1] + self.alpha) / ham_den
        )

    def prior(self) -> float:
        """The prior log-odds of spam (0 with no messages of one class)."""
        if not self.spam_messages or not self.ham_messages:
            return 0.0
        return math.log(self.spam_messages / self.ham_messages)

    def score(self, counts: dict[str, int]) -> tuple[float, float, dict[str, float]]:
        """(log-odds, log-odds of the evidence / sqrt(tokens counted), token -> contribution)."""
        spam_den, ham_den = self._denominators()
        log_ratio = math.log(ham_den / spam_den)
        alpha = self.alpha
        total = 0.0
        seen = 0
        contributions: dict[str, float] = {}
        get = self.counts.get
        log = math.log
        for token, count in counts.items():
            row = get(token)
            if row is None:
                continue
            weight = log((row[0] + alpha) / (row[1] + alpha)) + log_ratio
            contributions[token] = weight * count
            total += weight * count
            seen += count
        normalised = total / math.sqrt(seen) if seen else 0.0
        return self.prior() + total, normalised, contributions
