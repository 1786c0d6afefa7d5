"""``python -m tests.filter.spam.cli_runner --config PATH spam VERB ...``: the ``spam`` noun
run the way ``mailserver`` runs it, whether or not main.py lists it yet (one process per
command, as the storage nouns need: each runs the reactor once)."""

from __future__ import annotations

import argparse
import sys

from mailserver.cli import main as cli_main
from mailserver.cli import spam


def run(argv: list[str]) -> int:
    if "mailserver.cli.spam" in cli_main.NOUNS:
        return cli_main.main(argv)
    parser = argparse.ArgumentParser(prog="mailserver")
    parser.add_argument("--config", default=None)
    spam.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return cli_main._run(args.handler, args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
