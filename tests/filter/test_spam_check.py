"""The ``spam`` check and the online trainer over a real index and a model trained here on
small synthetic mail (the corpus tests are in tests/filter/spam/)."""

from __future__ import annotations

import io
import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from mailserver.filter.classifications import ClassificationLog
from mailserver.filter.spam.check import SpamCheck, points, rule
from mailserver.filter.spam.model import Classification, ModelStore, SpamModel
from mailserver.filter.spam.training import OnlineTrainer
from mailserver.types import ACCEPT, Address, Envelope, Peer

SPAM_WORDS = "cheap pills winner prize casino viagra unsubscribe offer cash bonus".split()
HAM_WORDS = "meeting patch review lunch kernel thanks build release notes agenda".split()


def message(words: list[str], n: int, subject: str) -> bytes:
    body = " ".join(words)
    return (
        f"From: someone{n}@example.net\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{n}@example.net>\r\n\r\n{body}\r\n"
    ).encode()


def corpus(count: int = 60, seed: int = 7) -> list[tuple[bytes, bool]]:
    chance = random.Random(seed)
    out = []
    for n in range(count):
        spam = n % 2 == 0
        words = chance.choices(SPAM_WORDS if spam else HAM_WORDS, k=30)
        out.append((message(words, n, " ".join(words[:3])), spam))
    return out


@pytest.fixture
def models(storage) -> ModelStore:
    store = ModelStore(storage.db)
    store.save_sync(ModelStore.GLOBAL, SpamModel.train(corpus(), threshold=0.9))
    return store


def envelope() -> Envelope:
    return Envelope(sender=Address("x", "example.net"), client_address="192.0.2.1")


def test_points_map_the_threshold_to_the_quarantine_score() -> None:
    def at(p: float) -> float:
        return points(Classification(p, p >= 0.9, 0.9, (), p, p), 5.0, 6.0)

    assert at(0.9) == 5.0
    assert at(0.999999) == 6.0  # capped at max_points
    assert at(0.5) == 0.0
    assert at(0.000001) == -2.0  # clear ham takes at most 2 points off
    assert rule(0.995) == "BAYES_99" and rule(0.0001) == "BAYES_00" and rule(0.5) == "BAYES_50"


@pytest_twisted.ensureDeferred
async def test_spam_gets_points_a_verdict_and_reasons(models) -> None:
    check = SpamCheck(reactor, models)
    session = check.session(Peer("192.0.2.1"))
    alice = (Address("alice", "example.org"),)
    spammy = message(["cheap", "pills", "casino", "winner", "cash"] * 5, 900, "cheap pills")
    verdict = await session.body(envelope(), alice, spammy)
    assert verdict.spam is not None and verdict.spam.is_spam
    assert verdict.score >= 5.0 and verdict.rule.startswith("BAYES_9")
    assert verdict.spam.classifier == "bayes+logreg" and verdict.spam.reasons
    hammy = message(["kernel", "patch", "review", "thanks"] * 5, 901, "patch review")
    verdict = await session.body(envelope(), alice, hammy)
    assert verdict.spam is not None and not verdict.spam.is_spam and verdict.score < 0


@pytest_twisted.ensureDeferred
async def test_no_model_no_verdict_and_authenticated_senders_are_not_scored(storage) -> None:
    check = SpamCheck(reactor, ModelStore(storage.db))
    mail = message(SPAM_WORDS, 1, "x")
    assert await check.session(Peer("192.0.2.1")).body(envelope(), (), mail) == ACCEPT
    own = Envelope(sender=Address("alice", "example.org"), authenticated_as="alice@example.org")
    assert check.session(Peer("192.0.2.1")).body(own, (), mail) == ACCEPT


@pytest_twisted.ensureDeferred
async def test_moving_mail_to_junk_trains_the_users_model(storage, models) -> None:
    await storage.directory.add_domain("example.org")
    await storage.store.create_account("alice@example.org")
    inbox = storage.store.account("alice@example.org").folder("INBOX")
    # A kind of mail the global model has never seen, which alice calls spam.
    novel = ["crypto", "airdrop", "wallet", "token", "presale"]
    uids = []
    for n in range(12):
        uids.append(await inbox.append(io.BytesIO(message(novel * 6, 100 + n, "airdrop"))))
    log = ClassificationLog(storage.db, Clock())
    trainer = OnlineTrainer(
        reactor, models, storage.store.account, record=log.record
    )
    check = SpamCheck(reactor, models)
    alice = (Address("alice", "example.org"),)
    probe = message(novel * 6, 999, "airdrop")
    before = await check.session(Peer("192.0.2.1")).body(envelope(), alice, probe)

    await trainer("alice@example.org", "INBOX", uids, True)
    user_model = models.load("alice@example.org")
    assert user_model is not None and user_model.messages == 12
    after = await check.session(Peer("192.0.2.1")).body(envelope(), alice, probe)
    assert after.spam is not None and before.spam is not None
    assert after.spam.score > before.spam.score
    assert models.load().messages == 60  # the global model is left alone by default
    entries = log.recent(50)
    assert len(entries) == 12 and {e["source"] for e in entries} == {"user"}
    assert entries[0]["message_id"].startswith("<1")


@pytest_twisted.ensureDeferred
async def test_an_unreadable_stored_model_scores_nothing_and_says_so(storage) -> None:
    """A model stored by another program version (or damaged) gives no verdict, not a failed
    check; the log says to retrain."""
    storage.db.write_sync(lambda txn: txn.put(ModelStore.TABLE, b"global", b"MSSPAM\x01junk"))
    check = SpamCheck(reactor, ModelStore(storage.db))
    mail = message(SPAM_WORDS, 1, "x")
    assert await check.session(Peer("192.0.2.1")).body(envelope(), (), mail) == ACCEPT
