"""Writing the annotated example config (``etc/mailserver.toml.example``) from the schema."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mailserver.config.tree import Config, _sections


def _toml_value(value: Any) -> str:
    """Render a scalar or a list as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def render_example() -> str:
    """The annotated example config: every section, every key commented out with its default
    and its one-line doc. ``etc/mailserver.toml.example`` is exactly this text."""
    lines = [
        "# mailserver configuration (TOML).",
        "#",
        "# Generated from mailserver/config/: `mailserver config example > "
        "etc/mailserver.toml.example`.",
        "# Every key is optional and shown commented out with its default; uncomment to change.",
        "# Check a file with `mailserver config check --config PATH`.",
    ]
    defaults = Config()
    for name, cls in _sections().items():
        summary = (cls.__doc__ or "").strip().split(":", 1)[-1].strip()
        lines += ["", f"[{name}]", f"# {summary[:1].upper()}{summary[1:]}"]
        for f in dataclasses.fields(cls):
            value = getattr(getattr(defaults, name), f.name)
            lines += ["", f"# {f.metadata['doc']}", f"#{f.name} = {_toml_value(value)}"]
    return "\n".join(lines) + "\n"
