"""Helpers shared by the noun modules of the command line."""

from __future__ import annotations

import argparse

from mailserver.config import Config, load


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config PATH`` after the verb too; it wins over the global one."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file (default: the embedded defaults)",
    )


def load_config(args: argparse.Namespace) -> Config:
    """The Config named by ``--config`` (embedded defaults when absent); raises ConfigError."""
    return load(getattr(args, "config", None))
