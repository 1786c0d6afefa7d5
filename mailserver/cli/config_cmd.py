"""``mailserver config check|example``: validate a config file, print the annotated example."""

from __future__ import annotations

import argparse
from typing import Any

from mailserver.cli.common import add_config_option, load_config
from mailserver.config import render_example
from mailserver.tls import server_options


def register(subparsers: Any) -> None:
    """Add the ``config`` noun and its verbs."""
    parser = subparsers.add_parser("config", help="check or show the configuration")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    check = verbs.add_parser("check", help="validate a config file (exit 2 on the first error)")
    add_config_option(check)
    check.set_defaults(handler=check_config)

    example = verbs.add_parser("example", help="print the annotated example config")
    example.set_defaults(handler=print_example)


def check_config(args: argparse.Namespace) -> int:
    """Load and validate the config (and a configured certificate/key pair); print
    ``config OK: <source>``. ConfigError propagates to main: one line, exit 2."""
    config = load_config(args)
    if config.tls.cert:
        server_options(config.tls.cert, config.tls.key)
    print(f"config OK: {config.source}")
    return 0


def print_example(args: argparse.Namespace) -> int:
    """Print :func:`mailserver.config.render_example` (the shipped example is this output)."""
    print(render_example(), end="")
    return 0
