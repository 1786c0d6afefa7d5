"""``mailserver spam train|eval|explain|stats`` on a small synthetic labelled directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.filter.spam.synthetic import message, write_tree

ROOT = Path(__file__).resolve().parents[3]


class SpamCli:
    def __init__(self, root: Path) -> None:
        self.config = root / "mailserver.toml"
        self.config.write_text(
            f"[server]\ndata_dir = {json.dumps(str(root / 'var'))}\n\n"
            "[store]\nfsync = false\nmap_size_mb = 64\n"
        )

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.filter.spam.cli_runner", "--config",
             str(self.config), "spam", *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return done

    def fails(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 1, (done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        return done.stderr


@pytest.fixture
def spam_cli(tmp_path: Path) -> SpamCli:
    return SpamCli(tmp_path)


def test_train_eval_explain_stats(spam_cli, tmp_path):
    """Train on a labelled tree, then eval/explain/stats read the stored model."""
    train = write_tree(tmp_path / "train", 25, seed=1)
    held = write_tree(tmp_path / "held", 10, seed=2)
    done = spam_cli.ok("train", str(train))
    assert "trained the global model on 50 messages (25 spam, 25 ham)" in done.stdout
    assert "tokenizing [" in done.stderr and "50/50" in done.stderr

    done = spam_cli.ok("eval", str(held))
    assert "messages: 20 (10 spam, 10 ham)" in done.stdout
    assert "accuracy: 100.00%" in done.stdout
    assert "spam recall: 100.00% (10 of 10 spam caught)" in done.stdout
    assert "ham false positives: 0.00% (0 of 10 ham marked spam)" in done.stdout
    assert "confusion matrix:" in done.stdout and "classifying [" in done.stderr

    sample = tmp_path / "one.eml"
    sample.write_bytes(message(True, 77, seed=5))
    done = spam_cli.ok("explain", str(sample))
    lines = done.stdout.splitlines()
    assert lines[0].startswith("probability: ") and "(spam; threshold" in lines[0]
    assert "naive bayes:" in lines[1] and len(lines) > 5

    done = spam_cli.ok("stats", "--top", "3")
    assert done.stdout.startswith("global: ") and "50 messages (25 spam, 25 ham)" in done.stdout
    assert "spammy: " in done.stdout and "hammy: " in done.stdout


def test_user_model_and_label_option(spam_cli, tmp_path):
    """--label labels an unlabelled directory; --user stores a separate model."""
    write_tree(tmp_path / "train", 10, seed=1)
    spam_cli.ok("train", str(tmp_path / "train"))
    loose = tmp_path / "loose"
    loose.mkdir()
    for n in range(12):
        (loose / f"{n}.eml").write_bytes(message(False, n, seed=4))
    done = spam_cli.ok("train", str(loose), "--label", "spam", "--user", "Alice@Example.org")
    assert "trained the alice@example.org model on 12 messages (12 spam, 0 ham)" in done.stdout
    assert "alice@example.org: " in spam_cli.ok("stats", "--top", "0").stdout
    sample = tmp_path / "one.eml"
    sample.write_bytes(message(False, 3, seed=4))
    done = spam_cli.ok("explain", str(sample), "--user", "alice@example.org")
    assert "user model: " in done.stdout


def test_errors_say_what_to_do(spam_cli, tmp_path):
    """No model, unlabelled paths, one-class training and missing paths: one line each."""
    sample = tmp_path / "one.eml"
    sample.write_bytes(message(True, 1))
    assert "mailserver spam train" in spam_cli.fails("explain", str(sample))
    assert "mailserver spam train" in spam_cli.fails("stats")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.eml").write_bytes(message(True, 1))
    assert "--label spam|ham" in spam_cli.fails("train", str(loose))
    assert "needs both" in spam_cli.fails("train", str(loose), "--label", "ham")
    assert "does not exist" in spam_cli.fails("eval", str(tmp_path / "nope"))
    assert "cannot read" in spam_cli.fails("explain", str(tmp_path / "nope.eml"))
