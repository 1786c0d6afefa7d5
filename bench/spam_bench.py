"""Spam filtering quality and speed: our SpamModel against bogofilter and SpamAssassin's Bayes,
trained on the same messages and tested on the same held-out messages in the same run.

    .venv/bin/python bench/spam_bench.py [--fold 0] [--all-folds] [--corpus DIR]
        [--json PATH] [--quick] [--workdir DIR] [--keep] [--no-peers]

The corpus is the developers' part of the shared spam/ham corpus (``../shared/corpus``
beside the checkout: ``spam-train.tar.gz``, ``ham-train.tar.gz``, 4,221 messages). Its
messages are split into 5 folds by the SHA-256 of their body under this bench's own salt
(:func:`mailserver.filter.spam.corpus.fold_of`), so copies of one body stay in one fold and
the split is fresh (not the corpus's own hidden split). Fold ``--fold`` is held out and the
other four train every classifier; ``--all-folds`` repeats that for every fold and pools the
held-out results (5-fold cross-validation). ``--quick`` keeps a tenth of the messages.

- **ours**: :meth:`SpamModel.train` on the training messages, then
  :meth:`SpamModel.classify` on each held-out message, in this process (time per message
  includes tokenizing).
- **bogofilter**: a private word list (``-d DIR``, no config file ``-C``): ``-s -B`` on the
  spam and ``-n -B`` on the ham files, then ``-T -B`` on the held-out files (one process
  for all; its time per message is that process's wall time over the messages). Spam is
  what it calls ``S`` at its own default cut-off (0.99); its spamicity is the score.
- **spamassassin**: SpamAssassin's Bayes alone: ``sa-learn --spam/--ham`` with a private
  config (only the Check and Bayes plugins, ``use_bayes 1``, ``bayes_auto_learn 0``, no
  network tests, a private ``bayes_path``), then one Perl process using the
  Mail::SpamAssassin API (``check`` with only a Bayes rule defined) on every held-out
  message; the score is its Bayes probability and the time is the time spent in
  ``parse`` + ``check`` per message. Bayes alone never reaches SpamAssassin's 5 points, so
  its verdict here is probability >= 0.5 (BAYES_50 and up).

For each: spam recall, ham false-positive rate and accuracy at its own threshold, the spam
recall at the strictest operating point where the held-out ham false positives stay <= 0.2%
(the threshold set from the held-out ham scores, the same rule for all three: a comparable
point on each ROC curve, not a tuned verdict), and the classification time per message
with the ratio against ours (**above 1x the peer is slower than ours**).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine, servers
from mailserver.filter.spam.corpus import Example, examples, fold_of
from mailserver.filter.spam.model import SpamModel

FOLDS = 5
SALT = b"spam-bench"
FP_TARGET = 0.002

SA_RULES = """\
loadplugin Mail::SpamAssassin::Plugin::Check
loadplugin Mail::SpamAssassin::Plugin::Bayes
use_bayes 1
bayes_auto_learn 0
bayes_min_ham_num 1
bayes_min_spam_num 1
bayes_path {db}/bayes
lock_method flock
body BAYES_ANY eval:check_bayes('0', 'undef')
score BAYES_ANY 0.001
tflags BAYES_ANY learn
"""

SA_SCORE = r"""
use strict; use warnings;
use Mail::SpamAssassin;
use Time::HiRes qw(time);
my ($rules, $site, $prefs, $list) = @ARGV;
my $sa = Mail::SpamAssassin->new({rules_filename => $rules, site_rules_filename => $site,
  userprefs_filename => $prefs, local_tests_only => 1, dont_copy_prefs => 1});
$sa->init(1);
open(my $names, '<', $list) or die "$list: $!";
my $spent = 0;
while (my $f = <$names>) {
  chomp $f;
  open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; my $text = <$fh>; close $fh;
  my $t0 = time;
  my $mail = $sa->parse($text);
  my $status = $sa->check($mail);
  my $p = $status->{bayes_score};
  $spent += time - $t0;
  printf "%s %s\n", $f, defined $p ? $p : 'NA';
  $status->finish; $mail->finish;
}
printf "seconds %.6f\n", $spent;
"""


def load_corpus(corpus: Path, quick: bool) -> list[Example]:
    paths = [str(corpus / "ham-train.tar.gz"), str(corpus / "spam-train.tar.gz")]
    found = list(examples(paths))
    if quick:
        found = [e for e in found if fold_of(e.message, 10, b"spam-bench-quick") == 0]
    return found


def figures(scores: list[float], labels: list[bool], verdicts: list[bool]) -> dict[str, Any]:
    """Recall, FP rate, accuracy at the classifier's verdicts, and recall at FP <= 0.2%."""
    tp = sum(1 for v, y in zip(verdicts, labels, strict=True) if v and y)
    fp = sum(1 for v, y in zip(verdicts, labels, strict=True) if v and not y)
    spam = sum(labels)
    ham = len(labels) - spam
    ham_scores = sorted((s for s, y in zip(scores, labels, strict=True) if not y), reverse=True)
    allowed = int(FP_TARGET * ham)
    cut = ham_scores[allowed] if ham_scores else 0.0  # scores above this: <= allowed hams
    at_target = sum(1 for s, y in zip(scores, labels, strict=True) if y and s > cut)
    return {
        "spam": spam,
        "ham": ham,
        "caught": tp,
        "false_positives": fp,
        "spam_recall": round(tp / spam, 4) if spam else None,
        "ham_fp_rate": round(fp / ham, 4) if ham else None,
        "accuracy": round((tp + ham - fp) / len(labels), 4) if labels else None,
        "recall_at_fp_target": round(at_target / spam, 4) if spam else None,
        "threshold_at_fp_target": cut,
    }


def write_files(root: Path, items: list[Example], name: str) -> list[str]:
    folder = root / name
    folder.mkdir(parents=True)
    paths = []
    for n, example in enumerate(items):
        path = folder / f"{n:05d}"
        path.write_bytes(example.message)
        paths.append(str(path))
    return paths


def run_ours(train: list[Example], held: list[Example]) -> dict[str, Any]:
    started = time.perf_counter()
    model = SpamModel.train((e.message, e.is_spam) for e in train)
    trained = time.perf_counter() - started
    scores, verdicts, times = [], [], []
    for example in held:
        t0 = time.perf_counter()
        result = model.classify(example.message)
        times.append(time.perf_counter() - t0)
        scores.append(result.probability)
        verdicts.append(result.is_spam)
    return {
        "scores": scores,
        "verdicts": verdicts,
        "train_seconds": round(trained, 2),
        "classify_seconds": sum(times),
        "median_ms": statistics.median(times) * 1000 if times else 0.0,
        "threshold": model.threshold,
    }


def _batches(paths: list[str], size: int = 500) -> list[list[str]]:
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def run_bogofilter(work: Path, train: list[Example], held_paths: list[str]) -> dict[str, Any]:
    db = work / "bogofilter"
    db.mkdir()
    base = ["bogofilter", "-C", "-d", str(db)]
    spam_paths = write_files(work, [e for e in train if e.is_spam], "train-spam")
    ham_paths = write_files(work, [e for e in train if not e.is_spam], "train-ham")
    started = time.perf_counter()
    for flag, paths in (("-s", spam_paths), ("-n", ham_paths)):
        for batch in _batches(paths):
            subprocess.run([*base, flag, "-B", *batch], check=True, timeout=600)
    trained = time.perf_counter() - started
    scores, verdicts = {}, {}
    spent = 0.0
    for batch in _batches(held_paths):
        t0 = time.perf_counter()
        out = subprocess.run([*base, "-T", "-B", *batch], capture_output=True, text=True,
                             timeout=600)
        spent += time.perf_counter() - t0
        for line in out.stdout.splitlines():
            path, letter, score = line.rsplit(" ", 2)
            scores[path] = float(score)
            verdicts[path] = letter == "S"
    return {
        "scores": [scores[p] for p in held_paths],
        "verdicts": [verdicts[p] for p in held_paths],
        "train_seconds": round(trained, 2),
        "classify_seconds": spent,
    }


def run_spamassassin(work: Path, held_paths: list[str]) -> dict[str, Any]:
    """SpamAssassin's Bayes, trained on the files run_bogofilter wrote."""
    rules, site, db = work / "sa-rules", work / "sa-site", work / "sa-db"
    for folder in (rules, site, db):
        folder.mkdir()
    (rules / "bayes.cf").write_text(SA_RULES.format(db=db))
    tlds = Path("/usr/share/spamassassin/20_aux_tlds.cf")
    if tlds.exists():
        shutil.copy(tlds, rules / tlds.name)  # quiets "no tlds defined"
    prefs = work / "sa-prefs"
    prefs.write_text("")
    base = ["sa-learn", "-C", str(rules), "--siteconfigpath", str(site), "-p", str(prefs),
            "--dbpath", str(db), "-L", "--no-sync"]
    started = time.perf_counter()
    for flag, folder in (("--spam", "train-spam"), ("--ham", "train-ham")):
        subprocess.run([*base, flag, str(work / folder)], check=True, timeout=1800,
                       capture_output=True)
    subprocess.run([*base[:-1], "--sync"], check=True, timeout=600, capture_output=True)
    trained = time.perf_counter() - started
    script = work / "sa-score.pl"
    script.write_text(SA_SCORE)
    listing = work / "sa-held.txt"
    listing.write_text("\n".join(held_paths) + "\n")
    out = subprocess.run(["perl", str(script), str(rules), str(site), str(prefs), str(listing)],
                         capture_output=True, text=True, timeout=3600, check=True)
    scores: dict[str, float] = {}
    spent = 0.0
    for line in out.stdout.splitlines():
        path, value = line.rsplit(" ", 1)
        if path == "seconds":
            spent = float(value)
        else:
            scores[path] = 0.5 if value == "NA" else float(value)
    values = [scores[p] for p in held_paths]
    return {
        "scores": values,
        "verdicts": [s >= 0.5 for s in values],
        "train_seconds": round(trained, 2),
        "classify_seconds": spent,
    }


def versions() -> dict[str, str]:
    bogo = machine.command_output("bogofilter", "-V").splitlines()
    sa = machine.command_output("spamassassin", "-V").splitlines()
    return {
        "bogofilter": bogo[0].split()[-1] if bogo else "",
        "spamassassin": sa[0].split()[-1] if sa else "",
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_info = machine.BenchRun()
    corpus = args.corpus
    if not (corpus / "spam-train.tar.gz").exists():
        reason = f"no corpus at {corpus} (spam-train.tar.gz, ham-train.tar.gz): skipped"
        machine.log(reason)
        return {"skipped": reason}
    machine.log(f"reading {corpus}")
    found = load_corpus(corpus, args.quick)
    folds = [fold_of(e.message, FOLDS, SALT) for e in found]
    wanted = range(FOLDS) if args.all_folds else [args.fold]
    peers = [] if args.no_peers else [
        name for name in ("bogofilter", "spamassassin") if shutil.which(name)
    ]
    pooled: dict[str, dict[str, list[Any]]] = {
        name: {"scores": [], "verdicts": [], "labels": []} for name in ["ours", *peers]
    }
    timing: dict[str, dict[str, float]] = {
        name: {"classify_seconds": 0.0, "train_seconds": 0.0, "messages": 0} for name in pooled
    }
    ours_median: list[float] = []
    thresholds: list[float] = []
    for fold in wanted:
        train = [e for e, f in zip(found, folds, strict=True) if f != fold]
        held = [e for e, f in zip(found, folds, strict=True) if f == fold]
        machine.log(f"fold {fold}: training on {len(train)}, holding out {len(held)}")
        labels = [e.is_spam for e in held]
        results = {"ours": run_ours(train, held)}
        ours_median.append(results["ours"]["median_ms"])
        thresholds.append(results["ours"]["threshold"])
        fold_dir = workdir / f"fold{fold}"
        held_paths = write_files(fold_dir, held, "held")
        if "bogofilter" in peers or "spamassassin" in peers:
            bogo = run_bogofilter(fold_dir, train, held_paths)
            if "bogofilter" in peers:
                results["bogofilter"] = bogo
            if "spamassassin" in peers:
                machine.log(f"fold {fold}: sa-learn on {len(train)} messages")
                results["spamassassin"] = run_spamassassin(fold_dir, held_paths)
        for name, result in results.items():
            pooled[name]["scores"] += result["scores"]
            pooled[name]["verdicts"] += result["verdicts"]
            pooled[name]["labels"] += labels
            timing[name]["classify_seconds"] += result["classify_seconds"]
            timing[name]["train_seconds"] += result["train_seconds"]
            timing[name]["messages"] += len(held)
        if not args.keep:
            shutil.rmtree(fold_dir, ignore_errors=True)
    rows = {}
    ours_ms = timing["ours"]["classify_seconds"] * 1000 / max(1, timing["ours"]["messages"])
    for name, data in pooled.items():
        ms = timing[name]["classify_seconds"] * 1000 / max(1, timing[name]["messages"])
        rows[name] = {
            **figures(data["scores"], data["labels"], data["verdicts"]),
            "ms_per_message": round(ms, 3),
            "time_vs_ours": round(ms / ours_ms, 2) if ours_ms else None,
            "train_seconds": round(timing[name]["train_seconds"], 1),
        }
    rows["ours"]["median_ms_per_message"] = round(statistics.median(ours_median), 3)
    document: dict[str, Any] = {
        "machine": {**machine.machine_facts(workdir, versions()),
                    "loadavg_at_start": run_info.load_at_start},
        "config": {"corpus": str(corpus), "messages": len(found), "folds": FOLDS,
                   "held_out": list(wanted), "quick": args.quick,
                   "ours_threshold": thresholds[-1] if thresholds else None},
        "results": rows,
        "seconds": round(time.monotonic() - run_info.started, 1),
    }
    return document


def render(document: dict[str, Any]) -> str:
    if "skipped" in document:
        return f"spam_bench: {document['skipped']}"
    head = (f"{'classifier':<14}{'recall':>8}{'ham FP':>8}{'accuracy':>9}"
            f"{'recall@FP<=0.2%':>17}{'ms/msg':>9}{'x ours':>8}{'train s':>9}")
    lines = [head, "-" * len(head)]
    for name, row in document["results"].items():
        lines.append(
            f"{name:<14}{row['spam_recall']:>8.4f}{row['ham_fp_rate']:>8.4f}"
            f"{row['accuracy']:>9.4f}{row['recall_at_fp_target']:>17.4f}"
            f"{row['ms_per_message']:>9.3f}{row['time_vs_ours']:>7.2f}x"
            f"{row['train_seconds']:>9.1f}"
        )
    config = document["config"]
    found = document["results"]["ours"]
    lines.append(
        f"held out: folds {config['held_out']} of {config['folds']} over {config['messages']} "
        f"messages ({found['spam']} spam, {found['ham']} ham held out); ours median "
        f"{found['median_ms_per_message']} ms per message"
    )
    facts = document["machine"]
    lines.append(
        f"machine: {facts['cpus']} x {facts['cpu_model']}, Python {facts['python']}, "
        f"bogofilter {facts['bogofilter']}, SpamAssassin {facts['spamassassin']}, code "
        f"{facts['code']}; load average {facts['loadavg_at_start'][0]} at start, "
        f"{facts['loadavg_at_end'][0]} at end; {document['seconds']:.0f} s in all"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path,
                        default=machine.ROOT.resolve().parent / "shared" / "corpus",
                        help="the corpus directory (default: ../shared/corpus)")
    parser.add_argument("--fold", type=int, default=0, choices=range(FOLDS),
                        help="the held-out fold (default: 0)")
    parser.add_argument("--all-folds", action="store_true",
                        help="hold out each fold in turn and pool the results (5-fold CV)")
    parser.add_argument("--no-peers", action="store_true", help="measure ours only")
    servers.add_run_options(parser, "a tenth of the corpus (about 420 messages)")
    args = parser.parse_args()
    os.environ.setdefault("LC_ALL", "C")
    with servers.temporary_workdir("spam-bench-", args.workdir, args.keep) as workdir:
        document = run(args, workdir)
    servers.report(document, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
