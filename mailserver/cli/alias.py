"""``mailserver alias add|del|list``: addresses that forward to other addresses.

A source is ``local@domain`` or ``@domain``, the catch-all for every address of the domain
that is neither a user nor another alias. Targets may be local or remote addresses.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import (
    CommandError,
    address,
    domain_name,
    require_domain,
    run_with_storage,
    say_note,
)
from mailserver.config import Config
from mailserver.store.maildir_store import MaildirStore


def register(subparsers: Any) -> None:
    """Add the ``alias`` noun and its verbs."""
    parser = subparsers.add_parser("alias", help="add, delete or list aliases")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="forward SOURCE to one or more TARGETs")
    add.add_argument(
        "source", metavar="SOURCE", help="local@domain, or @domain for the domain's catch-all"
    )
    add.add_argument("targets", metavar="TARGET", nargs="+", help="address to forward to")
    add_config_option(add)
    add.set_defaults(handler=add_alias)

    delete = verbs.add_parser("del", help="delete an alias")
    delete.add_argument("source", metavar="SOURCE", help="local@domain or @domain")
    add_config_option(delete)
    delete.set_defaults(handler=delete_alias)

    listing = verbs.add_parser("list", help="list aliases as 'SOURCE -> TARGET, ...'")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", help="only this domain's aliases")
    add_config_option(listing)
    listing.set_defaults(handler=list_aliases)


def alias_source(text: str) -> str:
    """The canonical source: ``local@domain`` or ``@domain`` (catch-all)."""
    text = text.strip()
    if text.startswith("@"):
        return "@" + domain_name(text[1:])
    return address(text)


def _find(directory: LmdbDirectory, source: str) -> tuple[str, ...] | None:
    """The targets of alias ``source``, or None when there is no such alias."""
    domain = source.rpartition("@")[2]
    for alias in directory.aliases(domain):
        if alias.source == source:
            return alias.targets
    return None


def add_alias(args: argparse.Namespace) -> int:
    """Create the alias; refused when the source is a user or already an alias."""
    source = alias_source(args.source)
    targets = list(dict.fromkeys(address(target) for target in args.targets))
    if source in targets:
        raise CommandError(f"alias {source} may not point at itself; give other targets")

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        domain = source.rpartition("@")[2]
        require_domain(directory, domain)
        if directory.get_user(source) is not None:
            raise CommandError(
                f"{source} is a user, so an alias of that address would never be used; "
                f"choose another source or delete the user: mailserver user del {source}"
            )
        existing = _find(directory, source)
        if existing is not None:
            raise CommandError(
                f"alias {source} exists already (-> {', '.join(existing)}); to change it: "
                f"mailserver alias del {source}, then add it again"
            )
        for target in targets:
            if directory.has_domain(target.rpartition("@")[2]) and not directory.resolve(target):
                say_note(f"{target} is not a user or alias here yet; mail to it will be refused")
        await directory.add_alias(source, targets)
        print(f"added alias {source} -> {', '.join(targets)}")
        return 0

    return run_with_storage(args, work)


def delete_alias(args: argparse.Namespace) -> int:
    """Delete the alias ``SOURCE``."""
    source = alias_source(args.source)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if _find(directory, source) is None:
            raise CommandError(f"no alias {source}; see the aliases with: mailserver alias list")
        await directory.remove_alias(source)
        print(f"deleted alias {source}")
        return 0

    return run_with_storage(args, work)


def list_aliases(args: argparse.Namespace) -> int:
    """Print ``SOURCE -> TARGET, ...`` for every alias (of ``DOMAIN`` when given), sorted."""
    domain = None if args.domain is None else domain_name(args.domain)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if domain is not None:
            require_domain(directory, domain)
        aliases = sorted(directory.aliases(domain), key=lambda a: a.source)
        for alias in aliases:
            print(f"{alias.source} -> {', '.join(alias.targets)}")
        if not aliases:
            say_note("no aliases yet; add one: mailserver alias add SOURCE TARGET...")
        return 0

    return run_with_storage(args, work)
