"""Allow and block lists per server, per domain and per user, and the check that reads them.

Design rules:

1. **Scopes.** A list belongs to the server (scope ``*``), to a domain we serve (its name,
   lower-case A-labels) or to a recipient address (``local@domain``, lower-case). At RCPT the
   recipient's own lists are read first, then those of its base address when it carries a
   ``+tag`` (RFC 5233), then its domain's, then the server's.
2. **Entries.** :func:`parse_entry` accepts, and normalises:

   - an address, ``user@example.com``: that envelope sender (a ``+tag`` sender also matches
     the entry of its base address);
   - a domain, ``example.com`` (or ``@example.com``): senders in exactly that domain;
   - ``.example.com``: senders in any subdomain of example.com, not example.com itself
     (Postfix's ``.domain`` form; add both entries to cover both);
   - an IP address or network, ``192.0.2.7``, ``192.0.2.0/24``, ``2001:db8::/32``: the
     client's address (IPv4-mapped IPv6 clients count as IPv4).

   Anything else is a :class:`BadEntry` (a ValueError) saying what is wrong and giving an
   example; nothing else escapes the parser.
3. **Precedence.** The most specific *scope* with a matching entry decides: user, then base
   address, then domain, then server. Inside one scope the most specific *entry* decides:
   the sender address, then its domain, then the nearest parent ``.domain`` pattern, then
   the client's network by longest prefix. An allow and a block of the very same entry
   cannot both exist (adding one removes the other); if the index holds both anyway, block
   wins. So a user's allow overrides the server's block and a user can block
   ``example.com`` while allowing ``boss@example.com``.
4. **Verdicts.** Block: REJECT ``550 5.7.1`` naming whose list (the refusal RFC 5321 §4.3.2
   lists for RCPT, where blocks are given). Allow: ``trusted`` with rule ``ALLOW_LIST`` and
   -100 points (SpamAssassin's USER_IN_WELCOMELIST), so the pipeline skips the checks that
   honour allow lists. A block is only ever given at RCPT, because a more specific scope may
   still allow the message; an allow is given as early as it is certain (connect for a server-
   allowed client, MAIL for a server-allowed sender). Sender entries trust the envelope sender,
   which anyone can forge: prefer networks for allowing at the server scope.
5. **Storage.** Key ``scope NUL kind NUL entry`` in the ``filter_lists`` sub-db, value JSON
   ``{added, by, note}``; beside them ``scope NUL = NUL prefixes`` records the network prefix
   lengths listed in the scope (``{"4": [24, 32], "6": [64]}``), rewritten in the same
   transaction as every change of a network entry. A look-up is one cursor probe per empty
   scope and, in a scope with entries, two gets per sender candidate and per listed prefix
   length: never a scan of the list. LMDB reads are fast enough for the reactor (DESIGN
   decision 7); nothing is cached, so a change made by the command line applies to the next
   RCPT.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailserver.filter.addresses import client_ip
from mailserver.filter.session import Abstaining
from mailserver.interfaces import ICheck
from mailserver.message.address import domain_to_ascii, parse_address, split_subaddress
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer, Verdict

__all__ = [
    "SERVER",
    "Added",
    "BadEntry",
    "Entry",
    "ListCheck",
    "ListEntry",
    "ListKind",
    "ListStore",
    "Client",
    "Match",
    "address_key",
    "domain_scope",
    "parse_entry",
    "sender_candidates",
    "user_scope",
]

TABLE = b"filter_lists"
#: The scope of the server-wide lists.
SERVER = "*"
#: Longest entry accepted (an address is at most 256 octets, RFC 5321 §4.5.3.1.3).
MAX_ENTRY = 320
ALLOW_SCORE = -100.0
BLOCK_SCORE = 100.0
_EXAMPLES = (
    "give an address (user@example.com), a domain (example.com, or .example.com for its "
    "subdomains) or an IP address or network (192.0.2.0/24, 2001:db8::/32)"
)


class BadEntry(ValueError):
    """A list entry or scope that cannot be used; the message says why and what to give."""


class ListKind(enum.Enum):
    ALLOW = "allow"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Entry:
    """A normalised entry: ``type`` is ``address``, ``domain``, ``subdomains`` or
    ``network``; ``text`` is its key form (``user@example.com``, ``example.com``,
    ``.example.com``, ``192.0.2.0/24`` or ``192.0.2.7`` for a single address)."""

    type: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One stored entry of one list."""

    scope: str
    kind: ListKind
    entry: Entry
    added: float = 0.0
    by: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Added:
    """What :meth:`ListStore.add` did: ``existed`` when the entry was on that list already,
    ``replaced`` when it was taken off the other list of the same scope."""

    entry: ListEntry
    existed: bool = False
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    """The deciding entry: its scope, list, text, and what it matched (``sender`` or
    ``client``)."""

    scope: str
    kind: ListKind
    entry: str
    on: str


# -- parsing --------------------------------------------------------------------------------


def _domain(text: str) -> str:
    if not text:
        raise BadEntry(f"empty domain; {_EXAMPLES}")
    if text.startswith("["):
        raise BadEntry(f"{text!r}: write an IP address without brackets, e.g. 192.0.2.7")
    try:
        domain = domain_to_ascii(text).lower()
    except ValueError as error:  # UnicodeError too
        raise BadEntry(f"{text!r} is not a domain ({error}); {_EXAMPLES}") from None
    if domain.rpartition(".")[2].isdigit():  # RFC 3696 §2: no all-numeric top-level domain
        raise BadEntry(f"{text!r} is not a domain (its last label is all digits); {_EXAMPLES}")
    return domain


def _network(text: str) -> Entry:
    if "%" in text:
        raise BadEntry(f"{text!r}: a scoped IPv6 address (with %zone) cannot be listed")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "has host bits set" in str(error):
            wider = ipaddress.ip_network(text, strict=False)
            raise BadEntry(f"{text!r} has host bits set; did you mean {wider}?") from None
        raise BadEntry(f"{text!r} is not an IP address or network ({error})") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return Entry("network", _network_text(network))


def _network_text(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def address_key(local: str, domain: str) -> str:
    """The list form of an address: ``local@domain`` lower-cased, the domain in A-labels."""
    return f"{local}@{_domain(domain)}".lower()


def parse_entry(text: str) -> Entry:
    """Parse one list entry (see the module docstring); :class:`BadEntry` when it is not one."""
    if not isinstance(text, str):
        raise BadEntry(f"not text: {text!r}")
    text = text.strip()
    if not text:
        raise BadEntry(f"empty entry; {_EXAMPLES}")
    if len(text) > MAX_ENTRY:
        raise BadEntry(f"entry longer than {MAX_ENTRY} characters; {_EXAMPLES}")
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise BadEntry(f"{text!r} contains control characters; {_EXAMPLES}")
    if text.startswith("@"):
        return Entry("domain", _domain(text[1:]))
    if "@" in text:
        try:
            parsed = parse_address(text)
        except ValueError as error:
            raise BadEntry(f"{text!r} is not an address ({error}); {_EXAMPLES}") from None
        if parsed.domain.startswith("["):
            raise BadEntry(f"{text!r}: list the IP address itself instead of an address literal")
        return Entry("address", address_key(parsed.local, parsed.domain))
    if "/" in text or ":" in text or _looks_like_ipv4(text):
        return _network(text)
    if text.startswith("."):
        return Entry("subdomains", "." + _domain(text[1:]))
    return Entry("domain", _domain(text))


def _looks_like_ipv4(text: str) -> bool:
    return all(part.isascii() and part.isdigit() for part in text.split("."))


def domain_scope(text: str) -> str:
    """A domain list's scope; BadEntry when ``text`` is not a domain."""
    return _domain(text.strip().removeprefix("@"))


def user_scope(text: str) -> str:
    """A user list's scope (the recipient address); BadEntry when it is not an address."""
    entry = parse_entry(text)
    if entry.type != "address":
        raise BadEntry(f"{text!r} is not an address; give one such as alice@example.org")
    return entry.text


# -- look-up candidates, most specific first ------------------------------------------------


class Client:
    """The client's address and the entry text of each network holding it, made on demand
    (formatting an IPv6 network costs microseconds, so only listed prefix lengths are)."""

    def __init__(self, address: str) -> None:
        self.ip = client_ip(address)
        self.version = "" if self.ip is None else str(self.ip.version)
        self._texts: dict[int, str] = {}

    def network(self, length: int) -> str:
        """The entry text of the ``length``-bit network holding the client."""
        text = self._texts.get(length)
        if text is None:
            assert self.ip is not None
            bits = self.ip.max_prefixlen
            if length >= bits:
                text = str(self.ip)
            else:
                host_bits = bits - max(length, 0)
                network = type(self.ip)(int(self.ip) >> host_bits << host_bits)
                text = f"{network}/{max(length, 0)}"
            self._texts[length] = text
        return text

    def candidates(self, lengths: Iterable[int]) -> list[str]:
        """The entries of these prefix lengths that would match, longest prefix first."""
        if self.ip is None:
            return []
        return [self.network(n) for n in sorted(set(lengths), reverse=True)]


def sender_candidates(sender: Address | None, separator: str = "+") -> tuple[str, ...]:
    """The entries that would match ``sender``: the address, its base address (without a
    ``+tag``), its domain, then ``.parent`` patterns from the nearest up."""
    if sender is None:
        return ()
    try:
        domain = _domain(sender.domain)
    except BadEntry:
        return ()
    found = [f"{sender.local}@{domain}".lower()]
    if separator:
        base, tag = split_subaddress(sender.local, separator)
        if tag is not None:
            found.append(f"{base}@{domain}".lower())
    found.append(domain)
    labels = domain.split(".")
    found.extend("." + ".".join(labels[i:]) for i in range(1, len(labels)))
    return tuple(found)


# -- the store -----------------------------------------------------------------------------


def _key(scope: str, kind: ListKind, entry: str) -> bytes:
    return f"{scope}\0{kind.value}\0{entry}".encode()


def _prefixes_key(scope: str) -> bytes:
    """The scope's record of the network prefix lengths on its lists: {"4": [..], "6": [..]}."""
    return f"{scope}\0=\0prefixes".encode()


def _update_prefixes(txn: Any, scope: str) -> None:
    """Rewrite the scope's prefix-length record from its entries (done in the same write as
    every change of a network entry, so it is never stale)."""
    lengths: dict[str, set[int]] = {"4": set(), "6": set()}
    for key, _ in txn.prefix(TABLE, scope.encode() + b"\0"):
        _, kind, text = key.decode().split("\0", 2)
        if kind in _KINDS and _is_network(text):
            network = ipaddress.ip_network(text)
            lengths[str(network.version)].add(network.prefixlen)
    if lengths["4"] or lengths["6"]:
        txn.put_json(TABLE, _prefixes_key(scope), {v: sorted(n) for v, n in lengths.items()})
    else:
        txn.delete(TABLE, _prefixes_key(scope))


_KINDS = frozenset(k.value for k in ListKind)


def _is_network(text: str) -> bool:
    return "@" not in text and ("/" in text or ":" in text or _looks_like_ipv4(text))


def _check_scope(scope: str) -> str:
    if scope == SERVER:
        return scope
    if "@" in scope:
        return user_scope(scope)
    return domain_scope(scope)


class ListStore:
    """The lists in a :class:`mailserver.db.Database` (``db``; a read-only Snapshot does
    for look-ups). ``clock`` (IReactorTime) stamps new entries; the wall clock by default.

    Writes come in two forms: Deferreds through ``db.write`` (group commit) for the server and
    ``*_sync`` for the command line before its reactor runs.
    """

    def __init__(self, db: Any, clock: Any = None) -> None:
        self.db = db
        self._now = clock.seconds if clock is not None else time.time

    # writes

    def _add(self, scope: str, kind: ListKind, text: str, by: str, note: str) -> Any:
        scope = _check_scope(scope)
        entry = parse_entry(text)
        other = ListKind.BLOCK if kind is ListKind.ALLOW else ListKind.ALLOW
        record = {"added": self._now(), "by": by, "note": note}

        def write(txn: Any) -> Added:
            existing = txn.get_json(TABLE, _key(scope, kind, entry.text))
            if existing is not None:
                return Added(_entry(scope, kind, entry, existing), existed=True)
            replaced = txn.delete(TABLE, _key(scope, other, entry.text))
            txn.put_json(TABLE, _key(scope, kind, entry.text), record)
            if entry.type == "network":
                _update_prefixes(txn, scope)
            return Added(_entry(scope, kind, entry, record), replaced=replaced)

        return write

    def add(
        self, scope: str, kind: ListKind, text: str, *, by: str = "", note: str = ""
    ) -> Deferred[Added]:
        """Put ``text`` on the ``kind`` list of ``scope`` (taking it off the other list).
        Raises BadEntry at once for a bad entry or scope."""
        return self.db.write(self._add(scope, kind, text, by, note))  # type: ignore[no-any-return]

    def add_sync(
        self, scope: str, kind: ListKind, text: str, *, by: str = "", note: str = ""
    ) -> Added:
        """:meth:`add` on the calling thread (command line; never on the reactor)."""
        return self.db.write_sync(self._add(scope, kind, text, by, note))  # type: ignore[no-any-return]

    def _remove(self, scope: str, text: str, kinds: Iterable[ListKind]) -> Any:
        scope = _check_scope(scope)
        entry = parse_entry(text)
        wanted = tuple(kinds)

        def write(txn: Any) -> list[ListKind]:
            removed = [k for k in wanted if txn.delete(TABLE, _key(scope, k, entry.text))]
            if removed and entry.type == "network":
                _update_prefixes(txn, scope)
            return removed

        return write

    def remove(
        self, scope: str, text: str, kinds: Iterable[ListKind] = tuple(ListKind)
    ) -> Deferred[list[ListKind]]:
        """Take ``text`` off the lists ``kinds`` of ``scope``; the lists it was on."""
        return self.db.write(self._remove(scope, text, kinds))  # type: ignore[no-any-return]

    def remove_sync(
        self, scope: str, text: str, kinds: Iterable[ListKind] = tuple(ListKind)
    ) -> list[ListKind]:
        return self.db.write_sync(self._remove(scope, text, kinds))  # type: ignore[no-any-return]

    # reads

    def entries(self, scope: str | None = None) -> list[ListEntry]:
        """Every entry of ``scope`` (every scope when None), in key order."""
        prefix = b"" if scope is None else _check_scope(scope).encode() + b"\0"
        found = []
        with self.db.read() as txn:
            for key, value in txn.prefix(TABLE, prefix):
                where, kind, text = key.decode().split("\0", 2)
                if kind not in _KINDS:
                    continue  # the prefix-length record
                entry = Entry(parse_entry(text).type, text)
                found.append(_entry(where, ListKind(kind), entry, _json(value)))
        return found

    def decide(self, scopes: Sequence[str], sender: Sequence[str], client: Client) -> Match | None:
        """The deciding entry for a message, or None: ``scopes`` most specific first,
        ``sender`` the candidates of :func:`sender_candidates`."""
        with self.db.read() as txn:
            for scope in scopes:
                head = scope.encode() + b"\0"
                if next(txn.prefix(TABLE, head), None) is None:
                    continue  # the usual case: nothing listed in this scope
                lengths = (txn.get_json(TABLE, _prefixes_key(scope)) or {}).get(client.version)
                networks = client.candidates(lengths or ())
                for on, candidates in (("sender", sender), ("client", networks)):
                    for text in candidates:
                        for kind in (ListKind.BLOCK, ListKind.ALLOW):
                            if txn.get(TABLE, _key(scope, kind, text)) is not None:
                                return Match(scope, kind, text, on)
        return None


def _json(value: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(value)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _entry(scope: str, kind: ListKind, entry: Entry, record: dict[str, Any]) -> ListEntry:
    return ListEntry(
        scope,
        kind,
        entry,
        added=float(record.get("added", 0.0) or 0.0),
        by=str(record.get("by", "")),
        note=str(record.get("note", "")),
    )


# -- the check -----------------------------------------------------------------------------


def _whose(scope: str) -> str:
    if scope == SERVER:
        return "this server's"
    if "@" in scope:
        return "the recipient's"
    return "the recipient domain's"


def verdict_for(match: Match | None) -> Verdict:
    """The verdict a deciding entry gives (ACCEPT when nothing matched)."""
    if match is None:
        return ACCEPT
    where = "server" if match.scope == SERVER else match.scope
    reason = f"{match.on} matches {match.entry} on the {where} {match.kind.value} list"
    if match.kind is ListKind.ALLOW:
        return Verdict(
            Action.ACCEPT,
            check=ListCheck.name,
            rule="ALLOW_LIST",
            score=ALLOW_SCORE,
            reason=reason,
            trusted=True,
        )
    return Verdict(
        Action.REJECT,
        check=ListCheck.name,
        rule="BLOCK_LIST",
        score=BLOCK_SCORE,
        reason=reason,
        code=550,
        enhanced="5.7.1",
        text=f"{match.on.capitalize()} blocked by {_whose(match.scope)} block list",
    )


@implementer(ICheck)
class ListCheck:
    """The allow and block lists as a filter check. ``separator`` is the subaddress
    separator (``""``: none). Put it first in the pipeline, so its ``trusted`` verdicts can
    spare the later checks."""

    name = "lists"
    honours_allow_list = False  # it is the allow list

    def __init__(self, store: ListStore, *, separator: str = "+") -> None:
        self.store = store
        self.separator = separator

    def session(self, peer: Peer) -> ListSession:
        return ListSession(self, peer)


class ListSession(Abstaining):
    """One connection: the client's network texts are made once each."""

    def __init__(self, check: ListCheck, peer: Peer) -> None:
        self.check = check
        self.client = Client(peer.address)

    def _server_allow(self, sender: Sequence[str]) -> Verdict:
        match = self.check.store.decide((SERVER,), sender, self.client)
        # a server block waits for RCPT: the recipient's lists may still allow
        return verdict_for(match) if match and match.kind is ListKind.ALLOW else ACCEPT

    def connect(self) -> Verdict:
        return self._server_allow(())

    def sender(self, envelope: Envelope) -> Verdict:
        return self._server_allow(sender_candidates(envelope.sender, self.check.separator))

    def recipient(self, envelope: Envelope, address: Address) -> Verdict:
        scopes = []
        try:
            user = address_key(address.local, address.domain)
            domain = _domain(address.domain)
        except BadEntry:
            user = domain = ""
        if user:
            scopes.append(user)
            if self.check.separator:
                base, tag = split_subaddress(address.local, self.check.separator)
                if tag is not None:
                    scopes.append(f"{base}@{domain}".lower())
            scopes.append(domain)
        scopes.append(SERVER)
        sender = sender_candidates(envelope.sender, self.check.separator)
        return verdict_for(self.check.store.decide(scopes, sender, self.client))

