"""What a message's verdicts add up to: the decision, the reply, and the headers that explain it.

Pure functions over :class:`~mailserver.types.Verdict` values, so the rules can be read and
tested without a reactor:

1. The strongest action wins: REJECT > TEMPFAIL > QUARANTINE > ACCEPT.
2. A trusted verdict (an allow-list hit) voids every verdict of a check that honours allow
   lists; a check that does not (virus scanning, the lists themselves) still counts.
3. Points add up. At or above ``quarantine_score`` the message goes to Junk; at or above
   ``reject_score`` (when set) it is refused with ``550 5.7.1``. The classifier's own
   is-spam decision enters the sum as its points, so one threshold governs them all.
4. ``X-Spam-Status`` says Yes/No, the score, the threshold and each signal with its points
   (SpamAssassin's layout, which mail clients and users know), and ``X-Spam-Report`` lists
   the reasons, so every verdict is explainable from the message alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailserver.errors import MailError
from mailserver.types import Action, SpamVerdict, Verdict

__all__ = [
    "FilterPolicy",
    "FilterRefused",
    "Outcome",
    "OWN_HEADERS",
    "decide",
    "refusal",
    "strip_own_headers",
]

#: Header fields this filter writes; copies arriving from outside are removed so that what a
#: user reads under these names is ours.
OWN_HEADERS = ("x-spam-status", "x-spam-flag", "x-spam-score", "x-spam-report", "x-virus-scanned")

_DEFAULT_REPLY = {
    Action.REJECT: (550, "5.7.1", "Message rejected by policy"),
    Action.TEMPFAIL: (451, "4.7.1", "Try again later"),
}


class FilterRefused(MailError):
    """A filter verdict refused a recipient or the message; code and text come from it."""

    def __init__(self, code: int, enhanced: str, text: str, *, detail: str = "") -> None:
        self.code = code
        self.enhanced = enhanced
        super().__init__(text, detail=detail)


@dataclass(frozen=True)
class FilterPolicy:
    """``quarantine_score``/``reject_score`` are points (``reject_score`` 0 = never refuse
    for points alone); ``timeout`` bounds each phase of each check, in seconds;
    ``add_headers`` writes X-Spam-Status/X-Spam-Report."""

    quarantine_score: float = 5.0
    reject_score: float = 0.0
    timeout: float = 30.0
    add_headers: bool = True


@dataclass(frozen=True)
class Outcome:
    """The merged result for one message (or one recipient)."""

    action: Action
    score: float
    verdicts: tuple[Verdict, ...]
    trusted: bool
    refusal: Verdict | None = None

    @property
    def spam(self) -> SpamVerdict | None:
        """The classifier's verdict, if a check gave one."""
        for verdict in self.verdicts:
            if verdict.spam is not None:
                return verdict.spam
        return None


def counted(verdicts: Iterable[Verdict], honours: dict[str, bool]) -> tuple[list[Verdict], bool]:
    """The verdicts that count (rule 2) and whether the sender is trusted.
    ``honours`` maps a check's name to its ``honours_allow_list``."""
    verdicts = list(verdicts)
    trusted = any(v.trusted for v in verdicts)
    if trusted:
        verdicts = [v for v in verdicts if v.trusted or not honours.get(v.check, True)]
    return verdicts, trusted


def decide(
    verdicts: Iterable[Verdict], honours: dict[str, bool], policy: FilterPolicy
) -> Outcome:
    """Merge ``verdicts`` by rules 1-3."""
    kept, trusted = counted(verdicts, honours)
    score = round(sum(v.score for v in kept), 2)
    strongest = max(kept, key=lambda v: v.action.value, default=None)
    action = strongest.action if strongest is not None else Action.ACCEPT
    refused = strongest if action in (Action.REJECT, Action.TEMPFAIL) else None
    if action.value < Action.REJECT.value and not trusted:
        if policy.reject_score > 0 and score >= policy.reject_score:
            action = Action.REJECT
            refused = Verdict(
                Action.REJECT, check="score", code=550, enhanced="5.7.1",
                text="Message rejected as spam", reason=f"score {score:.1f}",
            )
        elif action is Action.ACCEPT and score >= policy.quarantine_score:
            action = Action.QUARANTINE
    return Outcome(action, score, tuple(kept), trusted, refused)


def refusal(verdict: Verdict) -> FilterRefused:
    """The error that gives ``verdict``'s reply (defaults per action)."""
    code, enhanced, text = _DEFAULT_REPLY.get(verdict.action, _DEFAULT_REPLY[Action.REJECT])
    return FilterRefused(
        verdict.code or code,
        verdict.enhanced or enhanced,
        verdict.text or text,
        detail=f"{verdict.check}: {verdict.reason}" if verdict.reason else verdict.check,
    )


def status_headers(outcome: Outcome, policy: FilterPolicy) -> list[tuple[str, str]]:
    """X-Spam-Status (and X-Spam-Flag when spam) plus X-Spam-Report (rule 4), then every
    header a check asked for."""
    spammy = outcome.action is Action.QUARANTINE or outcome.score >= policy.quarantine_score
    rules = [v for v in outcome.verdicts if v.rule]
    tests = ",".join(f"{v.rule}({v.score:+.1f})" for v in rules) or "none"
    headers = [
        (
            "X-Spam-Status",
            f"{'Yes' if spammy else 'No'}, score={outcome.score:.1f} "
            f"required={policy.quarantine_score:.1f} tests={tests}"
            + (" trusted=yes" if outcome.trusted else ""),
        )
    ]
    if spammy:
        headers.append(("X-Spam-Flag", "YES"))
    reasons = [f"{v.rule or v.check}: {v.reason}" for v in outcome.verdicts if v.reason]
    if reasons:
        headers.append(("X-Spam-Report", "; ".join(reasons)))
    for verdict in outcome.verdicts:
        headers.extend(verdict.headers)
    return headers


def fold(name: str, value: str) -> bytes:
    """One header field, folded at spaces near 78 columns (RFC 5322 §2.2.3), CRLF ended."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    line = f"{name}: "
    lines: list[str] = []
    for word in value.split(" "):
        if len(line) + len(word) > 78 and line.strip() and not line.endswith(": "):
            lines.append(line.rstrip())
            line = "\t"
        line += word + " "
    lines.append(line.rstrip())
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def strip_own_headers(head: bytes) -> bytes:
    """``head`` (header block bytes, ending before the blank line) without OWN_HEADERS
    fields, continuation lines included."""
    out: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        dropping = name in OWN_HEADERS
        if not dropping:
            out.append(line)
    return b"".join(out)


def add_headers(message: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """``message`` with its own copies of OWN_HEADERS removed and ``headers`` appended to
    its header block (where SpamAssassin puts them: below every trace field)."""
    end, sep = _header_end(message)
    head, rest = message[:end], message[end:]
    head = strip_own_headers(head)
    if head and not head.endswith(b"\n"):
        head += b"\r\n"
    added = b"".join(fold(name, value) for name, value in headers)
    if not sep:  # a message with no body and no blank line
        return head + added
    return head + added + rest


def _header_end(message: bytes) -> tuple[int, bool]:
    """Where the header block ends (the blank line's start) and whether there is one."""
    if message.startswith((b"\r\n", b"\n")):
        return 0, True
    found = [
        (at, len(marker) // 2)
        for marker in (b"\r\n\r\n", b"\n\n")
        if (at := message.find(marker)) >= 0
    ]
    if not found:
        return len(message), False
    at, half = min(found)
    # The head keeps its last line end; the rest starts with the blank line.
    return at + half, True
