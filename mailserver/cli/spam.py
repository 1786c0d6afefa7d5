"""``mailserver spam train|eval|explain|stats``: the content classifiers' models.

- ``train PATH... [--label spam|ham] [--user ADDRESS] [--threshold P]`` reads labelled
  messages (directories with ``spam``/``ham`` path components, the corpus's ``.tar.gz``
  files, maildirs, mbox files: see :mod:`mailserver.filter.spam.corpus`), trains a model
  from scratch and stores it as the global model, or as the user model of ``ADDRESS``.
- ``eval PATH... [--user ADDRESS]`` classifies labelled messages with the stored model and
  prints accuracy, spam recall, ham false-positive rate and the confusion matrix.
- ``explain FILE [--user ADDRESS]`` prints one message's score and the tokens that weighed.
- ``stats [--top N]`` prints every stored model's size, messages learned and top tokens.

Progress goes to stderr as a bar (redrawn in place on a terminal, one line per tenth
otherwise); results go to stdout. Work happens before the reactor starts (the training is
CPU work with nothing else to serve), then the storage is closed as every storage noun does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from mailserver.cli.common import add_config_option
from mailserver.cli.storage import CommandError, address, run_with_storage
from mailserver.config import Config

# The classifiers (numpy, scipy) are imported by the verbs that use them, not when the
# command line registers its nouns: every other 'mailserver' command would pay ~0.2 s.
if TYPE_CHECKING:
    from mailserver.filter.spam.corpus import Example
    from mailserver.filter.spam.model import ModelStore, SpamModel

__all__ = ["ProgressBar", "eval_model", "explain", "register", "stats", "train"]

_GLOBAL = "global"  # ModelStore.GLOBAL


def register(subparsers: Any) -> None:
    """Add the ``spam`` noun and its verbs."""
    parser = subparsers.add_parser("spam", help="train, evaluate and explain the spam classifier")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    learn = verbs.add_parser("train", help="train a model from labelled messages")
    _paths(learn)
    learn.add_argument("--label", choices=("spam", "ham"), default=None,
                       help="the class of every message given (default: from the paths)")
    _user(learn, "train this user's model instead of the global one")
    learn.add_argument("--threshold", type=float, default=None, metavar="P",
                       help="spam probability threshold (default: the classifier's own, "
                            "chosen for at most 0.2%% ham false positives)")
    add_config_option(learn)
    learn.set_defaults(handler=train)

    judge = verbs.add_parser("eval", help="measure the stored model on labelled messages")
    _paths(judge)
    judge.add_argument("--label", choices=("spam", "ham"), default=None,
                       help="the class of every message given (default: from the paths)")
    _user(judge, "combine the global model with this user's model")
    add_config_option(judge)
    judge.set_defaults(handler=eval_model)

    why = verbs.add_parser("explain", help="show one message's score and what weighed most")
    why.add_argument("file", metavar="FILE", help="the message (RFC 5322 file; - for stdin)")
    _user(why, "combine the global model with this user's model")
    add_config_option(why)
    why.set_defaults(handler=explain)

    info = verbs.add_parser("stats", help="stored models: sizes, messages, top tokens")
    info.add_argument("--top", type=int, default=10, metavar="N",
                      help="tokens to list each way (default: 10; 0 for none)")
    add_config_option(info)
    info.set_defaults(handler=stats)


def _paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", metavar="PATH", nargs="+",
                        help="directory, maildir, mbox or .tar.gz with spam/ and ham/ paths")


def _user(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--user", metavar="ADDRESS", default=None, help=text)


class ProgressBar:
    """``label [#####-----] done/total`` on ``stream``: redrawn in place on a terminal,
    otherwise one line per tenth of the way (and the last), so logs stay short."""

    WIDTH = 30

    def __init__(self, label: str, total: int | None, stream: IO[str] | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = -1

    def update(self, done: int, total: int | None = None) -> None:
        total = total if total is not None else self.total
        if total:
            tenth = done * 10 // total
            if not self.tty and (tenth == self._shown or done != total and tenth == 0):
                return
            if self.tty and done != total and done % max(1, total // 200):
                return
            self._shown = tenth
            filled = done * self.WIDTH // total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"{self.label} [{bar}] {done}/{total}"
        else:
            if not self.tty and done % 1000:
                return
            text = f"{self.label}: {done}"
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _read_all(paths: list[str], label: str | None) -> list[Example]:
    """Every labelled message (read first, so the bar knows the total)."""
    from mailserver.filter.spam.corpus import CorpusError, examples

    given = None if label is None else label == "spam"
    bar = ProgressBar("reading", None)
    found: list[Example] = []
    try:
        for example in examples(paths, given):
            found.append(example)
            bar.update(len(found))
    except CorpusError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot read {error.filename or paths}: {error.strerror}") from None
    bar.finish()
    if not found:
        raise CommandError(f"no messages found in {' '.join(paths)}")
    return found


def _model_name(args: argparse.Namespace) -> str:
    return _GLOBAL if args.user is None else address(args.user)


def _load(models: ModelStore, name: str) -> SpamModel:
    from mailserver.filter.spam.model import ModelError

    try:
        model = models.load(name)
    except ModelError as error:
        raise CommandError(f"the stored model {name!r} cannot be read ({error}); "
                           "train it again with: mailserver spam train PATH...") from None
    if model is None:
        hint = "" if name == _GLOBAL else f" --user {name}"
        raise CommandError(f"no {'global' if name == _GLOBAL else name} spam model trained "
                           f"yet; train one first: mailserver spam train{hint} PATH...")
    return model


def _done() -> Any:
    async def finished() -> int:
        return 0

    return finished()


def train(args: argparse.Namespace) -> int:
    """Train a model from scratch on the given messages and store it."""
    from mailserver.filter.spam.model import DEFAULT_THRESHOLD, ModelStore, SpamModel

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise CommandError(f"--threshold {threshold} is not a probability between 0 and 1")
    name = _model_name(args)
    found = _read_all(args.paths, args.label)
    spam = sum(1 for example in found if example.is_spam)
    if name == _GLOBAL and (spam == 0 or spam == len(found)):
        raise CommandError(
            f"all {len(found)} messages are {'spam' if spam else 'ham'}: the global model "
            "needs both; give paths with spam and ham (or --label for each)"
        )

    def work(config: Config, directory: Any, store: Any) -> Any:
        bar = ProgressBar("tokenizing", len(found))

        def progress(done: int, total: int | None) -> None:
            bar.update(done, total)
            if done == len(found):
                bar.finish()
                print("fitting the logistic regression...", file=sys.stderr, flush=True)

        model = SpamModel.train(
            ((example.message, example.is_spam) for example in found),
            progress,
            threshold=threshold,
            total=len(found),
        )
        ModelStore(store.db).save_sync(name, model)
        print(f"trained the {name} model on {len(found)} messages "
              f"({spam} spam, {len(found) - spam} ham); "
              f"{len(model.bayes.counts)} tokens, {len(model.logreg.weights)} weighted, "
              f"threshold {model.threshold}")
        return _done()

    return run_with_storage(args, work)


def evaluate(
    model: SpamModel, user: SpamModel | None, found: Iterable[Example], total: int
) -> dict[str, int]:
    """Confusion counts (tp, fn, fp, tn) of the model on labelled examples."""
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    bar = ProgressBar("classifying", total)
    for done, example in enumerate(found, 1):
        verdict = model.classify(example.message, user).is_spam
        key = ("tp" if verdict else "fn") if example.is_spam else ("fp" if verdict else "tn")
        counts[key] += 1
        bar.update(done)
    bar.finish()
    return counts


def report_lines(counts: dict[str, int]) -> Iterator[str]:
    """The eval report: counts, rates and the confusion matrix."""
    tp, fn, fp, tn = counts["tp"], counts["fn"], counts["fp"], counts["tn"]
    spam, ham, total = tp + fn, fp + tn, tp + fn + fp + tn

    def rate(part: int, whole: int) -> str:
        return f"{100.0 * part / whole:.2f}%" if whole else "n/a"

    yield f"messages: {total} ({spam} spam, {ham} ham)"
    yield f"accuracy: {rate(tp + tn, total)}"
    yield f"spam recall: {rate(tp, spam)} ({tp} of {spam} spam caught)"
    yield f"ham false positives: {rate(fp, ham)} ({fp} of {ham} ham marked spam)"
    yield "confusion matrix:"
    yield f"{'':>14}{'said spam':>12}{'said ham':>12}"
    yield f"{'is spam':>14}{tp:>12}{fn:>12}"
    yield f"{'is ham':>14}{fp:>12}{tn:>12}"


def eval_model(args: argparse.Namespace) -> int:
    """Classify labelled messages with the stored model(s) and print the figures."""
    from mailserver.filter.spam.model import ModelStore

    found = _read_all(args.paths, args.label)

    def work(config: Config, directory: Any, store: Any) -> Any:
        models = ModelStore(store.db)
        model = _load(models, _GLOBAL)
        user = _load(models, address(args.user)) if args.user else None
        for line in report_lines(evaluate(model, user, found, len(found))):
            print(line)
        return _done()

    return run_with_storage(args, work)


def explain(args: argparse.Namespace) -> int:
    """One message's probability, verdict and the tokens that weighed most."""
    from mailserver.filter.spam.model import ModelStore

    try:
        if args.file == "-":
            message = sys.stdin.buffer.read(4 * 1024 * 1024)
        else:
            with open(args.file, "rb") as handle:
                message = handle.read(4 * 1024 * 1024)
    except OSError as error:
        raise CommandError(f"cannot read {args.file}: {error.strerror}") from None

    def work(config: Config, directory: Any, store: Any) -> Any:
        models = ModelStore(store.db)
        model = _load(models, _GLOBAL)
        user = _load(models, address(args.user)) if args.user else None
        result = model.classify(message, user)
        verdict = "spam" if result.is_spam else "ham"
        print(f"probability: {result.probability:.4f} ({verdict}; threshold "
              f"{result.threshold:.4f})")
        print(f"naive bayes: {result.bayes:.4f}  logistic regression: {result.logreg:.4f}"
              + ("" if result.user is None else f"  user model: {result.user:.4f}"))
        print("top tokens (weight in log-odds; + spammy, - hammy):")
        for token, weight in result.top:
            print(f"  {weight:+8.3f}  {token}")
        return _done()

    return run_with_storage(args, work)


def stats(args: argparse.Namespace) -> int:
    """Every stored model: bytes, messages, tokens, threshold, top tokens."""
    from mailserver.filter.spam.model import ModelStore


    def work(config: Config, directory: Any, store: Any) -> Any:
        models = ModelStore(store.db)
        names = models.names()
        if not names:
            raise CommandError("no spam model trained yet; train one first: "
                               "mailserver spam train PATH...")
        for name in names:
            model = _load(models, name)
            print(f"{name}: {models.size(name)} bytes; {model.messages} messages "
                  f"({model.bayes.spam_messages} spam, {model.bayes.ham_messages} ham); "
                  f"{len(model.bayes.counts)} tokens, {len(model.logreg.weights)} weighted; "
                  f"{model.logreg.steps} online steps; threshold {model.threshold}")
            if args.top > 0:
                spammy, hammy = model.top_tokens(args.top)
                print("  spammy: " + ", ".join(f"{t} {w:+.2f}" for t, w in spammy))
                print("  hammy:  " + ", ".join(f"{t} {w:+.2f}" for t, w in hammy))
        return _done()

    return run_with_storage(args, work)
