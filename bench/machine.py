"""What a benchmark needs to say about the machine it ran on, and the CPU accounting that
tells a busy machine from a quiet one: shared by the scripts in ``bench/``.

Design rules:

- Only reads (``/proc``, ``git``, ``--version`` output); nothing here starts or changes
  anything, and a fact that cannot be read is an empty string, never an error.
- ``/proc/stat`` counts in clock ticks (10 ms): the foreign CPU of one short line means
  little, the sum over a run's lines is the figure to warn about (:data:`NOISY`).

The older scripts (``smtp_bench.py``, ``spool_bench.py``, ``store_bench.py``,
``imap_bench.py``) still carry their own copies of these functions; new ones import them::

    from bench.machine import machine_facts, system_cpu  # with the checkout on sys.path
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NOISY",
    "code_version",
    "command_output",
    "filesystem_of",
    "kernel_threads_seconds",
    "machine_facts",
    "self_cpu_seconds",
    "system_cpu",
]

ROOT = Path(__file__).resolve().parents[1]

#: Share of all CPUs that went to other processes during the measured lines above which a
#: benchmark warns that its figures are not reliable.
NOISY = 0.10


def command_output(*command: str, cwd: Path | None = None) -> str:
    """``command``'s stdout, stripped; empty when it cannot be run."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, cwd=cwd
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


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
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "code": code_version(),
    }


def system_cpu() -> float:
    """Task time of all CPUs since boot from ``/proc/stat`` (user + nice + system + irq +
    softirq + steal), in seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def kernel_threads_seconds() -> float:
    """CPU seconds of the kernel's own threads (kthreadd and its children: jbd2, kworkers,
    ksoftirqd), from ``/proc/*/stat``."""
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
