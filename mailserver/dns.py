"""DNS look-ups for mail: dnspython off the reactor thread, behind a TTL-respecting cache.

Design rules:

1. The clock is a parameter (``IReactorTime``), so cache expiry is tested with ``task.Clock``.
2. Answers are cached for their TTL (capped by ``max_ttl``); "no such name" and "no records of
   that type" are cached too, for the zone's negative TTL (RFC 2308 §5, the SOA minimum) or
   ``negative_ttl`` when the server gave none. Failures (timeouts, SERVFAIL, refused) are
   never cached: they raise :class:`DNSTemporaryError` and the caller tries again later.
3. Nothing from dnspython crosses this module's boundary: results are :class:`Records`
   holding plain strings and tuples.
4. Concurrent queries for the same name and type share one look-up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

__all__ = ["DNSTemporaryError", "Records", "Resolver"]


class DNSTemporaryError(Exception):
    """The look-up failed in a way that may go away: timeout, SERVFAIL, no server answered."""


@dataclass(frozen=True, slots=True)
class Records:
    """One answer: ``values`` as text (MX: ``(preference, exchange)``), the TTL it was given.

    ``exists`` is False for NXDOMAIN; an existing name with no records of the type has
    ``exists`` True and empty ``values`` (RFC 2308's NODATA).
    """

    name: str
    rdtype: str
    values: tuple[Any, ...]
    ttl: int
    exists: bool = True


def _convert(rdtype: str, rdata: Any) -> Any:
    if rdtype == "MX":
        return (int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True).lower())
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype in ("CNAME", "PTR", "NS"):
        return rdata.target.to_text(omit_final_dot=True).lower()
    return rdata.to_text()


class Resolver:
    """Cached DNS look-ups. ``nameservers`` (``"127.0.0.53"`` or ``"127.0.0.2:5353"``) default
    to the system's ``/etc/resolv.conf``; ``threadpool`` defaults to the reactor's."""

    def __init__(
        self,
        reactor: Any,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        negative_ttl: int = 300,
        max_ttl: int = 86400,
        max_entries: int = 10000,
        threadpool: Any = None,
    ) -> None:
        self.reactor = reactor
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.max_entries = max_entries
        self._threadpool = threadpool
        self._cache: OrderedDict[tuple[str, str], tuple[float, Records]] = OrderedDict()
        self._pending: dict[tuple[str, str], list[Deferred[Records]]] = {}
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            hosts, ports = zip(*(_split_server(s) for s in nameservers))
            self._resolver.nameservers = list(hosts)
            self._resolver.nameserver_ports = dict(zip(hosts, ports))
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.cache = None  # our cache, on our clock
        #: Queries sent to the network (cache misses), for tests and metrics.
        self.queries = 0

    def lookup(self, name: str, rdtype: str) -> Deferred[Records]:
        """The records of ``rdtype`` for ``name`` (cached); DNSTemporaryError on failure."""
        key = (name.lower().rstrip("."), rdtype.upper())
        cached = self._cache.get(key)
        now = self.reactor.seconds()
        if cached is not None:
            expires, records = cached
            if now < expires:
                self._cache.move_to_end(key)
                # What is left of the TTL, so a caller caching it too never doubles it.
                return succeed(replace(records, ttl=max(0, int(expires - now))))
            del self._cache[key]
        waiting: Deferred[Records] = Deferred()
        if key in self._pending:
            self._pending[key].append(waiting)
            return waiting
        self._pending[key] = [waiting]
        self.queries += 1
        d = self._in_thread(self._query, *key)
        d.addBoth(self._answered, key)
        return waiting

    def mx(self, domain: str) -> Deferred[Records]:
        """MX records as ``(preference, exchange)`` pairs, unsorted."""
        return self.lookup(domain, "MX")

    def txt(self, name: str) -> Deferred[Records]:
        """TXT records, each joined into one string."""
        return self.lookup(name, "TXT")

    def _in_thread(self, function: Callable[..., Records], *args: Any) -> Deferred[Records]:
        pool = self._threadpool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, function, *args)

    def _query(self, name: str, rdtype: str) -> Records:
        """Blocking: one dnspython query, classified (runs in a worker thread)."""
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as error:
            responses = list(error.responses().values())
            ttl = self._negative_ttl(responses[0] if responses else None)
            return Records(name, rdtype, (), ttl, exists=False)
        except dns.resolver.YXDOMAIN:
            return Records(name, rdtype, (), self.negative_ttl, exists=False)
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DNSTemporaryError(f"{rdtype} {name}: {error}") from None
        except dns.exception.DNSException as error:
            raise DNSTemporaryError(f"{rdtype} {name}: {error}") from None
        if answer.rrset is None:
            return Records(name, rdtype, (), self._negative_ttl(answer.response))
        values = tuple(_convert(rdtype, rdata) for rdata in answer.rrset)
        return Records(name, rdtype, values, min(answer.rrset.ttl, self.max_ttl))

    def _negative_ttl(self, response: Any) -> int:
        """RFC 2308 §5: the SOA's minimum (bounded by the SOA's own TTL) from the authority."""
        for rrset in getattr(response, "authority", None) or ():
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(min(rrset.ttl, rrset[0].minimum, self.max_ttl))
        return self.negative_ttl

    def _answered(self, result: Any, key: tuple[str, str]) -> None:
        waiting = self._pending.pop(key, [])
        if isinstance(result, Records):
            self._cache[key] = (self.reactor.seconds() + result.ttl, result)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        for d in waiting:
            if isinstance(result, Records):
                d.callback(result)
            else:
                d.errback(result)


def _split_server(text: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (IPv6: ``[::1]:5353``) -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53
