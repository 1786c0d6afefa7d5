"""``mailserver dkim keygen|rotate|remove|list``: the DKIM signing keys of the served domains.

Keys live under ``<data_dir>/dkim`` (see :mod:`mailserver.msgauth.keys`); the server picks up
a new or rotated key with the next message, without a restart. Every command that makes a
key prints the DNS records to publish, as zone-file lines: the RSA record is longer than one
255-byte TXT string, so it is printed as several quoted strings (RFC 1035 §3.3.14), which
DNS joins back together.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mailserver.cli.common import add_config_option, load_config
from mailserver.cli.storage import CommandError, say_note
from mailserver.msgauth.keys import (
    DKIMKey,
    DKIMKeyError,
    KeyStore,
    algorithms_for,
    check_domain,
    default_selector,
)

__all__ = ["keygen", "list_keys", "register", "remove", "rotate", "zone_line"]


def register(subparsers: Any) -> None:
    """Add the ``dkim`` noun and its verbs."""
    parser = subparsers.add_parser("dkim", help="DKIM signing keys and their DNS records")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    make = verbs.add_parser("keygen", help="make signing keys for a domain")
    make.add_argument("domain", metavar="DOMAIN", help="the signing domain, e.g. example.org")
    make.add_argument("--selector", metavar="S", default=None,
                      help="the selector (default: s + today's date, e.g. s20261129)")
    _algorithm_option(make, "both")
    add_config_option(make)
    make.set_defaults(handler=keygen)

    turn = verbs.add_parser(
        "rotate", help="make new keys under a new selector and sign with them from now on"
    )
    turn.add_argument("domain", metavar="DOMAIN", help="the signing domain")
    turn.add_argument("--selector", metavar="S", default=None,
                      help="the new selector (default: s + today's date)")
    _algorithm_option(turn, None)
    add_config_option(turn)
    turn.set_defaults(handler=rotate)

    retire = verbs.add_parser(
        "remove", help="delete the keys of an old (inactive) selector after rotation"
    )
    retire.add_argument("domain", metavar="DOMAIN", help="the signing domain")
    retire.add_argument("selector", metavar="SELECTOR", help="the old selector")
    add_config_option(retire)
    retire.set_defaults(handler=remove)

    listing = verbs.add_parser("list", help="list keys and the DNS TXT records to publish")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", default=None,
                         help="only this domain (default: every domain with keys)")
    add_config_option(listing)
    listing.set_defaults(handler=list_keys)


def _algorithm_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--algorithm",
        choices=("rsa", "ed25519", "both"),
        default=default,
        help="rsa (2048 bits), ed25519 (RFC 8463) or both"
        + (" (default: both)" if default else " (default: those of the active selector)"),
    )


def _store(args: argparse.Namespace) -> KeyStore:
    config = load_config(args)
    return KeyStore(os.path.join(config.server.data_path, "dkim"))


def zone_line(key: DKIMKey) -> str:
    """``NAME. IN TXT ( "..." "..." )`` for a zone file."""
    record = key.dns_record()
    parts = " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
    return f"{key.dns_name}. IN TXT ( {parts} )"


def _print_made(made: list[DKIMKey], store: KeyStore, verb: str) -> None:
    domain, selector = made[0].domain, made[0].selector
    algorithms = " and ".join(key.algorithm for key in made)
    active = store.active_selector(domain) == selector
    state = "signing with it now" if active else "not active: run rotate to sign with it"
    print(f"{verb} {algorithms} key(s) for {domain}, selector {selector} ({state})")
    print("publish in DNS:")
    for key in made:
        print(zone_line(key))


def keygen(args: argparse.Namespace) -> int:
    """Make keys for ``DOMAIN`` and print the records to publish."""
    store = _store(args)
    try:
        algorithms = algorithms_for(args.algorithm)
        selector = args.selector
        if selector is None:
            selector = default_selector(store.selectors(check_domain(args.domain)))
        made = store.generate(args.domain, selector, algorithms)
    except DKIMKeyError as error:
        raise CommandError(str(error)) from None
    _print_made(made, store, "made")
    return 0


def rotate(args: argparse.Namespace) -> int:
    """New keys under a new selector, active at once; the old records stay to publish."""
    store = _store(args)
    try:
        algorithms = algorithms_for(args.algorithm) if args.algorithm else None
        old = store.active_selector(args.domain)
        made = store.rotate(args.domain, args.selector, algorithms)
    except DKIMKeyError as error:
        raise CommandError(str(error)) from None
    _print_made(made, store, "rotated to")
    if old:
        say_note(
            f"keep the records of selector {old} published until mail signed with it "
            "has been delivered and read (a few days)"
        )
    return 0


def remove(args: argparse.Namespace) -> int:
    """Delete an inactive selector's keys; its DNS records can go too."""
    store = _store(args)
    try:
        gone = store.remove(args.domain, args.selector)
    except DKIMKeyError as error:
        raise CommandError(str(error)) from None
    names = ", ".join(f"{key.dns_name}." for key in gone)
    print(f"removed selector {gone[0].selector} of {gone[0].domain}; "
          f"its TXT records can be withdrawn: {names}")
    return 0


def list_keys(args: argparse.Namespace) -> int:
    """Each domain's selectors, which one signs, and the TXT record of every key."""
    store = _store(args)
    try:
        domains = [args.domain] if args.domain else store.domains()
        for domain in domains:
            keys = store.keys(domain)
            if not keys:
                raise CommandError(
                    f"no DKIM keys for {domain}; make some: mailserver dkim keygen {domain}"
                )
            active = store.active_selector(domain)
            for key in keys:
                state = "active" if key.selector == active else "inactive"
                print(f"{key.domain} {key.selector} {key.algorithm} {state}")
                print(f"  {zone_line(key)}")
    except DKIMKeyError as error:
        raise CommandError(str(error)) from None
    if not args.domain and not store.domains():
        say_note("no DKIM keys yet; make some: mailserver dkim keygen DOMAIN")
    return 0
