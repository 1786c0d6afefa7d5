"""A private, throwaway Dovecot instance for interoperability tests and benchmarks.

Debian's ``dovecot-core`` and ``dovecot-imapd`` packages must be installed (``dovecot-pop3d``
for POP3). Nothing of the system's own Dovecot is touched, and the system one need not run:
the instance has its own ``dovecot.conf`` (generated, no ``!include`` of ``/etc/dovecot``),
``base_dir`` (sockets, ``master.pid``), ``state_dir``, log file, users file and mail under one
fresh directory, and listens only on ``host`` (127.0.0.4 by default) on free ports::

    with DovecotInstance(tmp_path, users={"alice": "secret"}) as dovecot:
        dovecot.add_message("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        imaplib.IMAP4(dovecot.host, dovecot.imap_port).login("alice", "secret")

How it is run:

- Users come from a ``passwd-file`` (``{PLAIN}`` passwords, fine for tests) and all share one
  static uid/gid: the invoking user's, or ``nobody``'s when running as root (Dovecot refuses
  mail access as uid 0). ``mail_location = maildir:~/Maildir`` with ``~`` =
  ``<root>/home/<user>``. Plain-text ``LOGIN``/``AUTH PLAIN`` are allowed without TLS.
- ``tls=True`` adds a self-signed certificate (made by :mod:`mailserver.tls`, the kind our
  server makes), STARTTLS on the plain ports and implicit-TLS listeners (``imaps_port``,
  ``pop3s_port``); otherwise ``ssl = no``.
- As root the login processes run as ``dovenull`` and the auth process as ``dovecot``, as
  packaged; as another user every process runs as that user and its group (Dovecot's
  non-root mode). No service is chrooted.
- ``dovecot -c CONF`` starts the master (it daemonizes; its pid is in
  ``<base_dir>/master.pid``); :meth:`DovecotInstance.stop` sends the master SIGTERM (what
  ``doveadm -c CONF stop`` does, without doveadm's own ~2 s start-up), waits for it to exit,
  SIGKILLs it (and what is left of its children) if it does not, and removes the directory.
  :meth:`DovecotInstance.doveadm` runs any other ``doveadm -c CONF`` command.

As root, the mail processes (``nobody``) and the login processes (``dovenull``) open paths
below the root directory, so it must be traversable by others; pytest's ``tmp_path`` lives in a
0700 directory, so when the given ``tmpdir`` is not reachable the instance makes its directory
in the system temp directory instead (and still removes it on :meth:`~DovecotInstance.stop`).

Debian's postinst may have started a system Dovecot on 143/993/110/995: it does not matter
here (different ports and addresses are used, and nothing reads its sockets).

This module does not import pytest: tests turn :class:`DovecotUnavailable` (or
:func:`unavailable_reason`) into a skip, and ``bench/imap_bench.py`` uses it as a library.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from tests.peers.postfix import (
    SEARCH_PATH,
    _traversable_by_others,
    child_pids,
    free_port,
    pid_alive,
    process_cpu_seconds,
)

#: The IMAP system flags a maildir file name carries in its ``:2,`` info, by letter.
MAILDIR_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}


class DovecotUnavailable(RuntimeError):
    """Dovecot cannot be run here (not installed, or it failed to start)."""


def which(command: str) -> str | None:
    """``command`` on PATH or in the usual sbin directories."""
    return shutil.which(command, path=SEARCH_PATH)


def unavailable_reason(pop3: bool = False) -> str | None:
    """Why a private Dovecot cannot run on this machine, or ``None`` when it can."""
    if which("dovecot") is None or which("doveadm") is None:
        return "Dovecot is not installed (apt-get install dovecot-core dovecot-imapd)"
    libexec = Path("/usr/lib/dovecot")
    if not (libexec / "imap").exists():
        return "Dovecot's IMAP server is not installed (apt-get install dovecot-imapd)"
    if pop3 and not (libexec / "pop3").exists():
        return "Dovecot's POP3 server is not installed (apt-get install dovecot-pop3d)"
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"the {user!r} user does not exist (dovecot-core not configured)"
    return None


class DovecotInstance:
    """One private Dovecot (see the module docstring). Use as a context manager, or call
    :meth:`start` and (always, e.g. in ``finally``) :meth:`stop`.

    ``users`` maps user names to passwords. Ports left ``None`` are picked free on ``host``;
    ``pop3=True`` adds POP3 (and POP3S with ``tls``). ``settings`` are extra top-level
    ``dovecot.conf`` lines (``key = value``) appended last. ``keep=True`` leaves the directory
    in place after :meth:`stop`.
    """

    def __init__(
        self,
        tmpdir: Path | None = None,
        *,
        users: Mapping[str, str],
        host: str = "127.0.0.4",
        imap_port: int | None = None,
        tls: bool = False,
        imaps_port: int | None = None,
        pop3: bool = False,
        pop3_port: int | None = None,
        pop3s_port: int | None = None,
        settings: Mapping[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        reason = unavailable_reason(pop3)
        if reason:
            raise DovecotUnavailable(reason)
        self.root_mode = os.geteuid() == 0
        base = Path(tmpdir) if tmpdir is not None else None
        if base is not None and self.root_mode and not _traversable_by_others(base):
            base = None  # e.g. pytest's 0700 tmp tree: nobody and dovenull could not get in
        if base is not None and len(str(base)) > 60:
            base = None  # unix socket paths below base_dir must stay short (108 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-peer-", dir=base))
        os.chmod(self.root, 0o755)
        self.keep = keep
        self.users = dict(users)
        self.host = host
        self.tls = tls
        self.pop3 = pop3
        self.imap_port = imap_port or free_port(host)
        self.imaps_port = (imaps_port or free_port(host)) if tls else None
        self.pop3_port = (pop3_port or free_port(host)) if pop3 else None
        self.pop3s_port = (pop3s_port or free_port(host)) if pop3 and tls else None
        self.settings = dict(settings or {})
        self.config_path = self.root / "dovecot.conf"
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.home_dir = self.root / "home"
        self.log_path = self.root / "dovecot.log"
        self.users_path = self.root / "users"
        mail_user = pwd.getpwnam("nobody") if self.root_mode else pwd.getpwuid(os.geteuid())
        self.uid, self.gid = mail_user.pw_uid, mail_user.pw_gid
        self._final_log = ""
        self._pid: int | None = None
        self._serial = itertools.count()
        self._keywords: dict[str, list[str]] = {}

    # --- configuration ------------------------------------------------------------------------

    def config_text(self) -> str:
        """The whole dovecot.conf of this instance."""
        me = pwd.getpwuid(os.geteuid()).pw_name
        internal, login = ("dovecot", "dovenull") if self.root_mode else (me, me)
        # Sockets for the internal services are chowned to this group: the packaged
        # "dovecot" group as root, else one the user is in.
        group = "dovecot" if self.root_mode else grp.getgrgid(os.getegid()).gr_name
        protocols = "imap pop3" if self.pop3 else "imap"
        lines = [
            "# A private test instance: tests/peers/dovecot.py",
            f"base_dir = {self.base_dir}",
            f"state_dir = {self.state_dir}",
            f"instance_name = {self.root.name}",
            f"log_path = {self.log_path}",
            f"protocols = {protocols}",
            f"listen = {self.host}",
            "shutdown_clients = yes",
            f"default_internal_user = {internal}",
            f"default_login_user = {login}",
            f"default_internal_group = {group}",
            "first_valid_uid = 1",
            "first_valid_gid = 1",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            "auth_failure_delay = 0",  # a test peer answers a wrong password at once
            "mail_location = maildir:~/Maildir",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.users_path}",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={self.uid} gid={self.gid} home={self.home_dir}/%u",
            "}",
        ]
        if self.tls:
            lines += [
                "ssl = yes",
                f"ssl_cert = <{self.root / 'tls' / 'cert.pem'}",
                f"ssl_key = <{self.root / 'tls' / 'key.pem'}",
            ]
        else:
            lines.append("ssl = no")
        lines += self._service("imap-login", "imap", self.imap_port, "imaps", self.imaps_port)
        if self.pop3:
            lines += self._service("pop3-login", "pop3", self.pop3_port, "pop3s", self.pop3s_port)
        for service in ("imap", "pop3", "auth", "auth-worker", "anvil", "stats", "log"):
            if service != "pop3" or self.pop3:
                lines += [f"service {service} {{", "  chroot =", "}"]
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        return "\n".join(lines) + "\n"

    def _service(
        self, name: str, plain: str, port: int | None, secure: str, tls_port: int | None
    ) -> list[str]:
        """A login service with a plain listener on ``port`` and an implicit-TLS one."""
        return [
            f"service {name} {{",
            "  chroot =",
            f"  inet_listener {plain} {{",
            f"    address = {self.host}",
            f"    port = {port}",
            "  }",
            f"  inet_listener {secure} {{",
            f"    address = {self.host}",
            f"    port = {tls_port or 0}",
            "    ssl = yes" if tls_port else "",
            "  }",
            "}",
        ]

    def configure(self) -> None:
        """Write the config, the users file, the certificate and the empty homes."""
        for directory in (self.base_dir, self.state_dir, self.home_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.users_path.write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items())
        )
        os.chmod(self.users_path, 0o644)  # read by the auth process (user dovecot as root)
        if self.tls:
            from mailserver.tls import ensure_self_signed

            ensure_self_signed(str(self.root / "tls"), "dovecot-peer.test")
        for user in self.users:
            self.maildir(user)
        self.config_path.write_text(self.config_text())

    def maildir(self, user: str) -> Path:
        """The user's ``~/Maildir`` (INBOX), created with ``cur``/``new``/``tmp`` if missing,
        owned by the mail uid/gid."""
        home = self.home_dir / user
        path = home / "Maildir"
        for directory in (home, path, path / "cur", path / "new", path / "tmp"):
            if not directory.exists():
                directory.mkdir(mode=0o700)
                os.chown(directory, self.uid, self.gid)
        return path

    def add_message(
        self,
        user: str,
        data: bytes,
        flags: Iterable[str] = (),
        internaldate: float | None = None,
    ) -> Path:
        """Put ``data`` into ``user``'s INBOX as Dovecot's own delivery names it: into ``cur/``
        with ``,S=<size>,W=<CRLF size>:2,<flags>`` (``new/`` when there are no flags), the
        file's mtime = ``internaldate`` (Dovecot's INTERNALDATE for maildir). Dovecot gives
        new files UIDs in the order of the time stamp in their names, so messages added one
        after another get ascending UIDs. Works while the instance runs, too."""
        maildir = self.maildir(user)
        now = time.time() if internaldate is None else internaldate
        serial = next(self._serial)
        seconds = int(now)
        vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
        base = f"{seconds}.M{serial}P{os.getpid()}.dovecot-peer,S={len(data)},W={vsize}"
        letters = self._flag_letters(user, maildir, flags)
        if letters:
            target = maildir / "cur" / f"{base}:2,{letters}"
        else:
            target = maildir / "new" / base
        temporary = maildir / "tmp" / base
        with open(temporary, "wb") as out:
            out.write(data)
        os.chown(temporary, self.uid, self.gid)
        os.utime(temporary, (now, now))
        os.rename(temporary, target)
        return target

    def _flag_letters(self, user: str, maildir: Path, flags: Iterable[str]) -> str:
        """The sorted ``:2,`` letters for ``flags``: upper case for system flags, ``a``-``z``
        for keywords, numbered in the maildir's ``dovecot-keywords`` file (written here, so
        keywords must be added before Dovecot writes that file itself: fill, then start).
        ``\\Recent`` is dropped, and so are keywords beyond the 26 a file name can carry."""
        known = self._keywords.setdefault(user, [])
        letters = []
        for flag in flags:
            if flag in MAILDIR_FLAGS:
                letters.append(MAILDIR_FLAGS[flag])
            elif not flag.startswith("\\"):
                if flag not in known and len(known) < 26:
                    known.append(flag)
                    keywords = maildir / "dovecot-keywords"
                    keywords.write_text("".join(f"{i} {k}\n" for i, k in enumerate(known)))
                    os.chown(keywords, self.uid, self.gid)
                if flag in known:
                    letters.append(chr(ord("a") + known.index(flag)))
        return "".join(sorted(letters))

    # --- life cycle ---------------------------------------------------------------------------

    def _run(self, command: str, *args: str, timeout: float = 60.0) -> str:
        """Run a Dovecot command; raise :class:`DovecotUnavailable` with its output on failure."""
        path = which(command)
        if path is None:
            raise DovecotUnavailable(f"{command} not found")
        # Output goes through a file, not a pipe: the daemonized master inherits the
        # descriptors, and a pipe would never see its end of file.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(
                [path, *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=dict(os.environ, PATH=SEARCH_PATH),
            )
            output.seek(0)
            text = output.read().decode(errors="replace")
        if result.returncode != 0:
            raise DovecotUnavailable(
                f"{command} {' '.join(args)} exited {result.returncode}:\n"
                f"{text}\n--- log ---\n{self.log_text()}"
            )
        return text

    def doveadm(self, *args: str, timeout: float = 120.0) -> str:
        """``doveadm -c CONF ARGS`` (e.g. ``"index", "-u", "alice", "INBOX"``); its stdout."""
        return self._run("doveadm", "-c", str(self.config_path), *args, timeout=timeout)

    def start(self, timeout: float = 30.0) -> DovecotInstance:
        """Configure (first time only), ``dovecot -c CONF`` and wait until every listener
        accepts connections. May be called again after :meth:`stop` with ``keep=True``'s
        directory still there (a restart: mail and indexes are kept)."""
        try:
            if not self.config_path.exists():
                self.configure()
            self._run("dovecot", "-c", str(self.config_path))
            deadline = time.monotonic() + timeout
            for port in self.ports():
                while True:
                    try:
                        socket.create_connection((self.host, port), 1.0).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise DovecotUnavailable(
                                f"dovecot not listening on {self.host}:{port} after "
                                f"{timeout}s:\n{self.log_text()}"
                            ) from None
                        time.sleep(0.05)
            # The listeners are bound before the master daemonizes and writes its pid file.
            while self.master_pid() is None:
                if time.monotonic() > deadline:
                    raise DovecotUnavailable(f"dovecot wrote no master.pid:\n{self.log_text()}")
                time.sleep(0.02)
            self._pid = self.master_pid()
        except BaseException:
            self.stop()
            raise
        return self

    def ports(self) -> list[int]:
        """Every port this instance listens on."""
        candidates = (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port)
        return [port for port in candidates if port]

    def master_pid(self) -> int | None:
        """The master's pid (from ``<base_dir>/master.pid``), None if not running."""
        try:
            pid = int((self.base_dir / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def processes(self) -> list[int]:
        """The master and every live descendant (login, imap, auth, ... processes)."""
        master = self.master_pid()
        if master is None:
            return []
        found, frontier = [master], [master]
        while frontier:
            children = [child for parent in frontier for child in child_pids(parent)]
            found += children
            frontier = children
        return found

    def stop(self, timeout: float = 20.0, *, remove: bool = True) -> None:
        """Stop the master (SIGTERM, as ``doveadm stop`` sends; SIGKILL it and its children if
        that does not end it) and, with ``remove`` and unless ``keep``, remove the directory.
        Safe to call more than once."""
        pid = self.master_pid() or (self._pid if self._pid and pid_alive(self._pid) else None)
        if pid is not None and _is_dovecot(pid):
            family = self.processes()
            try:
                os.kill(pid, signal.SIGTERM)  # what ``doveadm stop`` does, without its 2 s
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            for member in family:
                if pid_alive(member) and _is_dovecot(member):
                    try:
                        os.kill(member, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if remove and self.root.exists():
            self._final_log = self.log_text()
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotInstance:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observation --------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """CPU seconds used by this instance so far: the master (user+system) plus every
        process it has reaped (the master's cutime+cstime) plus its live descendants (login,
        imap, auth, ... processes). A process that exits between the /proc reads may be
        missed or counted twice (at most one process's CPU)."""
        master = self.master_pid()
        if master is None:
            return 0.0
        others = self.processes()[1:]
        own = process_cpu_seconds(master, children=True)
        return own + sum(process_cpu_seconds(pid, children=False) for pid in others)

    def memory_kib(self) -> dict[str, int]:
        """Memory of the master and every live descendant: ``rss`` and ``pss`` in KiB summed
        over all processes (RSS counts shared pages once per process, PSS shares them out),
        and the same restricted to the ``imap`` processes (``imap_rss``, ``imap_pss``) and to
        the login processes (``login_rss``, ``login_pss``)."""
        totals = dict.fromkeys(("rss", "pss", "imap_rss", "imap_pss", "login_rss", "login_pss"), 0)
        for pid in self.processes():
            usage = process_memory_kib(pid)
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            for kind in ("rss", "pss"):
                totals[kind] += usage[kind]
                if name == "imap":
                    totals[f"imap_{kind}"] += usage[kind]
                elif name.endswith("-login"):
                    totals[f"login_{kind}"] += usage[kind]
        return totals

    def log_text(self) -> str:
        """Everything Dovecot logged so far (kept in memory after :meth:`stop`)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._final_log


def process_memory_kib(pid: int) -> dict[str, int]:
    """``rss`` and ``pss`` of ``pid`` in KiB (``/proc/PID/smaps_rollup``; zeros when gone)."""
    found = {"rss": 0, "pss": 0}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key.lower()] = int(value.split()[0])
    return found


def _is_dovecot(pid: int) -> bool:
    """True when ``pid`` still runs a Dovecot program (guards against a reused pid)."""
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return "dovecot" in executable
