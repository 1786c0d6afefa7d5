"""``mailserver dns [check] DOMAIN``: the DNS records a served domain needs, and whether DNS has
them.

``mailserver dns DOMAIN`` prints the records as zone-file lines, each group under a one-line
comment (see :mod:`mailserver.msgauth.records`), then the MTA-STS policy file as comments;
``--mta-sts-policy`` and ``--autoconfig`` print only that file, ``--json`` everything for
machines. ``mailserver dns check DOMAIN`` looks every record up (``--nameserver``, else
``[delivery] nameservers``, else the system's resolver) and prints one verdict line each,
``ok``, ``missing`` or ``wrong: found X, want Y``, then a summary; it exits 0 only when all
are ok. It also fetches the MTA-STS policy file as a sending server would (verified HTTPS,
RFC 8461 §3.3), its host's address looked up in the same DNS.

Both read the config and the DKIM keys only: they are not audited. Domain admins may run
them for their own domains (the permission rule of ``user list DOMAIN``): the records hold
nothing secret, and a domain admin is who publishes them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import treq
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import react
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mailserver.cli.common import add_config_option, load_config
from mailserver.cli.storage import CommandError, say_note
from mailserver.config import Config
from mailserver.dns import DNSTemporaryError, Records, Resolver
from mailserver.msgauth.keys import DKIMKeyError, KeyStore, check_domain
from mailserver.msgauth.records import (
    DMARC_POLICIES,
    MTA_STS_MODES,
    Record,
    Settings,
    Verdict,
    autoconfig_xml,
    judge,
    mta_sts_policy,
    settings_from_config,
    wanted_records,
)
from mailserver.spool.mtasts import MAX_POLICY, PolicyError, mx_matches, parse_policy

__all__ = ["check_records", "print_records", "register"]

_ADDRESS = re.compile(r"[^@\s;,!]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+\Z")


class _Words(argparse.Action):
    """``DOMAIN`` prints the records, ``check DOMAIN`` checks them (``check`` is no domain:
    it has no dot)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        words = list(values)
        if len(words) == 2 and words[0] == "check":
            namespace.handler = check_records
        elif len(words) != 1 or words[0] == "check":
            parser.error("expected DOMAIN or: check DOMAIN")
        namespace.domain = words[-1]


def register(subparsers: Any) -> None:
    """Add the ``dns`` noun."""
    parser = subparsers.add_parser(
        "dns",
        help="the DNS records to publish for a domain; 'dns check DOMAIN' verifies them",
        usage="mailserver dns [check] DOMAIN [options]",
        description="Print the DNS records DOMAIN needs (MX, SPF, DKIM, DMARC, MTA-STS, "
        "TLSRPT, SRV) as zone-file lines, or with 'check' look them up and say which are "
        "missing or wrong.",
    )
    parser.add_argument("words", nargs="+", action=_Words, metavar="[check] DOMAIN",
                        help="the domain, e.g. example.org; 'check DOMAIN' to look them up")
    parser.add_argument("--policy", choices=DMARC_POLICIES, default="quarantine",
                        help="DMARC policy for mail failing authentication (default: quarantine)")
    parser.add_argument("--rua", metavar="ADDRESS", default="",
                        help="DMARC aggregate report address (default: dmarc-reports@DOMAIN)")
    parser.add_argument("--tlsrpt-rua", metavar="ADDRESS", default="",
                        help="TLS report address (default: tls-reports@DOMAIN)")
    parser.add_argument("--mta-sts-mode", choices=MTA_STS_MODES, default="testing",
                        help="MTA-STS mode (default: testing; enforce once TLS reports are "
                        "clean)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--mta-sts-policy", action="store_true",
                        help="print only the MTA-STS policy file")
    parser.add_argument("--autoconfig", action="store_true",
                        help="print only the Thunderbird autoconfig file")
    parser.add_argument("--nameserver", metavar="HOST[:PORT]", default=None,
                        help="check: ask this DNS server (default: [delivery] nameservers, "
                        "else /etc/resolv.conf)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="check: seconds to wait for each answer (default: 5)")
    add_config_option(parser)
    parser.set_defaults(handler=print_records)


def _settings(args: argparse.Namespace, config: Config) -> Settings:
    """The records' inputs: config, DKIM keys, options; CommandError for bad input."""
    try:
        domain = check_domain(args.domain)
    except DKIMKeyError as error:
        raise CommandError(str(error)) from None
    for option, address in (("--rua", args.rua), ("--tlsrpt-rua", args.tlsrpt_rua)):
        if address and not _ADDRESS.match(address):
            raise CommandError(f"{option} {address!r}: not a mail address (e.g. reports@{domain})")
    host = config.server.hostname
    if "." not in host.strip("."):
        say_note(f"[server] hostname is {host!r}: set it to the server's public name, "
                 "the MX host")
    store = KeyStore(os.path.join(config.server.data_path, "dkim"))
    try:
        keys = store.keys(domain)
        active = store.active_selector(domain)
    except OSError as error:
        raise CommandError(
            f"cannot read the DKIM keys of {domain}: {error.strerror or error} "
            f"({error.filename}); run as the server's user"
        ) from None
    if not keys:
        say_note(f"no DKIM keys for {domain}; make some: mailserver dkim keygen {domain}")
    return settings_from_config(
        config, domain, keys, dkim_active=active,
        dmarc_policy=args.policy, dmarc_rua=args.rua, tlsrpt_rua=args.tlsrpt_rua,
        mta_sts_mode=args.mta_sts_mode,
    )


def print_records(args: argparse.Namespace) -> int:
    """Print the records to publish (or one of the files, or JSON)."""
    if args.nameserver:
        raise CommandError("--nameserver is for 'mailserver dns check DOMAIN'")
    settings = _settings(args, load_config(args))
    policy = mta_sts_policy(settings)
    if args.mta_sts_policy:
        sys.stdout.write(policy.replace("\r\n", "\n"))
        return 0
    if args.autoconfig:
        sys.stdout.write(autoconfig_xml(settings))
        return 0
    records = wanted_records(settings)
    domain = settings.domain
    policy_url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    autoconfig_url = f"https://autoconfig.{domain}/mail/config-v1.1.xml"
    if args.json:
        print(json.dumps({
            "domain": domain,
            "records": [record.as_json() for record in records],
            "mta_sts_policy": {"url": policy_url, "text": policy},
            "autoconfig": {"url": autoconfig_url, "text": autoconfig_xml(settings)},
        }, indent=2))
        return 0
    print(f"; DNS records for {domain} (check them: mailserver dns check {domain})")
    previous = ""
    for record in records:
        if record.comment != previous:
            print(f"; {record.comment}")
            previous = record.comment
        print(record.zone_line())
    print(f"; MTA-STS policy file for {policy_url}")
    print(f"; (alone: mailserver dns {domain} --mta-sts-policy)")
    for line in policy.splitlines():
        print(f";   {line}")
    print(f"; Thunderbird autoconfig: mailserver dns {domain} --autoconfig, served at")
    print(f"; {autoconfig_url}")
    return 0


def check_records(args: argparse.Namespace) -> int:
    """Look every wanted record up and print a verdict line each; 0 when all are ok."""
    config = load_config(args)
    nameservers = [args.nameserver] if args.nameserver else list(config.delivery.nameservers)
    for server in nameservers:
        _check_nameserver(server)
    if args.timeout <= 0:
        raise CommandError("--timeout must be a positive number of seconds")
    settings = _settings(args, config)
    records = wanted_records(settings)
    outcome: list[Any] = []

    async def both(reactor: Any) -> list[Verdict]:
        resolver = Resolver(reactor, nameservers, timeout=args.timeout)
        verdicts = await _look_up(resolver, records)
        if all(v.state == "failed" for v in verdicts):
            return verdicts  # the DNS is unreachable: one error line, no fetch
        return [*verdicts, await _fetch_policy(reactor, resolver, settings, args.timeout)]

    def run(reactor: Any) -> Deferred[None]:
        return ensureDeferred(both(reactor)).addBoth(outcome.append)

    try:
        react(run)
    except SystemExit:
        pass  # react always exits; outcome holds the answers
    if not outcome:
        raise CommandError("interrupted")
    if not isinstance(outcome[0], list):
        raise CommandError(f"the look-ups did not finish: {outcome[0]}")
    verdicts: list[Verdict] = outcome[0]
    where = ", ".join(nameservers) or "the system resolver"
    if verdicts and all(v.state == "failed" for v in verdicts):
        raise CommandError(f"no answers from {where}: {verdicts[0].found}")
    bad = [v for v in verdicts if not v.ok]
    if args.json:
        print(json.dumps({
            "domain": settings.domain,
            "nameservers": nameservers,
            "ok": not bad,
            "verdicts": [v.as_json() for v in verdicts],
        }, indent=2))
        return 1 if bad else 0
    for verdict in verdicts:
        print(verdict.line())
    failed = sum(1 for v in bad if v.state == "failed")
    if failed:
        print(f"{failed} of {len(verdicts)} records could not be looked up: try again later")
    if len(bad) > failed:
        print(f"{len(bad) - failed} of {len(verdicts)} records missing or wrong: publish them "
              f"as 'mailserver dns {settings.domain}' prints them (old answers stay cached "
              "for up to their TTL)")
    if bad:
        return 1
    print(f"all {len(verdicts)} records are published as wanted")
    return 0


def _check_nameserver(text: str) -> None:
    """``HOST`` or ``HOST:PORT`` (``[IPv6]:PORT``) with an IP address as host."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        good = port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        good = False
    if not good:
        raise CommandError(
            f"nameserver {text!r}: not an IP address with an optional port (e.g. 127.0.0.1:53)"
        )


def _look_up(resolver: Resolver, records: Sequence[Record]) -> Deferred[list[Verdict]]:
    """Every distinct (name, type) looked up at once; the verdicts in ``records`` order."""
    keys = list(dict.fromkeys((r.name, r.rdtype) for r in records))
    looked = DeferredList(
        [resolver.lookup(name, rdtype) for name, rdtype in keys], consumeErrors=True
    )

    def verdicts(results: list[tuple[bool, Any]]) -> list[Verdict]:
        answers = dict(zip(keys, results))
        out = []
        for record in records:
            success, answer = answers[(record.name, record.rdtype)]
            if success:
                assert isinstance(answer, Records)
                out.append(judge(record, answer.values, answer.exists))
            elif answer.check(DNSTemporaryError):
                out.append(Verdict(record, "failed", str(answer.value)))
            else:
                out.append(Verdict(record, "failed", f"{answer.type.__name__}: {answer.value}"))
        return out

    return looked.addCallback(verdicts)


class _NoAddress(Exception):
    """The policy host has no A or AAAA record."""


@implementer(IAgentEndpointFactory)
class _ResolvedEndpoints:
    """HTTPS connections whose host is looked up through ``resolver`` (the DNS being
    checked, not the system's), verified against the system's trust store (RFC 8461 §3.3)."""

    def __init__(self, reactor: Any, resolver: Resolver, timeout: float) -> None:
        self.reactor, self.resolver, self.timeout = reactor, resolver, timeout

    def endpointForURI(self, uri: Any) -> Any:
        return _ResolvedTLSEndpoint(self, uri.host.decode("ascii"), uri.port)


@implementer(IStreamClientEndpoint)
class _ResolvedTLSEndpoint:
    def __init__(self, parent: _ResolvedEndpoints, host: str, port: int) -> None:
        self.parent, self.host, self.port = parent, host, port

    def connect(self, factory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        parent = self.parent
        for rdtype, kind in (("A", TCP4ClientEndpoint), ("AAAA", TCP6ClientEndpoint)):
            records = await parent.resolver.lookup(self.host, rdtype)
            if records.values:
                plain = kind(parent.reactor, str(records.values[0]), self.port,
                             timeout=parent.timeout)
                tls = wrapClientTLS(optionsForClientTLS(self.host), plain)
                return await tls.connect(factory)
        raise _NoAddress(self.host)


def _policy_record(settings: Settings) -> Record:
    """The policy file as a "record" to judge: its URL and its lines joined with "; "."""
    url = f"https://mta-sts.{settings.domain}/.well-known/mta-sts.txt"
    text = "; ".join(mta_sts_policy(settings).splitlines())
    return Record(url, "file", text, "MTA-STS", "the MTA-STS policy file")


async def _fetch_policy(
    reactor: Any, resolver: Resolver, settings: Settings, timeout: float
) -> Verdict:
    """Fetch the MTA-STS policy as a sending server would (RFC 8461 §3.3: verified HTTPS, no
    redirects, text/plain) and judge it: mode, our host among ``mx``, max_age."""
    record = _policy_record(settings)
    agent = Agent.usingEndpointFactory(reactor, _ResolvedEndpoints(reactor, resolver, timeout))
    try:
        # the whole fetch may take a look-up, a connection and the transfer
        response = await treq.get(record.name, agent=agent, allow_redirects=False,
                                  timeout=3 * timeout)
        body = await treq.content(response)
    except _NoAddress as error:
        return Verdict(record, "missing", note=f"{error} has no address")
    except ConnectionRefusedError:
        return Verdict(record, "missing", note="nothing listens on its port 443")
    except DNSTemporaryError as error:
        return Verdict(record, "failed", str(error))
    except CancelledError:
        return Verdict(record, "failed", f"no answer within {3 * timeout:g} seconds")
    except Exception as error:  # TLS failures arrive wrapped (ResponseNeverReceived...)
        return Verdict(record, "wrong", f"no policy: {_reason(error)}")
    if response.code == 404:
        return Verdict(record, "missing", note="HTTP 404")
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    if response.code != 200 or not content_type.lower().startswith(b"text/plain"):
        found = f"HTTP {response.code} {content_type.decode('latin-1') or 'no content type'}"
        return Verdict(record, "wrong", f"{found} (want 200 text/plain)")
    if len(body) > MAX_POLICY:
        return Verdict(record, "wrong", "a policy larger than 64 KiB")
    text = body.decode("utf-8", "replace")
    found = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    try:
        policy = parse_policy(text)
    except PolicyError as error:
        return Verdict(record, "wrong", f"{found!r} ({error})")
    if (
        policy.mode == settings.mta_sts_mode
        and mx_matches(settings.mx_host, policy.mx)
        and policy.max_age == settings.mta_sts_max_age
    ):
        return Verdict(record, "ok")
    return Verdict(record, "wrong", found)


def _reason(error: BaseException) -> str:
    """One line for a failed HTTPS fetch, unwrapping Twisted's failure lists."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        error = reasons[0].value
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text else type(error).__name__
