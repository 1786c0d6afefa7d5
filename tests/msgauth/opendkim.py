"""OpenDKIM's ``opendkim-testmsg`` (Debian ``opendkim-tools``) as an independent DKIM verifier.

The tool looks keys up through the C library's resolver, which reads ``/etc/resolv.conf`` and
always asks port 53. So the test zone is served on port 53 of a private 127.x address, and
the tool runs in its own mount namespace (``unshare --mount``, root only) where a resolv.conf
naming that address is bind-mounted over ``/etc/resolv.conf``; the machine's own resolver
configuration is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any

from twisted.internet import threads

from tests.dns_server import DNSServer, Zone, start_dns_server

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])

#: Addresses tried for the port-53 test server (one a test, the first that is free).
ADDRESSES = [f"127.53.{n}.1" for n in range(1, 40)]


def testmsg() -> str | None:
    return shutil.which("opendkim-testmsg", path=SEARCH_PATH)


def unavailable() -> str | None:
    """Why opendkim-testmsg cannot be run here, or None when it can."""
    if testmsg() is None:
        return "opendkim-testmsg not installed (Debian opendkim-tools)"
    if os.geteuid() != 0 or shutil.which("unshare", path=SEARCH_PATH) is None:
        return "needs root and unshare(1) to give opendkim-testmsg a private resolv.conf"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        return f"unshare --mount not permitted here: {probe.stderr.decode().strip()}"
    return None


def start_port53(reactor: Any, *zones: Zone) -> DNSServer:
    """The zones on port 53 of the first free address in :data:`ADDRESSES`."""
    last: Exception | None = None
    for address in ADDRESSES:
        try:
            return start_dns_server(reactor, *zones, host=address, port=53)
        except Exception as error:  # CannotListenError: taken, try the next
            last = error
    raise RuntimeError(f"no free 127.53.x.1:53 for the test DNS server: {last}")


def verify(message: bytes, nameserver: str) -> subprocess.CompletedProcess:
    """Blocking: ``opendkim-testmsg`` verifying ``message`` with keys from ``nameserver``.
    Exit status 0 when the signature verifies (run it in a thread: the DNS server is on the
    reactor)."""
    with tempfile.TemporaryDirectory() as scratch:
        conf = os.path.join(scratch, "resolv.conf")
        with open(conf, "w") as handle:
            handle.write(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")
        script = 'mount --bind "$1" /etc/resolv.conf && exec "$2"'
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private",
             "sh", "-c", script, "sh", conf, testmsg() or "opendkim-testmsg"],
            input=message,
            capture_output=True,
            timeout=60,
        )


def verify_async(message: bytes, nameserver: str) -> Any:
    """:func:`verify` in a worker thread (a Deferred)."""
    return threads.deferToThread(verify, message, nameserver)
