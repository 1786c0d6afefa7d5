"""What a benchmark needs to say about the machine it ran on, and the CPU accounting that
tells a busy machine from a quiet one: shared by the scripts in ``bench/``.

Design rules:

- Only reads (``/proc``, ``git``, ``--version`` output); nothing here starts or changes
  anything (but the work :func:`measure` is handed), and a fact that cannot be read is an
  empty string, never an error.
- ``/proc/stat`` counts in clock ticks (10 ms): the foreign CPU of one short line means
  little, the sum over a run's lines is the figure to warn about (:data:`NOISY`).

- :func:`measure` reads the foreign CPU over the same window as the figure it is divided
  by (``window_seconds``, the ``/proc`` scans and any settling included) and takes this
  whole process off it: timing only the work but reading ``/proc/stat`` around the scans
  too counts the scans' own CPU as foreign and overstates the share.

Every script imports the module, with the checkout on ``sys.path``, and names what it
uses from it (``machine.measure``, ``machine.log``)::

    ROOT = Path(__file__).resolve().parents[1]
    if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
        sys.path.insert(0, str(ROOT))

    from bench import machine, servers  # noqa: E402
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tests.peers.postfix import which

__all__ = [
    "NOISY",
    "BenchRun",
    "all_runs",
    "children_cpu_seconds",
    "code_version",
    "command_output",
    "cpu_model",
    "filesystem_of",
    "first_pass",
    "foreign_cpu_share",
    "compare",
    "kernel_threads_seconds",
    "log",
    "machine_facts",
    "machine_line",
    "measure",
    "median_of",
    "noisy_warning",
    "peer_version",
    "rounds",
    "self_cpu_seconds",
    "system_cpu",
    "system_cpu_parts",
]

ROOT = Path(__file__).resolve().parents[1]

#: Rows of one side's runs: line key -> side name -> what each run measured.
Runs = dict[str, dict[str, list[dict[str, Any]]]]


class Named(Protocol):
    """A server under test, as :func:`first_pass` and :func:`rounds` see it."""

    @property
    def name(self) -> str: ...


class Measured(Protocol):
    """A measured line, as :func:`first_pass` and :func:`rounds` see it."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str: ...


S = TypeVar("S", bound=Named)
L = TypeVar("L", bound=Measured)

#: Share of all CPUs that went to other processes during the measured lines above which a
#: benchmark warns that its figures are not reliable.
NOISY = 0.10


def log(text: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(text, file=sys.stderr, flush=True)


def command_output(*command: str, cwd: Path | None = None) -> str:
    """``command``'s stdout, stripped; empty when it cannot be run."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, cwd=cwd
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


#: The command that prints a peer's version (run from the usual sbin directories too).
VERSION_COMMANDS = {
    "dovecot": ("dovecot", "--version"),
    "postfix": ("postconf", "-dh", "mail_version"),
}


def peer_version(name: str) -> str:
    """The installed version of the peer ``name`` (a key of :data:`VERSION_COMMANDS`);
    empty when it is not installed."""
    command, *arguments = VERSION_COMMANDS[name]
    return command_output(which(command) or command, *arguments)


def code_version() -> str:
    """``git describe --always --dirty`` of the checkout, plus the changed files under
    ``mailserver/`` when it is dirty (other work in the tree changes what was measured)."""
    describe = command_output("git", "describe", "--always", "--dirty", cwd=ROOT)
    changed = command_output(
        "git", "diff", "--name-only", "HEAD", "--", "mailserver", cwd=ROOT
    ).split()
    return describe + (f" (changed: {', '.join(changed)})" if changed else "")


def cpu_model() -> str:
    """The first ``model name`` of ``/proc/cpuinfo``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def filesystem_of(path: Path) -> str:
    """``type (device)`` of the mount holding ``path``, from /proc/mounts."""
    best, found = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    resolved = str(path.resolve())
    for line in mounts:
        device, mount_point, kind = line.split()[:3]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, f"{kind} ({device})"
    return found


def machine_facts(workdir: Path, peers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPUs, kernel, Python, the file system of
    ``workdir``, the load average now, the code version, and ``peers`` (name -> version,
    e.g. ``{"dovecot": "2.3.19.1"}``) as given."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **dict(peers or {}),
        "filesystem": filesystem_of(workdir),
        "loadavg_at_end": load_average(),
        "code": code_version(),
    }


def system_cpu_parts() -> tuple[float, float]:
    """All CPUs since boot from ``/proc/stat``, in seconds: (task time = user + nice +
    system + steal, i.e. processes plus what the hypervisor gave to other guests; interrupt
    time = irq + softirq, e.g. loopback TCP processing, charged to no process)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + steal) / tick, (irq + softirq) / tick


def system_cpu() -> float:
    """Task time of all CPUs since boot from ``/proc/stat`` (user + nice + system + irq +
    softirq + steal), in seconds."""
    tasks, interrupts = system_cpu_parts()
    return tasks + interrupts


def kernel_threads_seconds() -> float:
    """CPU seconds of the kernel's own threads (kthreadd and its children: the ext4 journal
    thread jbd2 that fsync waits for, kworkers, ksoftirqd), from ``/proc/*/stat``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if entry == "2" or fields[1] == "2":
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    """CPU seconds of this (bench) process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (e.g. ``smtp-source`` runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- one measured run and the figures over many -----------------------------------------------


def measure(
    server_cpu: Callable[[], float],
    work: Callable[[], Mapping[str, Any]],
    settle: float = 0.0,
) -> dict[str, Any]:
    """Run ``work`` once: wall seconds, the server's CPU (``server_cpu()`` before and
    after) and this client's, the CPU other processes used meanwhile, and what ``work``
    counted (its mapping, merged into the row). The server's CPU is read ``settle`` seconds
    after the work, so that processes that just exited are reaped and counted.

    The foreign CPU is taken over the whole window between the two ``/proc/stat`` reads
    (``window_seconds``, which includes the ``/proc`` scans for the kernel threads' time and
    ``settle``), less the server, this whole process and the kernel threads."""
    opened = time.perf_counter()
    system_before, kernel_before = system_cpu(), kernel_threads_seconds()
    server_before, process_before = server_cpu(), self_cpu_seconds()
    client_before = self_cpu_seconds()
    began = time.perf_counter()
    counted = work()
    seconds = time.perf_counter() - began
    client = self_cpu_seconds() - client_before
    if settle:
        time.sleep(settle)
    server = server_cpu() - server_before
    process = self_cpu_seconds() - process_before
    kernel = kernel_threads_seconds() - kernel_before
    foreign = system_cpu() - system_before - server - process - kernel
    window = time.perf_counter() - opened
    return {
        "seconds": round(seconds, 5),
        "server_cpu_seconds": round(server, 4),
        "client_cpu_seconds": round(client, 4),
        # /proc/stat counts in clock ticks (10 ms): only sums over many lines mean much.
        "foreign_cpu_seconds": round(max(0.0, foreign), 3),
        "window_seconds": round(window, 5),
        **counted,
    }


def median_of(runs: list[dict[str, Any]], places: int = 5) -> dict[str, Any]:
    """The median of every number over ``runs`` (rounded to ``places``), plus the runs
    themselves."""
    summary: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            summary[key] = round(statistics.median(run[key] for run in runs), places)
    summary["runs"] = runs
    return summary


def foreign_cpu_share(runs: list[Mapping[str, Any]]) -> float:
    """The share of all CPUs that went to other processes over the windows of ``runs``
    (rows of :func:`measure`), rounded to 3 places."""
    wall = sum(run["window_seconds"] for run in runs) * (os.cpu_count() or 1)
    foreign = sum(run["foreign_cpu_seconds"] for run in runs)
    return round(foreign / wall, 3) if wall else 0.0


def noisy_warning(share: float) -> list[str]:
    """The warning line for a ``foreign_cpu_share`` above :data:`NOISY` (none below)."""
    if share <= NOISY:
        return []
    return [
        f"WARNING: {share:.0%} of all CPU time went to other processes (or steal) "
        "during the measured lines: the machine was busy, these figures are not reliable"
    ]


def machine_line(machine: Mapping[str, Any], peer: str, seconds: float) -> str:
    """The closing line of a table: the machine (with the version of the peer whose key in
    ``machine`` is ``peer`` lower-cased), the load at start and end, the run's duration."""
    return (
        f"machine: {machine['cpus']} x {machine['cpu_model']}, kernel {machine['kernel']}, "
        f"{machine['filesystem']}, Python {machine['python']}, {peer} {machine[peer.lower()]}, "
        f"code {machine['code']}; load average {machine['loadavg_at_start'][0]} at start, "
        f"{machine['loadavg_at_end'][0]} at end; {seconds:.0f} s in all"
    )


def first_pass(
    sides: list[S], lines: list[L], run: Callable[[L, S], dict[str, Any]], what: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every line once on each side, one side after the other (``what`` the pass does, for
    the progress lines): side name -> line key -> what ``run(line, side)`` measured."""
    first: dict[str, dict[str, dict[str, Any]]] = {}
    for side in sides:
        log(f"first pass ({what}): {side.name}")
        first[side.name] = {}
        for line in lines:
            first[side.name][line.key] = run(line, side)
            log(f"  {line.label}: {first[side.name][line.key]['seconds']:.3f} s")
    return first


def rounds(
    sides: list[S], lines: list[L], repeat: int, run: Callable[[L, S], dict[str, Any]]
) -> Runs:
    """``repeat`` rounds; in each, every line on every side back to back, the order of the
    sides rotating from round to round."""
    runs: Runs = {line.key: {side.name: [] for side in sides} for line in lines}
    for attempt in range(repeat):
        order = sides[attempt % 2 :] + sides[: attempt % 2]
        log(f"round {attempt + 1} of {repeat}: {' then '.join(s.name for s in order)}")
        for line in lines:
            for side in order:
                runs[line.key][side.name].append(run(line, side))
            log(
                f"  {line.label}: "
                + ", ".join(
                    f"{side.name} {runs[line.key][side.name][-1]['seconds']:.3f} s"
                    for side in sides
                )
            )
    return runs


def compare(
    lines: list[Any], runs: Runs, fields: tuple[str, ...] = ("key", "label")
) -> list[dict[str, Any]]:
    """A row per line: its ``fields``, the :func:`median_of` the runs of each side, and
    ``ratio``, ours' median seconds over the peer's (the side after ``ours``; None when the
    peer took no time)."""
    results = []
    for line in lines:
        row: dict[str, Any] = {field: getattr(line, field) for field in fields}
        for name, side_runs in runs[line.key].items():
            row[name] = median_of(side_runs)
        peer = next(name for name in runs[line.key] if name != "ours")
        theirs = row[peer]["seconds"]
        row["ratio"] = round(row["ours"]["seconds"] / theirs, 3) if theirs > 0 else None
        results.append(row)
    return results


def all_runs(runs: Runs) -> list[dict[str, Any]]:
    """Every run of every line and side, for :func:`foreign_cpu_share`."""
    return [run for line in runs.values() for side_runs in line.values() for run in side_runs]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages now, rounded to 2 places."""
    return [round(x, 2) for x in os.getloadavg()]


@dataclasses.dataclass
class BenchRun:
    """One run of a bench that compares ours with a peer: when it started and the load then,
    for the JSON document it ends with."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    load_at_start: list[float] = dataclasses.field(default_factory=load_average)

    def document(
        self, workdir: Path, peer: str, runs: Runs, config: dict[str, Any], **parts: Any
    ) -> dict[str, Any]:
        """``machine`` (with the ``peer``'s version and the load at start and end),
        ``foreign_cpu_share`` over every run, ``config``, then ``parts`` in their order, and
        ``seconds``, the whole run's duration."""
        return {
            "machine": {
                **machine_facts(workdir, {peer: peer_version(peer)}),
                "loadavg_at_start": self.load_at_start,
            },
            "foreign_cpu_share": foreign_cpu_share(all_runs(runs)),
            "config": config,
            **parts,
            "seconds": round(time.monotonic() - self.started, 1),
        }
