"""Naive Bayes, logistic regression and the TF-IDF squared hinge on small synthetic data."""

from __future__ import annotations

import math
from collections import Counter

from mailserver.filter.spam.bayes import MAX_COUNT, NaiveBayes, capped_counts
from mailserver.filter.spam.logreg import LogisticRegression, TfidfHinge, tfidf_vector

SPAM = [["free", "money", "click"], ["free", "cash", "now"], ["money", "click", "win"]] * 5
HAM = [["meeting", "lunch", "patch"], ["patch", "review", "lunch"], ["agenda", "meeting"]] * 5


def _bayes() -> NaiveBayes:
    model = NaiveBayes()
    for tokens in SPAM:
        model.learn(capped_counts(tokens), True)
    for tokens in HAM:
        model.learn(capped_counts(tokens), False)
    return model


def test_counts_are_capped():
    assert capped_counts(["a"] * 10 + ["b"]) == {"a": MAX_COUNT, "b": 1}


def test_bayes_separates_and_explains():
    """Spammy tokens score positive, hammy negative; contributions name the tokens."""
    model = _bayes()
    spam_logodds, _, parts = model.score(capped_counts(["free", "money"]))
    ham_logodds, _, _ = model.score(capped_counts(["meeting", "patch"]))
    assert spam_logodds > 2 and ham_logodds < -2
    assert set(parts) == {"free", "money"} and parts["free"] > 0
    assert model.token_weight("never-seen") == 0.0


def test_bayes_unlearn_restores_the_counts():
    """Learning then unlearning a message leaves the exact same state."""
    model = _bayes()
    before = ({k: list(v) for k, v in model.counts.items()}, model.spam_tokens,
              model.spam_messages, model.ham_messages)
    counts = capped_counts(["free", "brand-new-token", "money"])
    model.learn(counts, True)
    assert "brand-new-token" in model.counts and model.spam_messages == 16
    model.unlearn(counts, True)
    after = ({k: list(v) for k, v in model.counts.items()}, model.spam_tokens,
             model.spam_messages, model.ham_messages)
    assert after == before


def test_logreg_fit_is_deterministic_and_separates():
    """Two fits on the same data give the same weights; spam scores above ham."""
    labels = [True] * len(SPAM) + [False] * len(HAM)
    first = LogisticRegression(l2=0.1).fit(SPAM + HAM, labels, min_df=1)
    second = LogisticRegression(l2=0.1).fit(SPAM + HAM, labels, min_df=1)
    assert first.weights == second.weights and first.bias == second.bias
    assert first.probability({"free", "money"}) > 0.8
    assert first.probability({"meeting", "patch"}) < 0.2
    assert first.weights["free"] > 0 > first.weights["meeting"]


def test_logreg_min_df_prunes_the_vocabulary():
    model = LogisticRegression().fit([["a", "rare"], ["a", "b"], ["b"]], [True, False, False],
                                     min_df=2)
    assert set(model.weights) == {"a", "b"}


def test_logreg_online_step_moves_toward_the_label():
    """One SGD step adds unseen tokens and moves the probability toward the label."""
    model = LogisticRegression()
    tokens = {"unseen", "words"}
    before = model.probability(tokens)
    model.step(tokens, True)
    assert model.probability(tokens) > before and model.steps == 1
    assert model.weights["unseen"] > 0
    model.step(tokens, False)
    model.step(tokens, False)
    assert model.probability(tokens) < 0.5


def test_tfidf_vector_is_sublinear_idf_weighted_and_unit_length():
    """Repeats count 1 + log(tf), unknown tokens are left out, the vector has length 1."""
    idf = {"a": 1.0, "b": 2.0}
    vector = tfidf_vector({"a": 3, "b": 1, "unknown": 5}, idf)
    assert set(vector) == {"a", "b"}
    assert math.isclose(sum(v * v for v in vector.values()), 1.0)
    assert math.isclose(vector["a"] / vector["b"], (1 + math.log(3)) / 2.0)
    assert tfidf_vector({"unknown": 1}, idf) == {}


def test_hinge_fit_is_deterministic_and_separates():
    """Two fits give the same weights; spam scores above the margin, ham below."""
    documents = [Counter(tokens) for tokens in SPAM + HAM]
    labels = [True] * len(SPAM) + [False] * len(HAM)
    first = TfidfHinge(l2=0.01).fit(documents, labels, min_df=1)
    second = TfidfHinge(l2=0.01).fit(documents, labels, min_df=1)
    assert first.weights == second.weights and first.idf == second.idf
    spam, parts = first.score({"free": 1, "money": 2})
    ham, _ = first.score({"meeting": 1, "patch": 1})
    assert spam > 0.5 > -0.5 > ham
    assert set(parts) == {"free", "money"} and parts["free"] > 0
    assert TfidfHinge().score({"free": 1}) == (0.0, {})


def test_hinge_step_moves_known_tokens_only():
    """An online step moves the score toward the label and adds no new vocabulary."""
    model = TfidfHinge().fit([Counter(t) for t in SPAM + HAM],
                             [True] * len(SPAM) + [False] * len(HAM), min_df=1)
    counts = {"free": 1, "money": 1, "brand-new": 1}
    before = model.score(counts)[0]
    for _ in range(3):
        model.step(counts, False)
    assert model.score(counts)[0] < before
    assert "brand-new" not in model.weights and "brand-new" not in model.idf
