"""``mailserver config check|example``: exit codes and one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from mailserver import config
from mailserver.cli.main import main
from mailserver.tls import ensure_self_signed


def mailserver_script() -> str:
    """The installed ``mailserver`` console script of this virtualenv."""
    beside = os.path.join(os.path.dirname(sys.executable), "mailserver")
    return beside if os.path.exists(beside) else shutil.which("mailserver") or beside


def test_check_bad_config_exits_2_with_one_line(tmp_path, capsys):
    """An unknown key gives exit 2 and one stderr line naming the key and the fix."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[log]\nlevl = "debug"\n')
    assert main(["config", "check", "--config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "log.levl" in err
    assert "did you mean 'log.level'" in err


def test_check_good_config_exits_0(tmp_path, capsys):
    """A valid file gives exit 0 and 'config OK: <path>'."""
    good = tmp_path / "good.toml"
    good.write_text('[server]\nhostname = "mx.example"\n')
    assert main(["config", "check", "--config", str(good)]) == 0
    assert capsys.readouterr().out == f"config OK: {good}\n"


def test_check_without_config_uses_defaults(capsys):
    """Without --config the embedded defaults are checked."""
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out == "config OK: embedded defaults\n"


def test_global_config_option(tmp_path, capsys):
    """The global --config before the noun is honoured too."""
    good = tmp_path / "good.toml"
    good.write_text("")
    assert main(["--config", str(good), "config", "check"]) == 0
    assert capsys.readouterr().out == f"config OK: {good}\n"


def test_missing_config_file(tmp_path, capsys):
    """A missing file gives exit 2 and one line naming the path, not a traceback."""
    assert main(["config", "check", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "nope.toml" in err


def test_check_refuses_mismatched_tls_pair(tmp_path, capsys):
    """A configured key that does not belong to the certificate gives exit 2 naming tls.key."""
    cert, _ = ensure_self_signed(str(tmp_path / "a"), "localhost")
    _, key = ensure_self_signed(str(tmp_path / "b"), "localhost")
    conf = tmp_path / "tls.toml"
    conf.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    assert main(["config", "check", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("config error: tls.key: ")


def test_example_prints_render_example(capsys):
    """'config example' prints exactly render_example()."""
    assert main(["config", "example"]) == 0
    assert capsys.readouterr().out == config.render_example()


def test_no_command_prints_help(capsys):
    """No noun prints the help on stderr and exits 2."""
    assert main([]) == 2
    assert "config" in capsys.readouterr().err


def test_installed_script(tmp_path):
    """The installed console script runs 'config check' and reports a bad key in one line."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nmap_size_mb = 0\n")
    done = subprocess.run(
        [mailserver_script(), "config", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "config error: store.map_size_mb: must be greater than 0, got 0 (use a positive number)"
    ]
