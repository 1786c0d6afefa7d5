"""Inbound message authentication: messages/s through SPF, DKIM (an RSA-2048 and an Ed25519
signature), ARC and DMARC, ours against a blocking peer measured in the same run.

    .venv/bin/python bench/msgauth_bench.py [--messages N] [--concurrency C] [--repeat R]
                                            [--json PATH] [--quick]

One in-process DNS server (twisted.names, as the tests use) on 127.0.0.1 serves
``example.net``: an SPF record with one include, the two DKIM key records and a DMARC
record. Every message (~4 KiB) carries both signatures and passes everything.

- **ours-warm**: :meth:`AuthenticatingTarget.assess` (the port-25 path: SPF of MAIL FROM
  and of HELO, both DKIM signatures, ARC, DMARC) with one shared cached resolver, as the
  server runs: after the first message every look-up is a cache hit; what is left is the
  crypto (in the reactor's thread pool) and the parsing.
- **ours-cold**: the same with a fresh resolver per message: every look-up (7 queries) goes
  to the DNS server.
- **peer**: what a Python milter does: pyspf ``check2`` + dkimpy ``dkim.verify`` (its own
  dnspython look-ups) + a dnspython look-up of the DMARC record, blocking, in a pool of
  ``--concurrency`` threads, no cache (it does not check HELO or ARC).

Ratios are our msgs/s over the peer's (above 1 ours is faster). Absolute figures depend on
the machine and its load; compare same-run ratios. No figure is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
import dns.resolver  # noqa: E402
from publicsuffixlist import PublicSuffixList  # noqa: E402
from twisted.internet import defer, reactor, threads  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from bench import machine  # noqa: E402
from mailserver.dns import Resolver  # noqa: E402
from mailserver.msgauth.arc import ARCVerifier  # noqa: E402
from mailserver.msgauth.dkim import DKIMSigner, DKIMVerifier  # noqa: E402
from mailserver.msgauth.dmarc import DMARCEvaluator  # noqa: E402
from mailserver.msgauth.inbound import AuthenticatingTarget, InboundPolicy  # noqa: E402
from mailserver.msgauth.keys import KeyStore  # noqa: E402
from mailserver.msgauth.spf import SPFChecker  # noqa: E402
from mailserver.types import Address, Envelope  # noqa: E402
from tests.dns_server import Zone, start_dns_server  # noqa: E402

try:
    import spf as pyspf
except ImportError:  # the peer row is left out
    pyspf = None

ENVELOPE = Envelope(
    sender=Address("bob", "example.net"), helo="client.example.net", client_address="127.0.0.1"
)


def make_message(keys: KeyStore) -> bytes:
    body = "".join(
        f"Line {n} of a plain message body, long enough to matter.\r\n" for n in range(60)
    )
    message = (
        "From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: bench\r\n"
        "Date: Sun, 29 Nov 2026 09:00:00 +0000\r\nMessage-ID: <bench@example.net>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}"
    ).encode()
    return DKIMSigner(keys).sign(message, "example.net") + message


def zone_records(keys: KeyStore) -> dict[str, list[tuple[str, Any]]]:
    records: dict[str, list[tuple[str, Any]]] = {
        "example.net": [("TXT", "v=spf1 include:_spf.example.net -all")],
        "_spf.example.net": [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
        "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject")],
    }
    for key in keys.keys("example.net"):
        text = key.dns_record()
        records[key.dns_name] = [
            ("TXT", tuple(text[i : i + 255] for i in range(0, len(text), 255)))
        ]
    return records


def target(resolver: Resolver, psl: PublicSuffixList) -> AuthenticatingTarget:
    return AuthenticatingTarget(
        None,  # type: ignore[arg-type]  # assess() never reaches the wrapped target
        InboundPolicy("mx.example.org"),
        spf=SPFChecker(resolver),
        dkim=DKIMVerifier(resolver, reactor),
        dmarc=DMARCEvaluator(resolver, psl=psl),
        arc=ARCVerifier(resolver, reactor),
        reactor=reactor,
    )


def peer_check(message: bytes, address: str) -> str:
    """Blocking: pyspf + dkimpy + the DMARC record through dnspython, no cache."""
    host, port = address.split(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.nameserver_ports = {host: int(port)}
    resolver.cache = None

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    spf_result = pyspf.check2(i="127.0.0.1", s="bob@example.net", h="client.example.net")[0]
    signatures = 2
    checker = dkim.DKIM(message)
    ok = all(checker.verify(idx=i, dnsfunc=dnsfunc) for i in range(signatures))
    resolver.resolve("_dmarc.example.net", "TXT")
    return f"{spf_result} {ok}"


async def run_ours(message: bytes, address: str, n: int, c: int, cold: bool) -> float:
    psl = PublicSuffixList()  # loaded once, as the server does
    shared = target(Resolver(reactor, [address], timeout=5), psl)
    semaphore = defer.DeferredSemaphore(c)

    async def one() -> None:
        checks = target(Resolver(reactor, [address], timeout=5), psl) if cold else shared
        assessment = await checks.assess(message, ENVELOPE)
        passed = [r.method for r in assessment.results if r.result == "pass"]
        assert passed == ["spf", "dkim", "dkim", "dmarc"], assessment.results

    start = time.perf_counter()
    await defer.gatherResults(
        [semaphore.run(lambda: defer.ensureDeferred(one())) for _ in range(n)]
    )
    return time.perf_counter() - start


async def run_peer(message: bytes, address: str, n: int, c: int, pool: ThreadPool) -> float:
    semaphore = defer.DeferredSemaphore(c)

    def one() -> Any:
        d = threads.deferToThreadPool(reactor, pool, peer_check, message, address)
        return d.addCallback(lambda result: result == "pass True" or sys.exit(f"peer: {result}"))

    start = time.perf_counter()
    await defer.gatherResults([semaphore.run(one) for _ in range(n)])
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="msgauth-bench-"))
    keys = KeyStore(str(workdir / "dkim"))
    keys.generate("example.net", "bench", ("rsa", "ed25519"))
    message = make_message(keys)
    server = start_dns_server(reactor, Zone("example.net", zone_records(keys)))
    host, port = server.address.split(":")
    peer_resolver = dns.resolver.Resolver(configure=False)
    peer_resolver.nameservers = [host]
    peer_resolver.nameserver_ports = {host: int(port)}
    peer_resolver.cache = None
    dns.resolver.default_resolver = peer_resolver  # pyspf looks up through dnspython's default
    pool = ThreadPool(args.concurrency, args.concurrency, "msgauth-bench-peer")
    pool.start()
    variants = ["ours-warm", "ours-cold"] + (["peer"] if pyspf is not None else [])
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    try:
        for repeat in range(args.repeat):
            for name in variants:
                cpu = machine.self_cpu_seconds()
                if name == "peer":
                    seconds = await run_peer(
                        message, server.address, args.messages, args.concurrency, pool
                    )
                else:
                    seconds = await run_ours(
                        message,
                        server.address,
                        args.messages,
                        args.concurrency,
                        name == "ours-cold",
                    )
                cpu = machine.self_cpu_seconds() - cpu
                runs[name].append(
                    {
                        "seconds": seconds,
                        "msgs_per_sec": args.messages / seconds,
                        "cpu_ms_per_msg": 1000 * cpu / args.messages,
                    }
                )
                machine.log(f"run {repeat + 1} {name}: {args.messages / seconds:.0f} msgs/s")
    finally:
        pool.stop()
        await server.stop()
    rows = {
        name: {
            key: statistics.median(run[key] for run in figures)
            for key in ("seconds", "msgs_per_sec", "cpu_ms_per_msg")
        }
        | {"messages": args.messages}
        for name, figures in runs.items()
    }
    ratios = {}
    if "peer" in rows:
        for name in ("ours-warm", "ours-cold"):
            ratios[f"{name}_vs_peer"] = rows[name]["msgs_per_sec"] / rows["peer"]["msgs_per_sec"]
    peers = {"pyspf": getattr(pyspf, "__version__", "")} if pyspf is not None else {}
    return {
        "machine": machine.machine_facts(workdir, peers),
        "config": {
            "messages": args.messages,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
        },
        "rows": rows,
        "runs": runs,
        "ratios": ratios,
    }


def table(document: dict[str, Any]) -> str:
    lines = [f"{'variant':<10} {'msgs/s':>8} {'cpu ms/msg':>11}"]
    for name, row in document["rows"].items():
        lines.append(f"{name:<10} {row['msgs_per_sec']:>8.0f} {row['cpu_ms_per_msg']:>11.2f}")
    for name, ratio in document["ratios"].items():
        lines.append(f"{name}: {ratio:.2f}x")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="20 messages, one run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = 20, 1
    return args


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {}

    async def go() -> None:
        try:
            result.update(await main(args))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    if not result:
        return 1
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
