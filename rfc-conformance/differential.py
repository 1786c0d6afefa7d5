"""Differential testing: play a dialog against our server and a reference, compare the answers.

A dialog says what the RFC requires; a reference server (Dovecot for POP3 and IMAP, Postfix for
SMTP) shows what a respected implementation does. `compare` plays one dialog against both
(with `runner.play(..., trace=...)`, which records which dialog step read each server line),
normalises every response (:func:`normalise_smtp`, :func:`normalise_pop3`), and returns each
step where the two answered differently. A difference is then either

- an **allowed variation**, recorded in `variations.tsv` with the RFC text that allows it, or
- a finding: our server or the dialog is wrong (fix it), or the reference is (record it, citing
  the RFC text it breaks).

`variations.tsv` (tab-separated; `#` comments) has the header
`dialog  step  ours  theirs  rfc`: the dialog path as rows cite it (`dialogs/pop3/x.dialog`),
the dialog line of the step that read the differing response, both normalised responses as
:meth:`Difference.ours` / :meth:`Difference.theirs` print them, and the RFC text (`RFC NNNN §x:
...`) that allows both. Where the reference breaks a rule we keep, the text starts with
`reference deviates:` and names the rule. A difference that only follows from an earlier one
of the same dialog (the reference accepted a MAIL we refused, so its next MAIL is nested) says
`follows from line N: ...`, N being a step with its own row. A recorded variation must still
occur (else it is stale and must go), so the file stays true.

What normalising takes out (the RFCs leave it to the server):

- SMTP (RFC 5321 §4.2: the text after the code is not significant; §4.1.1.1: the EHLO keywords
  are the server's choice): a reply is its code and enhanced status code only; a multi-line
  reply counts as one reply (filed under the step that read its first line), so the EHLO
  keyword list is not compared.
- POP3 (RFC 1939 §3: text after +OK/-ERR is free; RFC 2449 §8: a bracketed response code is
  kept): a status line is `+OK`/`-ERR [CODE]`, except that STAT, LIST n and UIDL n keep their
  data; UIDL unique-ids are the server's (RFC 1939 §7) and blanked; the CAPA list is the
  server's (RFC 2449 §5) and left out; LIST, RETR and TOP bodies are compared line by line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runner import (
    EXPECT,
    EXPECT_MATCH,
    MISMATCHES,
    SKIP_UNTIL,
    STARTTLS,
    Dialog,
    DialogSyntaxError,
    Result,
    parse_dialog,
    play,
)

CONFORMANCE_DIR = Path(__file__).resolve().parent
VARIATIONS = CONFORMANCE_DIR / "variations.tsv"
COLUMNS = ("dialog", "step", "ours", "theirs", "rfc")
REFERENCE = {"smtp": "postfix", "pop3": "dovecot", "imap": "dovecot"}
CONTINUATION = {"smtp": r"\d{3}-.*"}
"""A line that another line of the same response follows (see runner.play)."""
"""The reference server each protocol's dialogs are compared with."""

Trace = list[tuple[str, int, bytes]]

INCOMPLETE = "<incomplete reply>"
_SMTP_REPLY = re.compile(r"(\d{3})([ -])(?:([245]\.\d{1,3}\.\d{1,3})(?: |$))?.*", re.DOTALL)
_POP3_CODE = re.compile(r"-ERR \[([^\]]+)\].*")
_POP3_MULTI = {"CAPA", "RETR", "TOP"}
_POP3_MULTI_NO_ARG = {"LIST", "UIDL"}


@dataclass(frozen=True)
class Difference:
    """One step where the two servers answered differently (after normalising).

    `ours` and `theirs` are the normalised responses read by step `step` (the dialog's line
    number), joined with " / "; a step that read nothing shows `<nothing>`, and a step where
    the reference failed the dialog shows what it sent or `<closed>`, `<timeout>`, ...
    """

    dialog: str
    step: int
    ours: str
    theirs: str

    def __str__(self) -> str:
        return f"{self.dialog}:{self.step}: ours {self.ours!r}, reference {self.theirs!r}"


@dataclass(frozen=True)
class Variation:
    """One row of variations.tsv: a difference the RFC text in `rfc` allows."""

    dialog: str
    step: int
    ours: str
    theirs: str
    rfc: str
    line: int

    def matches(self, difference: Difference) -> bool:
        return (self.dialog, self.step, self.ours, self.theirs) == (
            difference.dialog,
            difference.step,
            difference.ours,
            difference.theirs,
        )


# --- normalising -------------------------------------------------------------------------------


def _text(line: bytes) -> str:
    return line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "backslashreplace")


def normalise_smtp(trace: Trace) -> list[tuple[int, str]]:
    """The server's replies as `(step line, "CODE[ X.Y.Z]")`, one per reply. A multi-line
    reply is one, filed under the step that read its first line: where its last line is read
    depends on the order of the lines (EHLO keywords), which is the server's choice."""
    replies: list[tuple[int, str]] = []
    first: int | None = None
    for _, step, raw in (entry for entry in trace if entry[0] == "s"):
        match = _SMTP_REPLY.fullmatch(_text(raw))
        if match is None:
            replies.append((step, f"<not a reply: {_text(raw)[:40]}>"))
            first = None
            continue
        code, separator, enhanced = match.groups()
        first = step if first is None else first
        if separator == " ":
            replies.append((first, f"{code} {enhanced}" if enhanced else code))
            first = None
    if first is not None:
        replies.append((first, INCOMPLETE))  # the play ended inside a multi-line reply
    return replies


def normalise_pop3(trace: Trace) -> list[tuple[int, str]]:
    """The server's responses as `(step line, normalised text)`; a multi-line response is one
    entry with its lines joined by " / " (see the module docstring for what is kept)."""
    commands: list[tuple[int, str]] = []  # (index of the send, command line)
    for index, (kind, _, data) in enumerate(trace):
        if kind == "c":
            text = data.decode("utf-8", "replace")
            commands += [(index, part) for part in text.split("\r\n") if part]
    responses: list[tuple[int, str]] = []
    lines = [(step, _text(raw)) for kind, step, raw in trace if kind == "s"]
    position, greeted, sasl, command = 0, False, False, ""
    while position < len(lines):
        step, line = lines[position]
        position += 1
        if not greeted:
            greeted = True
            responses.append((step, _pop3_status(line, "")))
            continue
        if sasl:
            if commands:
                commands.pop(0)  # the client's answer to a "+ " challenge, not a command
        else:
            sent, command = commands.pop(0) if commands else (-1, "")
            if command.upper() == "STLS" and line.startswith("+OK"):
                # RFC 2595 §4: what was sent with STLS is discarded by the server
                commands = [item for item in commands if item[0] != sent]
        words = command.split()
        verb = words[0].upper() if words else ""
        sasl = line.startswith("+ ") or line == "+"
        if sasl:
            responses.append((step, "+"))
            continue
        status = _pop3_status(line, command)
        multi = line.startswith("+OK") and (
            verb in _POP3_MULTI or (verb in _POP3_MULTI_NO_ARG and len(words) == 1)
        )
        if not multi:
            responses.append((step, status))
            continue
        body: list[str] = []
        while position < len(lines):
            step, line = lines[position]
            position += 1
            if line == ".":
                break
            if verb == "UIDL":
                line = line.split(" ", 1)[0] + " _"
            body.append(line)
        if verb == "CAPA":
            body = []  # RFC 2449 §5: each server lists its own capabilities, in any order
        responses.append((step, " / ".join([status, *body, "."])))
    return responses


def _pop3_status(line: str, command: str) -> str:
    """`+OK`/`-ERR [CODE]`, keeping the data of STAT, LIST n and UIDL n (ids blanked)."""
    if line.startswith("-ERR"):
        code = _POP3_CODE.fullmatch(line)
        return f"-ERR [{code.group(1).upper()}]" if code else "-ERR"
    if not line.startswith("+OK"):
        return f"<not a status: {line[:40]}>"
    words = command.split()
    verb = words[0].upper() if words else ""
    data = line[3:].split()
    if verb == "STAT" and len(data) >= 2:
        return f"+OK {data[0]} {data[1]}"
    if verb == "LIST" and len(words) == 2 and len(data) >= 2:
        return f"+OK {data[0]} {data[1]}"
    if verb == "UIDL" and len(words) == 2 and data:
        return f"+OK {data[0]} _"
    return "+OK"


NORMALISERS: dict[str, Callable[[Trace], list[tuple[int, str]]]] = {
    "smtp": normalise_smtp,
    "pop3": normalise_pop3,
}


# --- comparing ---------------------------------------------------------------------------------


def _by_step(responses: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for step, text in responses:
        found.setdefault(step, []).append(text)
    return found


def _failure(result: Result) -> str:
    """What a server did instead of what the dialog expected, in a stable form."""
    if result.got == "<timeout>" or result.reason.startswith("no line within"):
        return "<timeout>"
    if result.got == "<connection closed>" or result.reason.startswith("send failed"):
        return "<closed>"  # whether a send or the next read notices depends on timing
    if result.reason.startswith("TLS handshake failed"):
        return "<TLS handshake failed>"
    if result.reason.startswith("server sent data before the TLS handshake"):
        return "<data before the TLS handshake>"
    if result.reason.startswith("connection still open"):
        return "<still open>"
    if result.reason.startswith("line d"):  # "line differs", "line does not match"
        return "<not as expected>"
    return f"<{result.reason.split(':')[0]}>"


def differences(
    dialog: Dialog, name: str, ours: tuple[Result, Trace], theirs: tuple[Result, Trace]
) -> list[Difference]:
    """Compare two plays of `dialog` (named `name`, as rows cite it) step by step.

    Our play must have passed. The reference's play is lenient (see `compare`): an unmet
    expectation does not end it, so every step is compared. If something ended its play
    (closed connection, failed TLS handshake), the step where that happened is one difference
    (what it sent there, then how it ended; for a hang-up, the step of the closing 221/421
    reply, shown as `<closed>`) and later steps are not compared.
    """
    normalise = NORMALISERS[dialog.protocol]
    their_responses = normalise(theirs[1])
    mine, other = _by_step(normalise(ours[1])), _by_step(their_responses)
    result = theirs[0]
    found: list[Difference] = []
    ended = not result.passed and not result.reason.startswith(MISMATCHES)
    stop = result.step.line if ended and result.step is not None else None
    hung_up = False
    if stop is not None and _failure(result) == "<closed>":
        # A server that hangs up says so first (221/421); whether the client reads that
        # reply or fails to send its next line first is a matter of timing, so the
        # comparison stops at the closing reply, shown as <closed> either way.
        closing = [line for line, text in their_responses if text[:3] in ("221", "421")]
        if closing and closing[-1] <= stop:
            stop, hung_up = closing[-1], True
    for step in dialog.steps:
        if step.kind not in (EXPECT, EXPECT_MATCH, SKIP_UNTIL, STARTTLS):
            continue
        quiet = "<TLS handshake done>" if step.kind == STARTTLS else "<nothing>"
        if stop is not None and (step.line >= stop or other.get(step.line) == [INCOMPLETE]):
            # the reference failed here (or inside the reply that starts here): what it sent
            # at this step, then how the dialog failed; later steps are not compared
            theirs_here = [text for text in other.get(step.line, []) if text != INCOMPLETE]
            if hung_up:
                theirs_here = []
            shown = " / ".join([*theirs_here, _failure(result)])
            found.append(Difference(name, step.line, _show(mine.get(step.line), quiet), shown))
            return found
        if mine.get(step.line) != other.get(step.line):
            ours_shown = _show(mine.get(step.line), quiet)
            found.append(
                Difference(name, step.line, ours_shown, _show(other.get(step.line), quiet))
            )
    if not result.passed and result.step is None:
        found.append(Difference(name, 0, "<connected>", _failure(result)))
    return found


def _show(responses: list[str] | None, quiet: str = "<nothing>") -> str:
    return " / ".join(responses) if responses else quiet


def compare(
    dialog: Dialog,
    name: str,
    ours: tuple[str, int],
    theirs: tuple[str, int],
    timeout: float = 5.0,
) -> tuple[Result, list[Difference]]:
    """Play `dialog` against `ours` and `theirs` ((host, port) each) and return our Result and
    the differences (see :func:`differences`; empty when our play failed: fix that first).
    The reference is played leniently: it goes on past an expectation it does not meet, so
    the whole dialog is compared, not only its part up to the reference's first difference."""
    their_trace: Trace = []
    continuation = CONTINUATION.get(dialog.protocol)
    their_result = play(
        dialog, theirs[0], theirs[1], timeout, None, None, their_trace, True, continuation
    )
    our_trace: Trace = []
    our_result = play(dialog, ours[0], ours[1], timeout, None, None, our_trace)
    if not our_result.passed:
        return our_result, []
    return our_result, differences(
        dialog, name, (our_result, our_trace), (their_result, their_trace)
    )


# --- the variations file -----------------------------------------------------------------------


def load_variations(path: Path = VARIATIONS) -> tuple[list[Variation], list[str]]:
    """Parse variations.tsv; return its rows and its problems (format, unknown dialog, a step
    that is not an expectation of that dialog, missing RFC text, duplicates)."""
    rows: list[Variation] = []
    problems: list[str] = []
    seen: dict[tuple[str, int, str, str], int] = {}
    consequences: list[tuple[str, str, int, int]] = []
    header = False
    dialogs: dict[str, Dialog | None] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = raw.split("\t")
        where = f"{path.name}:{number}"
        if not header:
            header = True
            if tuple(fields) != COLUMNS:
                problems.append(f"{where}: header must be {' <TAB> '.join(COLUMNS)}")
                return rows, problems
            continue
        if len(fields) != len(COLUMNS):
            problems.append(f"{where}: expected {len(COLUMNS)} columns, found {len(fields)}")
            continue
        name, step_text, ours, theirs, rfc = fields
        if not step_text.isdigit():
            problems.append(f"{where}: step {step_text!r} is not a dialog line number")
            continue
        step = int(step_text)
        if name not in dialogs:
            try:
                dialogs[name] = (
                    parse_dialog(path.parent / name) if name.endswith(".dialog") else None
                )
            except (OSError, DialogSyntaxError):
                dialogs[name] = None
        dialog = dialogs[name]
        if dialog is None:
            problems.append(f"{where}: no dialog {name}")
        elif step != 0 and step not in {s.line for s in dialog.steps if s.kind in _COMPARED}:
            problems.append(f"{where}: line {step} of {name} is not an expectation step")
        if not ours or not theirs or ours == theirs:
            problems.append(f"{where}: ours and theirs must be given and differ")
        follows = _FOLLOWS.match(rfc)
        if follows is None and not re.search(r"RFC \d+", rfc):
            problems.append(f"{where}: the rfc column must quote the RFC text that allows it")
        if follows is not None:
            consequences.append((where, name, int(follows.group(1)), step))
        key = (name, step, ours, theirs)
        if key in seen:
            problems.append(f"{where}: duplicate of line {seen[key]}")
        seen[key] = number
        rows.append(Variation(name, step, ours, theirs, rfc, number))
    if not header:
        problems.append(f"{path.name}: no header line")
    for where, name, cause, step in consequences:
        causes = {row.step for row in rows if row.dialog == name and not _FOLLOWS.match(row.rfc)}
        if cause >= step or cause not in causes:
            problems.append(
                f"{where}: 'follows from line {cause}' needs an earlier row of {name} at "
                f"step {cause} with its own RFC text"
            )
    return rows, problems


_COMPARED = (EXPECT, EXPECT_MATCH, SKIP_UNTIL, STARTTLS)
_FOLLOWS = re.compile(r"follows from line (\d+)\b")


def judge(
    found: list[Difference], variations: Iterable[Variation], name: str
) -> tuple[list[Difference], list[Variation]]:
    """Return (differences no variation allows, variations of dialog `name` that did not
    occur: stale rows to remove)."""
    mine = [row for row in variations if row.dialog == name]
    unexplained = [d for d in found if not any(row.matches(d) for row in mine)]
    stale = [row for row in mine if not any(row.matches(d) for d in found)]
    return unexplained, stale


def report(unexplained: list[Difference], stale: list[Variation]) -> str:
    """A failure message: each unexplained difference as a variations.tsv line to fill in,
    and each stale row."""
    lines = []
    if unexplained:
        lines.append(
            "differences from the reference (fix them, or add a line to "
            "rfc-conformance/variations.tsv with the RFC text that allows both):"
        )
        lines += [f"{d.dialog}\t{d.step}\t{d.ours}\t{d.theirs}\tRFC ..." for d in unexplained]
    if stale:
        lines.append("variations.tsv rows that no longer occur (remove them):")
        lines += [f"line {row.line}: {row.dialog}:{row.step}" for row in stale]
    return "\n".join(lines)
