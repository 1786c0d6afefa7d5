"""Differential: every SPF vector evaluated by us and by pyspf (the reference Python SPF
implementation, RFC 7208 mode) against the same real DNS server must agree, except where
pyspf is known to depart from the RFC (listed here with the reason)."""

from __future__ import annotations

from typing import Any

import dns.resolver
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.dns import Resolver
from mailserver.msgauth.spf import SPFChecker
from tests.msgauth.conftest import serve
from tests.msgauth.spf_vectors import BASE, CASES, ORIGINS, Case, merge

spf = pytest.importorskip("spf", reason="pyspf (the differential peer) is not installed")

pytestmark = pytest.mark.filterwarnings("ignore:please use dns.resolver.resolve:DeprecationWarning")

#: Vectors where pyspf 2.0 departs from RFC 7208, and how.
PYSPF_DEPARTS = {
    "syntax error 'v=spf1 -all foo=%{l0}' is permerror": (
        "§7.1 says a digit transformer must be nonzero; pyspf does not check the macros of "
        "unknown modifiers"
    ),
    "an expanded name over 253 characters loses labels on the left": (
        "§7.3 truncation: pyspf passes the long name to dnspython, which raises NameTooLong"
    ),
}


def pyspf_result(case: Case, address: str) -> Any:
    """pyspf's check2 against the test server (pyspf uses dnspython's default resolver)."""
    host, port = address.split(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.nameserver_ports = {host: int(port)}
    resolver.cache = None
    saved = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    try:
        sender = case.sender or ""
        if sender and "@" not in sender:
            sender = "@" + sender  # pyspf's way of saying "no local part"
        return spf.check2(i=case.ip, s=sender, h=case.helo, querytime=5)[0]
    except Exception as error:  # pyspf's own crashes are departures, reported as such
        return f"exception {error!r}"
    finally:
        dns.resolver.default_resolver = saved


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest_twisted.ensureDeferred
async def test_agrees_with_pyspf(case: Case) -> None:
    """Our result for the vector equals pyspf's (or pyspf's known departure still holds)."""
    server = serve(merge(BASE, case.records), ORIGINS)
    try:
        ours = await SPFChecker(Resolver(reactor, [server.address], timeout=2)).check(
            case.ip, case.sender, case.helo
        )
        theirs = await deferToThread(pyspf_result, case, server.address)
    finally:
        await server.stop()
    assert ours.result == case.expected
    if case.name in PYSPF_DEPARTS:
        assert theirs != ours.result, f"pyspf now agrees: drop it from PYSPF_DEPARTS ({theirs})"
    else:
        assert theirs == ours.result, PYSPF_DEPARTS.get(case.name, "")
