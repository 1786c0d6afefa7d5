"""bench/spam_bench.py --quick still runs and reports every figure for every classifier."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.quick import run_quick
from tests.conftest import shared_dir


def _corpus_present() -> bool:
    shared = shared_dir()
    return shared is not None and (shared / "corpus" / "spam-train.tar.gz").exists()


@pytest.mark.skipif(
    not _corpus_present(), reason="../shared/corpus (the spam/ham corpus) is absent"
)
def test_spam_bench_quick(tmp_path):
    """Ours and each installed peer report recall, FP rate, accuracy and time per message."""
    result, document = run_quick("spam_bench.py", tmp_path, workdir=tmp_path)
    expected = {"ours"} | {name for name in ("bogofilter", "spamassassin") if shutil.which(name)}
    assert set(document["results"]) == expected
    for row in document["results"].values():
        for key in ("spam_recall", "ham_fp_rate", "accuracy", "recall_at_fp_target"):
            assert 0.0 <= row[key] <= 1.0, (key, row)
        assert row["ms_per_message"] > 0 and row["spam"] > 0 and row["ham"] > 0
    assert "recall@FP<=0.2%" in result.stdout
