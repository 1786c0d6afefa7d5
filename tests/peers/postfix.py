"""A private, throwaway Postfix instance for interoperability tests and benchmarks.

Debian's ``postfix`` package must be installed and the caller must be root (the master runs
as root and drops to ``mail_owner`` = ``postfix`` for its daemons). Nothing of the system's own
Postfix is touched: the instance has its own ``config_directory``, ``queue_directory``,
``data_directory`` and ``maillog_file`` under one fresh directory, and its only listener is
an ``smtpd`` on ``smtpd_host:smtpd_port`` (127.0.0.2 and a free port by default)::

    with PostfixInstance(tmp_path, settings=relay_settings("example.org", "127.0.0.1", port)):
        ...  # talk SMTP to (instance.smtpd_host, instance.smtpd_port)

How it is run:

- ``master.cf`` is a copy of the packaged one (``/etc/postfix/master.cf``) edited with
  ``postconf -M``/``-F``: the stock ``smtp/inet`` listener is removed, one
  ``HOST:PORT inet ... smtpd`` listener is added and ``chroot = n`` is set on every service
  (the private queue directory is no chroot jail). Debian's master.cf already has the
  ``postlog`` (``postlogd``) service that ``maillog_file`` needs.
- ``main.cf`` is generated (:data:`BASE_SETTINGS` plus the caller's ``settings``); logging goes
  to ``<root>/maillog`` (no syslog needed), DNS is disabled (next hops are ``[ip]:port``).
- ``postfix -c DIR start`` creates the queue tree (``postfix-script check``) and starts the
  master daemon (it daemonizes; its pid is in ``<queue>/pid/master.pid``);
  :meth:`PostfixInstance.stop` runs ``postfix -c DIR stop``, waits for the master to exit,
  SIGKILLs its process group if it does not, and removes the directory.

The root directory must be traversable by the ``postfix`` user (daemons such as ``tlsmgr``,
``virtual`` and ``postlogd`` open absolute paths below it). pytest's ``tmp_path`` lives in a
0700 directory, so when the given ``tmpdir`` is not reachable the instance makes its directory
in the system temp directory instead (and still removes it on :meth:`~PostfixInstance.stop`).

This module does not import pytest: tests turn :class:`PostfixUnavailable` (or
:func:`unavailable_reason`) into a skip, and ``bench/smtp_bench.py`` uses it as a library.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

#: Where Debian keeps the Postfix commands; root's PATH may lack /usr/sbin under some runners.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])

#: main.cf for every instance; callers add or override keys with ``settings``.
BASE_SETTINGS: dict[str, str] = {
    "compatibility_level": "3.6",
    "mail_owner": "postfix",
    "myhostname": "postfix-peer.test",
    "mydomain": "postfix-peer.test",
    "myorigin": "$myhostname",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    "relay_domains": "",
    "smtp_dns_support_level": "disabled",
    "smtp_host_lookup": "native",
    "smtp_tls_security_level": "may",
    "smtp_tls_loglevel": "1",
    "smtpd_tls_security_level": "none",
    "biff": "no",
    "append_dot_mydomain": "no",
    "readme_directory": "no",
    # A test peer should retry quickly rather than after the default five minutes.
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "5s",
}


class PostfixUnavailable(RuntimeError):
    """Postfix cannot be run here (not installed, not root, or it failed to start)."""


def which(command: str) -> str | None:
    """``command`` on PATH or in the usual sbin directories."""
    return shutil.which(command, path=SEARCH_PATH)


def unavailable_reason() -> str | None:
    """Why a private Postfix cannot run on this machine, or ``None`` when it can."""
    if which("postfix") is None or which("postconf") is None:
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master runs as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the 'postfix' user does not exist (postfix package not configured)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def relay_settings(domain: str, host: str, port: int) -> dict[str, str]:
    """main.cf keys that relay everything for ``domain`` to ``[host]:port`` (no DNS)."""
    return {
        "relay_domains": domain,
        "transport_maps": f"inline:{{ {domain}=smtp:[{host}]:{port} }}",
    }


def virtual_maildir_settings(
    domain: str, address: str, base: Path, uid: int, gid: int
) -> dict[str, str]:
    """main.cf keys delivering ``address`` with the ``virtual`` agent to the Maildir
    ``base/<domain>/<local>/`` (trailing slash in the map = Maildir) as ``uid:gid``."""
    local = address.split("@", 1)[0]
    return {
        "virtual_mailbox_domains": domain,
        "virtual_mailbox_base": str(base),
        "virtual_mailbox_maps": f"inline:{{ {address}={domain}/{local}/ }}",
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{gid}",
    }


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from / down to ``path`` has the o+x bit."""
    path = path.resolve()
    for part in [path, *path.parents]:
        try:
            if not os.stat(part).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _read_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _schedstat_seconds(pid: int) -> float | None:
    """On-CPU time of every live thread of ``pid`` in seconds, from the nanosecond counters
    in ``/proc/PID/task/*/schedstat``; None where the kernel has no schedstat."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except FileNotFoundError:
            continue  # the thread ended between listdir and read
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def process_cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU seconds of ``pid``: its live threads' on-CPU time (``schedstat``, ns precision;
    else user+system clock ticks from ``/proc/PID/stat``); with ``children``, plus the
    user+system time of the children it has already reaped (cutime+cstime, in ticks).
    0.0 when the process is gone. Threads that already ended are not counted with schedstat
    (the processes measured here keep theirs)."""
    fields = _read_stat(pid)
    if fields is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    own = _schedstat_seconds(pid)
    if own is None:
        own = (int(fields[11]) + int(fields[12])) / tick
    if children:
        own += (int(fields[13]) + int(fields[14])) / tick
    return own


def child_pids(parent: int) -> list[int]:
    """Live processes whose parent is ``parent`` (a scan of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _read_stat(int(entry))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _read_stat(pid)
    return fields is not None and fields[0] != "Z"


class PostfixInstance:
    """One private Postfix (see the module docstring). Use as a context manager, or call
    :meth:`start` and (always, e.g. in ``finally``) :meth:`stop`.

    ``settings`` are extra main.cf keys (see :func:`relay_settings`,
    :func:`virtual_maildir_settings`); ``smtpd_port=None`` picks a free port on
    ``smtpd_host``; ``keep=True`` leaves the directory in place after :meth:`stop`.
    :attr:`settings` (the whole main.cf) may still be changed until :meth:`start` writes it.
    """

    def __init__(
        self,
        tmpdir: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        smtpd_host: str = "127.0.0.2",
        smtpd_port: int | None = None,
        client_address: str = "127.0.0.1",
        keep: bool = False,
    ) -> None:
        reason = unavailable_reason()
        if reason:
            raise PostfixUnavailable(reason)
        base = Path(tmpdir) if tmpdir is not None else None
        if base is not None and not _traversable_by_others(base):
            base = None  # e.g. pytest's 0700 tmp tree: the postfix user could not get in
        self.root = Path(tempfile.mkdtemp(prefix="postfix-peer-", dir=base))
        os.chmod(self.root, 0o755)
        self.keep = keep
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.maillog = self.root / "maillog"
        self.smtpd_host = smtpd_host
        self.smtpd_port = smtpd_port or free_port(smtpd_host)
        self.settings: dict[str, str] = {
            **BASE_SETTINGS,
            # inet_interfaces must name a configured interface address; 127.0.0.2 is only
            # routed to lo, not assigned, so the client side binds 127.0.0.1 while smtpd
            # listens on its own explicit master.cf address.
            "inet_interfaces": client_address,
            **(settings or {}),
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
        }
        self._final_log = ""
        self._started = False

    # --- configuration ----------------------------------------------------------------------

    def postconf(self, *args: str) -> str:
        """Run ``postconf -c CONFIG_DIR ARGS``; its stdout."""
        return self._run("postconf", "-c", str(self.config_dir), *args)

    def _run(self, command: str, *args: str, timeout: float = 60.0) -> str:
        """Run a Postfix command; raise :class:`PostfixUnavailable` with its output on failure."""
        path = which(command)
        if path is None:
            raise PostfixUnavailable(f"{command} not found")
        result = subprocess.run(
            [path, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, PATH=SEARCH_PATH),
        )
        if result.returncode != 0:
            raise PostfixUnavailable(
                f"{command} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n--- maillog ---\n{self.maillog_text()}"
            )
        return result.stdout

    def configure(self) -> None:
        """Write main.cf and master.cf into the private config directory."""
        for directory in (self.config_dir, self.queue_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam(self.settings["mail_owner"])
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)  # master.lock, prng_exch, caches
        default_config = self._run("postconf", "-dh", "config_directory").strip()
        source = Path(default_config) / "master.cf"
        if not source.exists():
            source = Path(default_config) / "master.cf.proto"
        shutil.copyfile(source, self.config_dir / "master.cf")
        lines = [f"{key} = {value}" for key, value in self.settings.items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        listener = f"{self.smtpd_host}:{self.smtpd_port}"
        self.postconf("-MX", "smtp/inet")
        self.postconf("-M", f"{listener}/inet={listener} inet n - n - - smtpd")
        self.postconf("-F", "*/*/chroot = n")

    # --- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> PostfixInstance:
        """Configure, ``postfix start`` and wait until smtpd accepts connections."""
        try:
            self.configure()
            self._started = True
            self._run("postfix", "-c", str(self.config_dir), "start")
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection((self.smtpd_host, self.smtpd_port), 1.0).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise PostfixUnavailable(
                            f"postfix smtpd not listening on {self.smtpd_host}:"
                            f"{self.smtpd_port} after {timeout}s:\n{self.maillog_text()}"
                        ) from None
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def master_pid(self) -> int | None:
        """The master daemon's pid (from ``<queue>/pid/master.pid``), None if not running."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the master (SIGKILL its process group if ``postfix stop`` does not end it) and
        remove the directory unless ``keep``. Safe to call more than once."""
        pid = self.master_pid()
        if pid is not None:
            try:
                self._run("postfix", "-c", str(self.config_dir), "stop", timeout=timeout)
            except (PostfixUnavailable, subprocess.TimeoutExpired):
                pass
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                try:
                    if os.getpgid(pid) == pid:  # master calls setsid(): the group is its own
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.root.exists():
            self._final_log = self.maillog_text()
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
        self._started = False

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observation --------------------------------------------------------------------------

    def maillog_text(self) -> str:
        """Everything Postfix logged so far (kept in memory after :meth:`stop`)."""
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return self._final_log

    def queued(self) -> int:
        """Messages still in the queue (incoming, active, deferred, hold, maildrop)."""
        count = 0
        for name in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _dirpath, _dirs, files in os.walk(self.queue_dir / name):
                count += len(files)
        return count

    def cpu_seconds(self) -> float:
        """CPU seconds used by this instance so far: the master (user+system) plus every
        daemon it has reaped (the master's cutime+cstime) plus its live children.

        Postfix daemons are all direct children of the master, so this covers smtpd,
        cleanup, qmgr, trivial-rewrite, virtual, ... A daemon that exits between the two
        /proc reads may be missed or counted twice (a few ms, at most one process).
        """
        pid = self.master_pid()
        if pid is None:
            return 0.0
        total = sum(process_cpu_seconds(child) for child in child_pids(pid))
        return total + process_cpu_seconds(pid, children=True)
