"""mailserver.config: defaults, validation errors naming the key, and the shipped example."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailserver import config
from mailserver.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "mailserver.toml.example"


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    assert "\n" not in str(info.value)
    return info.value


def test_embedded_defaults():
    """load(None) gives the documented defaults and names its source."""
    c = config.load(None)
    assert c.source == "embedded defaults"
    assert c.server.hostname == "localhost"
    assert c.server.data_dir == "var"
    assert c.server.data_path == os.path.abspath("var")
    assert c.server.shutdown_timeout == 10.0
    assert (c.tls.cert, c.tls.key) == ("", "")
    assert (c.store.map_size_mb, c.store.fsync) == (1024, True)
    assert c.auth.bcrypt_cost == 12
    assert c.http.listen == ("tcp:8080:interface=127.0.0.1",)
    assert (c.log.level, c.log.format) == ("info", "text")


def test_file_values_override_defaults(tmp_path):
    """A file sets only the keys it names; an int is accepted for a float key."""
    path = tmp_path / "m.toml"
    path.write_text(
        '[server]\nhostname = "mx.example"\nshutdown_timeout = 3\n'
        "[http]\nlisten = []\n[store]\nfsync = false\n"
    )
    c = config.load(str(path))
    assert c.source == str(path)
    assert c.server.hostname == "mx.example"
    assert c.server.shutdown_timeout == 3.0
    assert isinstance(c.server.shutdown_timeout, float)
    assert c.http.listen == ()
    assert c.store.fsync is False
    assert c.server.data_dir == "var"


def test_unknown_key_suggests_closest():
    """An unknown key is named with its section and the closest known key is suggested."""
    error = error_for('[server]\nhostnme = "x"\n')
    assert error.key == "server.hostnme"
    assert "did you mean 'server.hostname'" in str(error)


def test_unknown_section_suggests_closest():
    """An unknown section is named and the closest section suggested."""
    error = error_for("[sever]\n")
    assert error.key == "sever"
    assert "'server'" in str(error)


def test_section_must_be_a_table():
    """A section given as a scalar is refused as 'expected a table'."""
    error = error_for("server = 3\n")
    assert error.key == "server"
    assert "expected a table" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[store]\nmap_size_mb = "big"\n', "store.map_size_mb", "an integer"),
        ("[store]\nfsync = 1\n", "store.fsync", "a boolean"),
        ("[auth]\nbcrypt_cost = true\n", "auth.bcrypt_cost", "an integer"),
        ('[http]\nlisten = "tcp:80"\n', "http.listen", "a list of strings"),
        ("[server]\nhostname = 5\n", "server.hostname", "a string"),
    ],
)
def test_wrong_type_names_expected_type(text, key, expected):
    """A value of the wrong type names the key and the expected type."""
    error = error_for(text)
    assert error.key == key
    assert f"expected {expected}" in str(error)


@pytest.mark.parametrize("endpoint", ["tcp:abc", "nosuch:25", "tcp:25:bogus=1", "tcp:70000", ""])
def test_bad_listener_endpoint(endpoint):
    """An endpoint string Twisted cannot parse is refused, naming the key and the string."""
    error = error_for(f'[http]\nlisten = ["tcp:8080", "{endpoint}"]\n')
    assert error.key == "http.listen"
    assert repr(endpoint) in str(error)


def test_endpoint_validation_does_not_listen():
    """Validating an endpoint string never binds the port."""
    assert config.endpoint_problem("tcp:1:interface=127.0.0.1") is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[store]\nmap_size_mb = 0\n", "store.map_size_mb"),
        ("[server]\nshutdown_timeout = -1.5\n", "server.shutdown_timeout"),
        ("[auth]\nbcrypt_cost = 3\n", "auth.bcrypt_cost"),
        ('[log]\nlevel = "verbose"\n', "log.level"),
        ('[log]\nformat = "xml"\n', "log.format"),
        ('[server]\nhostname = " "\n', "server.hostname"),
    ],
)
def test_out_of_range_values(text, key):
    """Non-positive sizes, out-of-range costs and unknown choices name the key."""
    assert error_for(text).key == key


def test_missing_cert_file(tmp_path):
    """A configured certificate file that does not exist names tls.cert and the fix."""
    key = tmp_path / "key.pem"
    key.write_text("x")
    error = error_for(f'[tls]\ncert = "{tmp_path}/nope.pem"\nkey = "{key}"\n')
    assert error.key == "tls.cert"
    assert "nope.pem" in str(error)
    assert "self-signed" in str(error)


def test_cert_without_key(tmp_path):
    """A certificate without its key is refused, naming tls.key."""
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    assert error_for(f'[tls]\ncert = "{cert}"\n').key == "tls.key"


def test_toml_syntax_error_gives_line(tmp_path):
    """A TOML syntax error names the file and the line."""
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nhostname = "a"\nthis is not toml\n')
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert info.value.key == str(path)
    assert "line 3" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    """A config path that does not exist is a ConfigError naming the path, not an OSError."""
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path / "absent.toml"))
    assert "absent.toml" in str(info.value)


def test_example_round_trips():
    """The generated example parses and yields exactly the defaults."""
    assert config.loads(config.render_example()) == config.Config(source="<string>")


def test_example_documents_every_key():
    """Every key appears in the example, commented out, after its doc line."""
    text = config.render_example()
    for section in ("server", "tls", "store", "auth", "http", "log"):
        assert f"\n[{section}]\n" in text
    for key in (
        "hostname",
        "data_dir",
        "shutdown_timeout",
        "cert",
        "key",
        "map_size_mb",
        "fsync",
        "bcrypt_cost",
        "listen",
        "level",
        "format",
    ):
        assert f"\n#{key} = " in text


def test_shipped_example_is_current():
    """etc/mailserver.toml.example is exactly what render_example() generates."""
    assert EXAMPLE.read_text() == config.render_example(), (
        "etc/mailserver.toml.example is out of date; regenerate it with "
        "`mailserver config example > etc/mailserver.toml.example`"
    )
