"""``python -m bench.fuzz --seconds N``: fuzz every parser for N seconds each.

Each harness runs in a child process of its own (atheris ends the process at the first
crash), with its corpus kept in ``<workdir>/<name>/corpus`` between runs so a later run starts
where the last one stopped. The table on stdout gives, per harness, the engine, the inputs run,
the corpus size and the crash (or hang) file, if any; with ``--grow OCTETS`` also the slowest
of the largest corpus inputs repeated to that size (a quadratic parser shows up there, past
libFuzzer's 4096-octet inputs). Progress and the child's log tail go to stderr. The exit
status is 1 when any harness crashed. ``--child NAME`` is the child's own entry point.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from elsewhere: make the checkout importable
    sys.path.insert(0, str(ROOT))

from bench.fuzz import HARNESSES  # noqa: E402

_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_ARTIFACT = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
ENGINES = ("auto", "atheris", "hypothesis")
#: A grown-input pass that takes longer than this has hung.
GROW_TIMEOUT = 600


def _engine(requested: str) -> str:
    if requested != "auto":
        return requested
    return "atheris" if importlib.util.find_spec("atheris") else "hypothesis"


def child(name: str, engine: str, seconds: int, workdir: Path) -> int:
    """Run one harness in this process; print ``{"runs": n}`` (or, for ``grow:N``, the grown
    inputs' figures) as the last stdout line."""
    from bench.fuzz import harness

    if engine.startswith("grow:"):
        module = importlib.import_module(f"bench.fuzz.{name}")
        figures = harness.run_grown(module.TARGET, int(engine[5:]), workdir)
        print(json.dumps(figures))
        return 0
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["mailserver"]):
            module = importlib.import_module(f"bench.fuzz.{name}")
        return harness.run_atheris(module.TARGET, seconds, workdir)
    module = importlib.import_module(f"bench.fuzz.{name}")
    runs = harness.run_hypothesis(module.TARGET, seconds, workdir)
    print(json.dumps({"runs": runs}))
    return 0


def _artifacts(workdir: Path) -> list[Path]:
    if not workdir.is_dir():
        return []
    return sorted(p for p in workdir.iterdir() if p.name.startswith(_ARTIFACT))


def grow(name: str, size: int, workdir: Path) -> dict[str, object]:
    """Run the corpus grown to ``size`` octets through one harness in a child process."""
    command = [sys.executable, "-m", "bench.fuzz", "--child", name, "--engine", f"grow:{size}",
               "--seconds", "1", "--workdir", str(workdir)]  # fmt: skip
    log = workdir / "grow-log.txt"
    try:
        with log.open("wb") as output:
            process = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                     timeout=GROW_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"grown_status": f"no end within {GROW_TIMEOUT} s (a hang)"}
    figures: dict[str, object] = {"grown_status": process.returncode}
    for line in log.read_text("utf-8", "replace").splitlines():
        if line.startswith('{"grown"'):
            figures.update(json.loads(line))
    return figures


def run(name: str, engine: str, seconds: int, workdir: Path) -> dict[str, object]:
    """Fuzz one harness in a child process and summarise the run."""
    workdir.mkdir(parents=True, exist_ok=True)
    before = set(_artifacts(workdir))
    command = [sys.executable, "-m", "bench.fuzz", "--child", name, "--engine", engine,
               "--seconds", str(seconds), "--workdir", str(workdir)]  # fmt: skip
    log = workdir / "log.txt"
    started = time.monotonic()
    with log.open("wb") as output:
        # A hang inside one input is caught by libFuzzer's -timeout; the margin here only
        # guards against a child that never starts fuzzing.
        process = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                 timeout=seconds + 120, check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    runs = 0
    if match := _RUNS.search(text):
        runs = int(match.group(1))
    for line in text.splitlines():
        if line.startswith('{"runs"'):
            runs = int(json.loads(line).get("runs", runs))
    new = [p for p in _artifacts(workdir) if p not in before]
    corpus = workdir / "corpus"
    return {
        "harness": name,
        "engine": engine,
        "seconds": round(elapsed, 1),
        "runs": runs,
        "corpus": len(list(corpus.iterdir())) if corpus.is_dir() else 0,
        "status": process.returncode,
        "crash": str(new[0].relative_to(ROOT)) if new and new[0].is_relative_to(ROOT) else
        (str(new[0]) if new else ""),
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per harness")
    parser.add_argument("--only", nargs="+", choices=HARNESSES, help="run only these")
    parser.add_argument("--engine", default="auto",
                        help="auto: atheris when installed, else the hypothesis fallback")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "fuzz",
                        help="corpora, crash files and logs (default build/fuzz)")
    parser.add_argument("--grow", type=int, default=0, metavar="OCTETS",
                        help="then run the largest corpus inputs repeated to OCTETS (e.g. "
                        "262144) and report the slowest: quadratic parsers show up there")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--child", choices=HARNESSES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    internal = bool(args.child) and re.fullmatch(r"grow:[0-9]+", args.engine) is not None
    if args.engine not in ENGINES and not internal:
        parser.error(f"--engine must be one of {', '.join(ENGINES)}")
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    engine = _engine(args.engine)
    if engine == "atheris" and importlib.util.find_spec("atheris") is None:
        parser.error("atheris is not installed: .venv/bin/pip install atheris, "
                     "or use --engine hypothesis")  # fmt: skip
    if args.child:
        return child(args.child, engine, args.seconds, args.workdir)
    names = args.only or list(HARNESSES)
    results = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}: {engine}, {args.seconds} s", file=sys.stderr)
        result = run(name, engine, args.seconds, args.workdir / name)
        if args.grow and not result["crash"] and not result["status"]:
            print(f"[{index}/{len(names)}] {name}: corpus grown to {args.grow} octets",
                  file=sys.stderr)  # fmt: skip
            result.update(grow(name, args.grow, args.workdir / name))
            if result["grown_status"]:
                found = _artifacts(args.workdir / name)
                result["crash"] = str(found[-1]) if found else str(result["grown_status"])
        results.append(result)
        if result["crash"] or result["status"]:
            tail = Path(str(result["log"])).read_text("utf-8", "replace").splitlines()[-25:]
            print("\n".join(tail), file=sys.stderr)
    grown = f" {'grown s':>8}" if args.grow else ""
    header = f"{'harness':<14} {'engine':<10} {'seconds':>8} {'runs':>10} {'corpus':>7}"
    header += f"{grown}  crash"
    print(header)
    print("-" * len(header))
    for r in results:
        crash = r["crash"] or ("" if r["status"] == 0 else f"exit status {r['status']}")
        slowest = f" {r.get('slowest', ''):>8}" if args.grow else ""
        print(f"{r['harness']:<14} {r['engine']:<10} {r['seconds']:>8} {r['runs']:>10} "
              f"{r['corpus']:>7}{slowest}  {crash}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["crash"] or r["status"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
