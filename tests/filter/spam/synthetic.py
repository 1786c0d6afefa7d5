"""Small synthetic labelled mail for the classifier and CLI tests (seeded, deterministic)."""

from __future__ import annotations

import random
from pathlib import Path

SPAM_WORDS = "free money click viagra winner prize offer cash credit cheap guaranteed".split()
HAM_WORDS = "meeting project lunch patch review tomorrow agenda notes thanks build".split()
COMMON = "the and you for with this that have will from".split()


def message(is_spam: bool, n: int, seed: int = 0) -> bytes:
    """One message, spammy or hammy, varied by ``n``."""
    rng = random.Random(seed * 100_003 + n * 2 + int(is_spam))
    words = SPAM_WORDS if is_spam else HAM_WORDS
    body = " ".join(rng.choice(words if rng.random() < 0.5 else COMMON) for _ in range(40))
    subject = " ".join(rng.choice(words) for _ in range(3))
    sender = "promo@deals.example" if is_spam else f"colleague{n % 5}@work.example"
    if is_spam:
        html = f"<html><body><font color=red>{body}</font><a href='http://deals.example/x'>"
        return (
            f"From: {sender}\nTo: you@example.org\nSubject: {subject.upper()}!!\n"
            f"Content-Type: text/html\n\n{html}</a></body></html>\n"
        ).encode()
    return (
        f"From: Colleague <{sender}>\nTo: you@example.org\nSubject: {subject}\n"
        f"Message-ID: <{n}@work.example>\nContent-Type: text/plain\n\n{body}\n"
    ).encode()


def examples(count: int, seed: int = 0) -> list[tuple[bytes, bool]]:
    """``count`` spam and ``count`` ham, interleaved."""
    out = []
    for n in range(count):
        out.append((message(True, n, seed), True))
        out.append((message(False, n, seed), False))
    return out


def write_tree(root: Path, count: int, seed: int = 0) -> Path:
    """``root/spam/N.eml`` and ``root/ham/N.eml``; returns ``root``."""
    for label in ("spam", "ham"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for n, (data, is_spam) in enumerate(examples(count, seed)):
        (root / ("spam" if is_spam else "ham") / f"{n}.eml").write_bytes(data)
    return root
