"""SpamModel (train, classify, learn, user models, dumps/loads) and ModelStore on LMDB."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database
from mailserver.filter.spam.model import (
    USER_MIN_MESSAGES,
    ModelError,
    ModelStore,
    SpamModel,
)
from tests.filter.spam.synthetic import examples, message


@pytest.fixture(scope="module")
def model() -> SpamModel:
    return SpamModel.train(examples(30))


def test_train_reports_progress_and_classifies(model):
    """Held-out synthetic spam is spam, ham is ham; both classifiers' views are given."""
    seen = []
    SpamModel.train(examples(3), lambda done, total: seen.append((done, total)), total=6)
    assert seen[-1] == (6, 6) and len(seen) == 6
    spam = model.classify(message(True, 999, seed=7))
    ham = model.classify(message(False, 999, seed=7))
    assert spam.is_spam and spam.probability > 0.9 and spam.bayes > 0.5 and spam.logreg > 0.5
    assert not ham.is_spam and ham.probability < 0.1
    assert spam.threshold == model.threshold and spam.user is None


def test_top_tokens_explain_the_verdict(model):
    """The top list is ordered by |weight| and its heaviest spam token is spammy."""
    result = model.classify(message(True, 5, seed=3))
    weights = [abs(weight) for _, weight in result.top]
    assert weights == sorted(weights, reverse=True) and len(result.top) > 3
    assert result.top[0][1] > 0


def test_learn_moves_a_message_and_unlearn_undoes_the_counts():
    """Online learning flips a borderline message; unlearning restores the NB counts."""
    model = SpamModel.train(examples(10))
    odd = b"Subject: quarterly zebra report\n\nzebra giraffe okapi report numbers\n"
    before = model.classify(odd).probability
    counts = dict((k, list(v)) for k, v in model.bayes.counts.items())
    for _ in range(5):
        model.learn(odd, True)
    assert model.classify(odd).probability > before
    for _ in range(5):
        model.unlearn(odd, True)
    assert {k: list(v) for k, v in model.bayes.counts.items()} == counts


def test_user_model_shifts_the_score_only_after_enough_messages(model):
    """A user model with too few messages has no say; a trained one shifts the score."""
    target = message(False, 1234, seed=9)
    user = SpamModel()
    user.learn(target, True)
    assert user.user_weight() == 0.0
    assert model.classify(target, user).probability == model.classify(target).probability
    for n in range(USER_MIN_MESSAGES * 3):
        user.learn(message(False, n, seed=9), True)  # this user calls the colleagues spam
    shifted = model.classify(target, user)
    assert shifted.user is not None
    assert shifted.probability > model.classify(target).probability


def test_dumps_loads_round_trip(model):
    """The stored form gives the same scores; it is versioned and not a pickle."""
    data = model.dumps()
    assert data.startswith(b"MSSPAM\x04")
    again = SpamModel.loads(data)
    for n in range(5):
        for is_spam in (True, False):
            m = message(is_spam, 500 + n)
            assert again.classify(m).probability == pytest.approx(
                model.classify(m).probability, abs=1e-5)
    assert again.messages == model.messages and again.threshold == model.threshold
    assert SpamModel.loads(SpamModel().dumps()).messages == 0


def test_loads_refuses_an_old_version_with_a_clear_error(model):
    """Version-1 bytes (no TF-IDF view), version-2 bytes (learned without the header layout
    tokens) and version-3 bytes (learned with the mailing-list headers' tokens) are refused
    with a message saying to retrain."""
    data = model.dumps()
    for old in (1, 2, 3):
        with pytest.raises(ModelError, match=f"version {old} .*retrain"):
            SpamModel.loads(data[:6] + bytes([old]) + data[7:])


@pytest.mark.parametrize("damage", [b"", b"pickle", b"MSSPAM\x09" + b"\0" * 8, "flip"])
def test_loads_refuses_damaged_bytes(model, damage):
    data = model.dumps()
    if damage == "flip":
        data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    else:
        data = damage
    with pytest.raises(ModelError):
        SpamModel.loads(data)


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=64 << 20, reactor=reactor,
                             sync=False)
    yield database
    pytest_twisted.blockon(database.close())


@pytest_twisted.ensureDeferred
async def test_model_store_saves_loads_and_caches(db, model):
    """save() then load() gives the model; an unchanged model is served from the cache."""
    models = ModelStore(db)
    assert models.load("global") is None
    await models.save("global", model)
    loaded = models.load("global")
    assert loaded is not None and loaded.messages == model.messages
    assert models.load("global") is loaded
    assert models.load("global", private=True) is not loaded
    user = SpamModel()
    user.learn(message(True, 1), True)
    models.save_sync("alice@example.org", user)
    assert models.names() == ["alice@example.org", "global"]
    assert models.load("alice@example.org").messages == 1
    assert models.size("global") > 0 and models.size("nobody") == 0
    model2 = SpamModel.train(examples(5))
    await models.save("global", model2)
    assert models.load("global").messages == model2.messages
