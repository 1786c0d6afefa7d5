"""What every fuzz harness shares: the :class:`Target` it declares and the two engines.

A harness module in this package names one parser and exposes ``TARGET``: a function that
takes one input (bytes) and returns normally when the parser behaved as documented (parsed,
or raised its documented error type), plus a few seed inputs. Anything else it raises (an
undocumented exception, a broken invariant such as a round trip that changed the value) is
a crash. Design rules:

- No module here imports ``mailserver`` at import time, so the atheris engine can import the
  harness (and with it the parser) under ``atheris.instrument_imports``: coverage feedback
  then covers the parser's own code.
- Each input is bounded (``MAX_LEN`` octets) and each run is bounded in time; an input that
  takes longer than ``PER_INPUT_TIMEOUT`` seconds is reported as a hang (libFuzzer's
  ``-timeout``), which is how a quadratic or endless parse shows up.
- atheris stops at the first crash and writes the input to ``<workdir>/<name>/crash-*``;
  the fallback engine (hypothesis ``fuzz_one_input``, used when atheris is not installed)
  writes it to the same place.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Longest input handed to a harness (octets).
MAX_LEN = 4096
#: An input slower than this (seconds) is a hang.
PER_INPUT_TIMEOUT = 10


class Broken(AssertionError):
    """A harness found an invariant broken (not an exception of the parser itself)."""


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing: ``one_input(data)`` and the seeds that start the corpus."""

    name: str
    one_input: Callable[[bytes], None]
    seeds: Sequence[bytes] = field(default_factory=tuple)


def check(condition: bool, message: str) -> None:
    """Raise :class:`Broken` with ``message`` unless ``condition`` holds (unlike ``assert``,
    this also runs under ``python -O``)."""
    if not condition:
        raise Broken(message)


def pieces(data: bytes, cuts: bytes) -> list[bytes]:
    """``data`` cut at the offsets the octets of ``cuts`` name (modulo its length): the same
    bytes in other pieces, for the readers whose result must not depend on the split."""
    if not data:
        return [b""]
    points = sorted({byte % (len(data) + 1) for byte in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def write_seeds(target: Target, corpus: Path) -> None:
    """Put the seeds into an empty corpus directory."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for index, seed in enumerate(target.seeds):
        (corpus / f"seed-{index:03d}").write_bytes(seed)


def run_atheris(target: Target, seconds: int, workdir: Path) -> int:
    """Fuzz with atheris (libFuzzer) for ``seconds``; returns when time is up. On a crash
    atheris writes the input and exits the process with a non-zero status."""
    import atheris

    corpus = workdir / "corpus"
    write_seeds(target, corpus)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN}",
        f"-timeout={PER_INPUT_TIMEOUT}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={workdir}{os.sep}",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, target.one_input)
    atheris.Fuzz()
    return 0


def _mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """One random edit of ``data``: flip, insert, delete, duplicate or splice a seed."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        position = rng.randint(0, len(buf))
        if choice == 0 and buf:
            buf[min(position, len(buf) - 1)] = rng.randrange(256)
        elif choice == 1:
            buf[position:position] = bytes([rng.choice(b"\r\n\x00 .:<>\"(){}*%\\=+-~@")])
        elif choice == 2 and buf:
            del buf[position : position + rng.randint(1, 8)]
        elif choice == 3 and buf:
            start = rng.randrange(len(buf))
            buf[position:position] = buf[start : start + rng.randint(1, 32)]
        elif choice == 4 and seeds:
            seed = rng.choice(seeds)
            start = rng.randrange(len(seed) + 1)
            buf[position:position] = seed[start : start + rng.randint(1, 64)]
        else:
            buf[position:position] = os.urandom(rng.randint(1, 8))
    return bytes(buf[:MAX_LEN])


def run_hypothesis(target: Target, seconds: int, workdir: Path) -> int:
    """The fallback engine: mutate the corpus (the seeds, or what an atheris run left) at
    random and hand each result to a hypothesis test's ``fuzz_one_input`` (which reads it as
    its source of choices) for ``seconds``. Returns the number of inputs run; a crash writes
    the input the parser saw to ``workdir/crash-<n>`` and raises."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    last: list[bytes] = [b""]

    @settings(database=None, deadline=None)
    @given(st.binary(max_size=MAX_LEN))
    def test(data: bytes) -> None:
        last[0] = data
        target.one_input(data)

    corpus = workdir / "corpus"
    write_seeds(target, corpus)
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    seeds = list(target.seeds) or [b""]
    # Start from the corpus (an earlier atheris run's, when there was one).
    pool = [path.read_bytes()[:MAX_LEN] for path in sorted(corpus.iterdir())] or list(seeds)
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(pool), seeds)
        try:
            test.hypothesis.fuzz_one_input(data)  # type: ignore[attr-defined]
        except Exception:
            (workdir / f"crash-{runs}").write_bytes(last[0])
            raise
        runs += 1
        if len(pool) < 1000 and rng.random() < 0.01:
            pool.append(data)
    return runs


def run_grown(target: Target, size: int, workdir: Path, *, limit: int = 40) -> dict[str, object]:
    """Hand the ``limit`` largest corpus inputs, each repeated up to ``size`` octets, to the
    harness once: a parser that is quadratic (or worse) in its input shows up here, far
    beyond ``MAX_LEN``. Returns the count and the slowest input's seconds and corpus name; a
    crash writes the grown input to ``workdir/crash-grown-<name>`` and raises."""
    corpus = workdir / "corpus"
    write_seeds(target, corpus)
    entries = sorted(corpus.iterdir(), key=lambda p: p.stat().st_size, reverse=True)[:limit]
    slowest, slowest_name, count = 0.0, "", 0
    for path in entries:
        data = path.read_bytes()
        if not data:
            continue
        grown = (data * (size // len(data) + 1))[:size]
        started = time.perf_counter()
        try:
            target.one_input(grown)
        except Exception:
            (workdir / f"crash-grown-{path.name}").write_bytes(grown)
            raise
        elapsed = time.perf_counter() - started
        count += 1
        if elapsed > slowest:
            slowest, slowest_name = elapsed, path.name
    return {"grown": count, "slowest": round(slowest, 3), "slowest_input": slowest_name}
