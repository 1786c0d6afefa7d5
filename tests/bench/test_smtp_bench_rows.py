"""smtp_bench's rows: with --base-code each 'ours wN' row gets a 'base wN' row beside it
(same settings, older code), and a directory without a mailserver package is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import smtp_bench
from tests.peers.postfix import which


def test_base_rows_sit_beside_their_ours_rows_with_the_same_settings() -> None:
    """our_rows puts 'base wN' right after 'ours wN', 'full' rows last; the base profile
    has the settings of the ours profile."""
    rows = smtp_bench.our_rows((1, 2), (2,), base=True)
    assert [name for name, _profile, _count in rows] == [
        "ours w1", "base w1", "ours w2", "base w2", "full w2"
    ]
    assert smtp_bench.PROFILES["base"][0] == smtp_bench.PROFILES["ours"][0]
    assert [name for name, *_ in smtp_bench.our_rows((2,), ())] == ["ours w2"]


def test_base_code_without_a_mailserver_package_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base-code naming a directory without mailserver/__init__.py ends with a usage error
    that names the directory."""
    if which("smtp-source") is None:
        pytest.skip("smtp-source not installed (Debian package postfix)")
    with pytest.raises(SystemExit) as exit_:
        smtp_bench.main(["--skip-postfix", "--base-code", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"no mailserver package in {tmp_path}" in capsys.readouterr().err
