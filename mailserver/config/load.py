"""Reading a config: TOML text or a parsed mapping checked key by key into a :class:`Config`.

Unknown sections and keys, values of the wrong type and values a key's check refuses raise
:class:`mailserver.errors.ConfigError` naming the dotted key and the fix (the closest known name
for a typo, the default's notation for a wrong type).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

from mailserver.config.example import _toml_value
from mailserver.config.tree import Config, _sections
from mailserver.errors import ConfigError


def load(path: str | None) -> Config:
    """Read the TOML file at ``path``; ``None`` gives the embedded defaults.

    Raises ConfigError for an unreadable file, a TOML syntax error or any invalid key.
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise ConfigError(
            path,
            f"cannot read the config file: {error.strerror or error}",
            "check the --config path, or leave --config out to run on embedded defaults",
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(path, f"not UTF-8 ({error.reason})", "save the file as UTF-8") from None
    return loads(text, source=path)


def loads(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in errors and in Config.source."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            source, f"TOML syntax error: {error}", "fix the TOML syntax at that line"
        ) from None
    return from_mapping(document, source=source)


def from_mapping(document: Mapping[str, Any], source: str = "<mapping>") -> Config:
    """Build a validated Config from parsed TOML (nested dicts); unknown keys are errors."""
    sections = _sections()
    values: dict[str, Any] = {}
    for name, body in document.items():
        if name not in sections:
            raise ConfigError(name, "unknown section", _suggest(name, list(sections), "section"))
        if not isinstance(body, Mapping):
            raise ConfigError(
                name, f"expected a table, got {_type_name(body)}", f"write it as [{name}]"
            )
        values[name] = _section(name, sections[name], body)
    config = Config(**values, source=source)
    _check_files(config)
    return config


def _section(name: str, cls: type, body: Mapping[str, Any]) -> Any:
    """Validate one section's keys and values and build its dataclass."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in body.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            known = [f"{name}.{k}" for k in fields]
            raise ConfigError(dotted, "unknown key", _suggest(dotted, known, "key"))
        value = _coerce(dotted, hints[key], raw)
        check = fields[key].metadata.get("check")
        if check is not None:
            result = check(value)
            if result is not None:
                raise ConfigError(dotted, *result)
        values[key] = value
    return cls(**values)


def _coerce(dotted: str, expected: Any, raw: Any) -> Any:
    """Check ``raw`` against the annotated type and convert it (int -> float, list -> tuple)."""
    if expected is bool:
        ok = isinstance(raw, bool)
    elif expected is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif expected is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    elif expected is str:
        ok = isinstance(raw, str)
    elif typing.get_origin(expected) is tuple:
        item = typing.get_args(expected)[0]
        ok = isinstance(raw, list) and all(isinstance(v, item) for v in raw)
        raw = tuple(raw) if ok else raw
    else:  # pragma: no cover - a new annotation needs a branch here
        raise TypeError(f"unsupported config type {expected!r} for {dotted}")
    if not ok:
        raise ConfigError(
            dotted,
            f"expected {_expected_name(expected)}, got {_type_name(raw)} {_short(raw)}",
            f"write it like the default: {dotted.split('.')[-1]} = {_example_value(dotted)}",
        )
    return raw


def _check_files(config: Config) -> None:
    """Refuse configured certificate/key files that are missing or given without the other."""
    tls = config.tls
    if bool(tls.cert) != bool(tls.key):
        missing = "tls.key" if tls.cert else "tls.cert"
        raise ConfigError(
            missing,
            "tls.cert and tls.key must be given together",
            'set both, or set both to "" for a self-signed certificate',
        )
    for key, path in (("tls.cert", tls.cert), ("tls.key", tls.key)):
        if path and not os.path.isfile(path):
            raise ConfigError(
                key,
                f"file not found: {os.path.abspath(path)}",
                'fix the path, or set tls.cert and tls.key to "" for a self-signed certificate',
            )


def _suggest(name: str, known: list[str], what: str) -> str:
    """A fix naming the closest known ``what`` (a section or a key), or listing them all."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known {what}s: {', '.join(known)}"


def _expected_name(expected: Any) -> str:
    """A reader's name for an annotated type."""
    if typing.get_origin(expected) is tuple:
        return f"a list of {_expected_name(typing.get_args(expected)[0]).split()[-1]}s"
    names = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}
    return names.get(expected, str(expected))


def _type_name(value: Any) -> str:
    """A reader's name for the type of a parsed TOML value."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    return names.get(type(value), "table" if isinstance(value, Mapping) else type(value).__name__)


def _short(value: Any) -> str:
    """``value`` in TOML notation, cut to a readable length."""
    text = _toml_value(value) if not isinstance(value, Mapping) else "{...}"
    return text if len(text) <= 40 else text[:37] + "..."


def _example_value(dotted: str) -> str:
    """The default of ``dotted`` in TOML notation."""
    section, key = dotted.split(".", 1)
    return _toml_value(getattr(getattr(Config(), section), key))
