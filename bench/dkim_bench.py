"""DKIM signing and verification rates: ours against stock dkimpy, in the same run.

    .venv/bin/python bench/dkim_bench.py [--messages 300] [--size 4096] [--repeat 3]
        [--json PATH] [--quick]

- **ours**: :class:`mailserver.msgauth.dkim.DKIMSigner` (relaxed/relaxed, the RFC 6376
  §5.4.1 fields, From over-signed; RSA signatures by OpenSSL through ``cryptography``) and
  :func:`mailserver.msgauth.dkim.verify_blocking` with the key record already looked up (the
  verifier's DNS runs before it, through the resolver's cache).
- **dkimpy**: ``dkim.DKIM(message).sign(...)`` with the same key, canonicalisation and header
  list (dkimpy's own pure-Python RSA), and ``dkim.verify`` with a ``dnsfunc`` answering from a
  dict.

One message of ``--size`` bytes (a 5-field header and a body of 76-character lines), one
RSA-2048 and one Ed25519 key. Each figure is the median of ``--repeat`` runs of
``--messages`` operations on one thread; the ratio is ours / dkimpy. Signing holds the GIL in
dkimpy's RSA (``pow`` on Python integers), so its time is also time the reactor cannot run
when signing happens in a worker thread; OpenSSL releases the GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailserver.msgauth.dkim import DKIMSigner, KeyRecord, verify_blocking
from mailserver.msgauth.keys import DKIMKey, KeyStore


def message(size: int) -> bytes:
    head = (
        b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
        b"Subject: benchmark\r\nDate: Sun, 29 Nov 2026 09:00:00 +0000\r\n"
        b"Message-ID: <bench@example.org>\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def rate(operation: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        operation()
    return count / (time.perf_counter() - started)


def dkimpy_sign(key: DKIMKey, data: bytes) -> bytes:
    signer = dkim.DKIM(data)
    signer.frozen_sign = {b"from"}
    return signer.sign(  # type: ignore[no-any-return]
        key.dns_selector.encode(), key.domain.encode(), key.private_for_dkimpy(),
        signature_algorithm=key.signature_algorithm.encode(),
        canonicalize=(b"relaxed", b"relaxed"), include_headers=signer.default_sign_headers(),
    )


def measure(store: KeyStore, domain: str, data: bytes, args: argparse.Namespace) -> list[dict]:
    """Sign and verify rows for the one key of ``domain``."""
    [key] = store.keys(domain)
    signer = DKIMSigner(store)
    signed = signer.sign(data, domain) + data
    records = {key.dns_name: KeyRecord(key.dns_record())}
    table = {f"{key.dns_name}.".encode(): key.dns_record().encode()}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return table.get(name)

    assert verify_blocking(signed, records, 1)[0].result == "pass"
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    cases = {
        "sign": (lambda: signer.sign(data, domain), lambda: dkimpy_sign(key, data)),
        "verify": (
            lambda: verify_blocking(signed, records, 1),
            lambda: dkim.verify(signed, dnsfunc=dnsfunc),
        ),
    }
    rows = []
    for what, (ours, theirs) in cases.items():
        runs: dict[str, list[float]] = {"ours": [], "dkimpy": []}
        for _ in range(args.repeat):
            runs["ours"].append(rate(ours, args.messages))
            runs["dkimpy"].append(rate(theirs, args.messages))
        row = {
            "operation": what,
            "algorithm": key.signature_algorithm,
            "ours_per_sec": statistics.median(runs["ours"]),
            "dkimpy_per_sec": statistics.median(runs["dkimpy"]),
            "runs": runs,
        }
        row["ratio"] = row["ours_per_sec"] / row["dkimpy_per_sec"]
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict:
    data = message(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        store = KeyStore(os.path.join(scratch, "dkim"))
        store.generate("rsa.example.org", "bench", ["rsa"])
        store.generate("ed.example.org", "bench", ["ed25519"])
        for domain in ("rsa.example.org", "ed.example.org"):
            rows += measure(store, domain, data, args)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "config": {"messages": args.messages, "size": len(data), "repeat": args.repeat},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--quick", action="store_true", help="20 operations, one run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = 20, 1
    document = run(args)
    print(f"{'operation':<8} {'algorithm':<16} {'ours/s':>9} {'dkimpy/s':>9} {'ratio':>6}")
    for row in document["rows"]:
        print(f"{row['operation']:<8} {row['algorithm']:<16} {row['ours_per_sec']:>9.0f} "
              f"{row['dkimpy_per_sec']:>9.0f} {row['ratio']:>6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
