"""``mailserver domain add|list|del``: the domains this server accepts mail for."""

from __future__ import annotations

import argparse
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import (
    CommandError,
    domain_name,
    require_domain,
    run_with_storage,
    say_note,
)
from mailserver.config import Config
from mailserver.store.maildir_store import MaildirStore


def register(subparsers: Any) -> None:
    """Add the ``domain`` noun and its verbs."""
    parser = subparsers.add_parser("domain", help="add, list or delete served domains")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="serve a domain")
    add.add_argument("name", metavar="NAME", help="the domain, e.g. example.org")
    add_config_option(add)
    add.set_defaults(handler=add_domain)

    listing = verbs.add_parser("list", help="list the served domains")
    add_config_option(listing)
    listing.set_defaults(handler=list_domains)

    delete = verbs.add_parser("del", help="stop serving a domain (it must have no users/aliases)")
    delete.add_argument("name", metavar="NAME", help="the domain to delete")
    add_config_option(delete)
    delete.set_defaults(handler=delete_domain)


def add_domain(args: argparse.Namespace) -> int:
    """Serve ``NAME``; print ``added domain NAME``."""
    name = domain_name(args.name)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if directory.has_domain(name):
            raise CommandError(f"domain {name} exists already; see: mailserver domain list")
        await directory.add_domain(name)
        print(f"added domain {name}")
        return 0

    return run_with_storage(args, work)


def list_domains(args: argparse.Namespace) -> int:
    """Print the served domains, one a line, sorted."""

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        names = sorted(domain.name for domain in directory.domains())
        for name in names:
            print(name)
        if not names:
            say_note("no domains yet; add one: mailserver domain add NAME")
        return 0

    return run_with_storage(args, work)


def delete_domain(args: argparse.Namespace) -> int:
    """Stop serving ``NAME``; refused while users or aliases of the domain remain."""
    name = domain_name(args.name)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        require_domain(directory, name)
        users = sorted(user.address for user in directory.users(name))
        aliases = sorted(alias.source for alias in directory.aliases(name))
        if users or aliases:
            raise CommandError(_still_used(name, users, aliases))
        await directory.remove_domain(name)
        print(f"deleted domain {name}")
        return 0

    return run_with_storage(args, work)


def _still_used(name: str, users: list[str], aliases: list[str]) -> str:
    """Why ``name`` cannot go yet, naming a few leftovers and the commands that remove them."""
    leftovers = users + aliases
    shown = ", ".join(leftovers[:5]) + (", ..." if len(leftovers) > 5 else "")
    steps = []
    if users:
        steps.append("mailserver user del ADDRESS")
    if aliases:
        steps.append("mailserver alias del SOURCE")
    return (
        f"domain {name} still has {len(users)} user(s) and {len(aliases)} alias(es) "
        f"({shown}); delete them first ({' and '.join(steps)}), then run this again"
    )
