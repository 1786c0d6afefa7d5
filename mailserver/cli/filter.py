"""``mailserver filter allow|block|unlist|lists|greylist``: the filter's lists and greylist.

Lists (:mod:`mailserver.filter.lists`) belong to the server (no option), to a domain
(``--domain D``) or to a recipient (``--user ADDRESS``). An entry is an address
(``user@example.com``), a domain (``example.com``), every subdomain of one
(``.example.com``) or an IP address or network (``192.0.2.0/24``, ``2001:db8::/32``).
Putting an entry on one list takes it off the other list of the same scope.

Who may do what (:mod:`mailserver.cli.permissions`): the scope given is the command's
target, in ``args.address`` whichever option named it, so a user manages their own lists, a
domain admin the lists of their domains and of their domains' users, and only an admin the
server's lists, ``lists --all`` and ``greylist``.
"""

from __future__ import annotations

import argparse
import getpass
import time
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
from mailserver.filter.greylist import GreylistCheck, GreylistCounts, settings_from
from mailserver.filter.lists import (
    SERVER,
    BadEntry,
    Entry,
    ListEntry,
    ListKind,
    ListStore,
    domain_scope,
    parse_entry,
    user_scope,
)
from mailserver.store.maildir_store import MaildirStore

ENTRY_HELP = (
    "user@example.com, example.com, .example.com (its subdomains), "
    "an IP address or a network such as 192.0.2.0/24"
)


class _Scope(argparse.Action):
    """``--domain``/``--user``: stores the value and makes it the permission target."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.address = values


def _scope_options(parser: argparse.ArgumentParser, everything: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--domain", metavar="DOMAIN", action=_Scope, help="the list of this domain we serve"
    )
    group.add_argument(
        "--user", metavar="ADDRESS", action=_Scope, help="the list of this recipient address"
    )
    if everything:
        group.add_argument("--all", action="store_true", help="every scope's entries")
    parser.set_defaults(domain=None, user=None, address=None)


def register(subparsers: Any) -> None:
    """Add the ``filter`` noun and its verbs."""
    parser = subparsers.add_parser("filter", help="allow and block lists, greylisting")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    for verb, handler, what in (
        ("allow", allow_entry, "trust mail from ENTRY (the checks that honour allow lists "
         "are skipped)"),
        ("block", block_entry, "refuse mail from ENTRY with 550 5.7.1"),
    ):
        command = verbs.add_parser(verb, help=what + "; the server's list unless --domain/--user")
        command.add_argument("entry", metavar="ENTRY", help=ENTRY_HELP)
        _scope_options(command)
        command.add_argument("--note", default="", help="why (shown by 'filter lists')")
        add_config_option(command)
        command.set_defaults(handler=handler)

    unlist = verbs.add_parser("unlist", help="take ENTRY off the allow and block lists")
    unlist.add_argument("entry", metavar="ENTRY", help=ENTRY_HELP)
    _scope_options(unlist)
    add_config_option(unlist)
    unlist.set_defaults(handler=unlist_entry)

    listing = verbs.add_parser("lists", help="print a scope's entries (the server's by default)")
    _scope_options(listing, everything=True)
    add_config_option(listing)
    listing.set_defaults(handler=list_entries)

    greylist = verbs.add_parser("greylist", help="count the greylist's records")
    greylist.add_argument(
        "--prune",
        dest="handler",
        action="store_const",
        const=prune_greylist,
        help="first delete the records that expired",
    )
    add_config_option(greylist)
    greylist.set_defaults(handler=greylist_status)


# -- arguments ------------------------------------------------------------------------------


def _scope(args: argparse.Namespace) -> str:
    """The list scope named by ``--domain``/``--user`` (the server's when neither)."""
    try:
        if args.domain is not None:
            return domain_scope(domain_name(args.domain))
        if args.user is not None:
            return user_scope(address(args.user))
    except BadEntry as error:
        raise CommandError(str(error)) from None
    return SERVER


def _entry(text: str) -> Entry:
    try:
        return parse_entry(text)
    except BadEntry as error:
        raise CommandError(f"bad entry: {error}") from None


def _whose(scope: str) -> str:
    return "the server's" if scope == SERVER else f"{scope}'s"


def _options(scope: str) -> str:
    """The options naming ``scope`` again, for the hints in messages."""
    if scope == SERVER:
        return ""
    return f" --user {scope}" if "@" in scope else f" --domain {scope}"


def _require_scope(directory: LmdbDirectory, args: argparse.Namespace, scope: str) -> None:
    """A domain scope must be served here; a user scope's domain too (a note when the
    address is neither a user nor an alias: its list is then never read)."""
    if args.domain is not None:
        require_domain(directory, domain_name(args.domain))
    elif args.user is not None:
        given = address(args.user)
        require_domain(directory, given.rpartition("@")[2])
        if not directory.resolve(given):
            say_note(f"{given} is not a user or alias here; its list applies once it is")


def _operator(args: argparse.Namespace) -> str:
    acting = getattr(args, "acting_as", None)
    if acting:
        return str(acting)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- verbs ----------------------------------------------------------------------------------


def allow_entry(args: argparse.Namespace) -> int:
    """Put ENTRY on the allow list of the scope."""
    return _add(args, ListKind.ALLOW)


def block_entry(args: argparse.Namespace) -> int:
    """Put ENTRY on the block list of the scope."""
    return _add(args, ListKind.BLOCK)


def _add(args: argparse.Namespace, kind: ListKind) -> int:
    scope = _scope(args)
    entry = _entry(args.entry)
    other = ListKind.BLOCK if kind is ListKind.ALLOW else ListKind.ALLOW

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        from twisted.internet import reactor

        _require_scope(directory, args, scope)
        lists = ListStore(store.db, reactor)
        added = await lists.add(scope, kind, entry.text, by=_operator(args), note=args.note)
        where = f"{_whose(scope)} {kind.value} list"
        if added.existed:
            print(f"{entry} is on {where} already")
        elif added.replaced:
            print(f"moved {entry} from {_whose(scope)} {other.value} list to its {kind.value} list")
        else:
            print(f"added {entry} to {where}")
        return 0

    return run_with_storage(args, work)


def unlist_entry(args: argparse.Namespace) -> int:
    """Take ENTRY off both lists of the scope."""
    scope = _scope(args)
    entry = _entry(args.entry)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        from twisted.internet import reactor

        removed = await ListStore(store.db, reactor).remove(scope, entry.text)
        if not removed:
            raise CommandError(
                f"{entry} is on none of {_whose(scope)} lists; see them with: "
                f"mailserver filter lists{_options(scope)}"
            )
        kinds = " and ".join(kind.value for kind in removed)
        print(f"removed {entry} from {_whose(scope)} {kinds} list")
        return 0

    return run_with_storage(args, work)


def list_entries(args: argparse.Namespace) -> int:
    """Print ``KIND  ENTRY  added DATE by WHO[: NOTE]`` per entry (with the scope first for
    ``--all``), allow list first."""
    scope = None if args.all else _scope(args)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        entries = ListStore(store.db).entries(scope)
        entries.sort(key=lambda e: (e.scope, e.kind is ListKind.BLOCK, e.entry.text))
        width = max((len(e.entry.text) for e in entries), default=0)
        scope_width = max((len(e.scope) for e in entries), default=0)
        for item in entries:
            head = f"{item.scope:<{scope_width}}  " if scope is None else ""
            print(f"{head}{item.kind.value}  {item.entry.text:<{width}}  {_added(item)}")
        if not entries:
            where = "any list" if scope is None else f"{_whose(scope)} lists"
            say_note(
                f"nothing on {where} yet; add an entry: "
                f"mailserver filter block ENTRY{_options(scope or SERVER)}"
            )
        return 0

    return run_with_storage(args, work)


def _added(item: ListEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.added)) if item.added else "?"
    text = f"added {when} by {item.by or '?'}"
    return f"{text}: {item.note}" if item.note else text


def greylist_status(args: argparse.Namespace) -> int:
    """Print how many greylist records there are of each kind."""
    return _greylist(args, prune=False)


def prune_greylist(args: argparse.Namespace) -> int:
    """Delete the expired greylist records, then print the counts."""
    return _greylist(args, prune=True)


def _greylist(args: argparse.Namespace, prune: bool) -> int:
    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        from twisted.internet import reactor

        try:
            settings = settings_from(getattr(config, "filter", None))
        except ValueError as error:
            raise CommandError(f"{error}; fix the [filter] section of the config") from None
        greylist = GreylistCheck(store.db, reactor, settings)
        if prune:
            print(f"pruned {await greylist.prune()} expired record(s)")
        _print_counts(greylist.counts())
        return 0

    return run_with_storage(args, work)


def _print_counts(counts: GreylistCounts) -> None:
    print(f"triplets waiting for a retry: {counts.waiting}")
    print(f"triplets passed: {counts.passed}")
    print(f"client networks: {counts.clients} (auto-allowed: {counts.auto_allowed})")
    print(f"sender domains: {counts.domains} (known good: {counts.known_domains})")
    print(f"expired, not yet pruned: {counts.expired}")
