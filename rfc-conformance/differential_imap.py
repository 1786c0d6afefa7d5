"""IMAP responses for the differential test: normalise a traced play, so ours and Dovecot's compare.

`normalise_imap` is the IMAP entry of :data:`differential.NORMALISERS` and :data:`CONTINUATION`
that of :data:`differential.CONTINUATION` (importing this module registers both, so
:func:`differential.compare` handles ``# protocol: imap`` dialogs). It turns
a trace of :func:`runner.play` into ``(step line, response)`` pairs, one per IMAP response: the
untagged lines up to and including one tagged line (or the greeting), literals folded into
their line as quoted strings, each line normalised by :func:`normalise_line`, the untagged
lines of a response sorted (their order between two tagged lines is the server's). A response
is filed under the dialog step that expects its tagged line (the first expectation after the
command that starts with its tag) when the dialog is known (:func:`compare`), else under the
step that read it: a reference that sends a line more or less than the dialog expects has
its tagged line read by another step, and each response must still be compared with ours.

Allowed variations taken out (the RFCs leave them to the server):

- the human-readable text after a status and its response code (RFC 9051 §7.1);
- ``CAPABILITY`` lists, untagged or as a response code (each server has its extensions);
- values that identify the server or the mailbox instance: UIDVALIDITY (and the UIDVALIDITY
  in APPENDUID/COPYUID), INTERNALDATE and SAVEDATE values, the ``ID`` response, MAILBOXID/
  EMAILID/THREADID, MODSEQ numbers (in FETCH and SEARCH);
- informational untagged ``OK`` responses that only one server sends (HIGHESTMODSEQ,
  MAILBOXID, NOMODSEQ, URLMECH), advisory RFC 5530 codes on a tagged NO/BAD (ALERT, CANNOT,
  HASCHILDREN, ...: the codes a dialog depends on, such as TRYCREATE, are kept), an ENABLED
  response listing nothing, a RECENT update after an expunge;
- the order of untagged responses between two tagged ones, of the items in one FETCH or
  STATUS response, of flags and mailbox attributes, and of the numbers in SEARCH;
- \\HasChildren/\\HasNoChildren on an extended LIST that did not ask for CHILDREN (RFC 5258
  §4), LSUB attributes other than \\Noselect, the spelling of INBOX, the case of
  BODYSTRUCTURE strings, ``"CHILDINFO"`` quoted or not.
"""

from __future__ import annotations

import bisect
import re
from contextvars import ContextVar

import differential
from differential import Trace
from runner import EXPECT, EXPECT_MATCH, SEND, SEND_RAW, SKIP_UNTIL, Dialog, Result

_STATUS = re.compile(r"(\*|[^ *+]\S*) (OK|NO|BAD|BYE|PREAUTH)(?: \[([^\]]*)\])?.*")
#: Untagged OK codes only one of the servers sends, and codes that only add information.
_EXTRA_CODES = ("HIGHESTMODSEQ", "MAILBOXID", "NOMODSEQ", "URLMECH")
_CHILDREN = re.compile(r" ?\\Has(No)?Children")


def _code(code: str) -> str | None:
    """A response code with its server-specific values blanked (None: drop it)."""
    name, _, value = code.partition(" ")
    name = name.upper()
    if name in _EXTRA_CODES:
        return None
    if name == "CAPABILITY":
        return ""  # keep the response, without the list
    if name == "UIDVALIDITY":
        return name
    if name in ("APPENDUID", "COPYUID"):
        return f"{name} _ {value.partition(' ')[2]}"
    if name == "PERMANENTFLAGS":
        return f"{name} {_sorted_list(value)}"
    return code


def _sorted_list(text: str) -> str:
    """``(b a)`` as ``(a b)``: the order of flags and attributes carries no meaning."""
    return "(" + " ".join(sorted(text.strip("()").split(), key=str.lower)) + ")"


def _tokens(text: str) -> list[str]:
    """Top-level tokens of ``text``: atoms (with their [...] section), quoted strings,
    parenthesised lists."""
    tokens, depth, current, quoted, bracket = [], 0, "", False, 0
    for index, char in enumerate(text):
        if quoted:
            current += char
            if char == '"' and text[index - 1] != "\\":
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "([" and not (char == "(" and bracket):
            depth += char == "("
            bracket += char == "["
        elif char in ")]" and not (char == ")" and bracket):
            depth -= char == ")"
            bracket -= char == "]"
        if char == " " and depth == 0 and bracket == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    return [token for token in tokens if token]


def _fetch_items(items: str) -> str:
    """The items of one FETCH response, sorted by name, server-specific values blanked."""
    tokens = _tokens(items)
    pairs = []
    for name, value in zip(tokens[::2], tokens[1::2], strict=False):
        upper = name.upper()
        if upper in ("INTERNALDATE", "SAVEDATE"):
            value = "_"
        elif upper in ("MODSEQ", "EMAILID", "THREADID"):
            continue
        elif upper == "FLAGS":
            value = _sorted_list(value)
        elif upper == "BODYSTRUCTURE" or upper == "BODY":
            value = value.upper()  # RFC 2045 types, subtypes and parameter names ignore case
        pairs.append(f"{upper} {value}")
    return "(" + " ".join(sorted(pairs)) + ")"


def normalise_line(line: str, command: str) -> str | None:
    """One server line with the allowed variations taken out (None: the line is dropped).
    ``command`` is the client's command the line answers ("" when not known)."""
    verb = command.split(" ", 2)[1].upper() if command.count(" ") else ""
    if line.startswith("+"):
        return "+"
    match = _STATUS.fullmatch(line)
    if match:
        tag, status, code = match.groups()
        if code is not None:
            code = _code(code)
            if code and status in ("NO", "BAD", "OK") and tag != "*":
                # RFC 5530 codes on a refusal are advisory (SHOULD); the ones a dialog
                # depends on are checked by the dialog itself, for both servers.
                if code.split(" ")[0].upper() in (
                    "ALERT",
                    "CANNOT",
                    "CLIENTBUG",
                    "NONEXISTENT",
                    "ALREADYEXISTS",
                    "HASCHILDREN",
                    "INUSE",
                    "SERVERBUG",
                    "PARSE",
                ):
                    code = None
            if code is None and tag == "*" and status == "OK":
                return None
        return f"{tag} {status}" + (f" [{code}]" if code else "")
    words = line.split(" ", 3)
    kind = words[1].upper() if len(words) > 1 else ""
    if kind == "CAPABILITY":
        return None  # untagged or as a response code, either is allowed; contents vary
    if kind == "ID":
        return "* ID _"
    if kind == "FLAGS":
        return "* FLAGS " + _sorted_list(line[len("* FLAGS ") :])
    if kind == "ENABLED" and len(words) == 2:
        return None  # RFC 5161: an ENABLED listing nothing may be left out
    if (
        len(words) > 2
        and words[2].upper() == "RECENT"
        and verb in ("EXPUNGE", "UID", "CLOSE", "MOVE")
    ):
        return None  # a RECENT update after an expunge repeats what EXPUNGE said
    if kind == "SEARCH":
        # the order of the numbers carries no meaning; MODSEQ values are each server's count
        numbers = re.sub(r"\(MODSEQ \d+\)", "", line[len("* SEARCH") :]).split()
        return "* SEARCH " + " ".join(sorted(numbers, key=lambda n: int(n) if n.isdigit() else 0))
    if kind == "STATUS":
        name, _, items = line[len("* STATUS ") :].rpartition(" (")
        name = "INBOX" if name.upper() == "INBOX" else name
        tokens = _tokens(items.rstrip(")"))
        pairs = sorted(
            f"{key.upper()} {'_' if key.upper() == 'UIDVALIDITY' else value}"
            for key, value in zip(tokens[::2], tokens[1::2], strict=False)
        )
        return f"* STATUS {name} (" + " ".join(pairs) + ")"
    if kind in ("LIST", "LSUB"):
        tokens = _tokens(line[len(f"* {kind} ") :])
        attributes = tokens[0]
        extended = command.upper().split(" ")[2:3] != [] and command.split(" ")[2].startswith("(")
        if "RETURN" in command.upper() or extended:
            if "CHILDREN" not in command.upper():
                attributes = _CHILDREN.sub("", attributes)  # RFC 5258 §4: MAY be sent
        if kind == "LSUB":  # RFC 3501 §6.3.9: only \Noselect has a meaning in LSUB
            attributes = "(\\Noselect)" if "\\Noselect" in attributes else "()"
        name = "INBOX" if len(tokens) > 2 and tokens[2].upper() == "INBOX" else tokens[2]
        rest = " ".join(tokens[3:]).replace('"CHILDINFO"', "CHILDINFO")
        return " ".join(
            filter(None, (f"* {kind}", _sorted_list(attributes), tokens[1], name, rest))
        )
    if len(words) > 2 and words[2].upper() == "FETCH":
        items = line.split(" FETCH ", 1)[1]
        return f"* {words[1]} FETCH " + _fetch_items(items[1:-1])
    return line


def _quoted(data: bytes) -> str:
    """Literal octets as one quoted-string token (so items around it can be compared)."""
    text = data.decode("utf-8", "backslashreplace").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "\\r").replace("\n", "\\n") + '"'


def _folded_lines(trace: Trace) -> list[tuple[int, str]]:
    """The server's lines as ``(index in trace of the entry holding its end, text)``, every
    literal folded into its line as a quoted string."""
    entries = [index for index, entry in enumerate(trace) if entry[0] == "s"]
    starts: list[int] = []
    blob = b""
    for index in entries:
        starts.append(len(blob))
        blob += trace[index][2]
    lines: list[tuple[int, str]] = []
    position = 0
    while position < len(blob):
        end = blob.find(b"\r\n", position)
        end = len(blob) if end < 0 else end
        line, position = blob[position:end], end + 2
        while (found := re.search(rb"~?\{(\d+)\+?\}$", line)) and position <= len(blob):
            size = int(found.group(1))
            literal, position = blob[position : position + size], position + size
            end = blob.find(b"\r\n", position)
            end = len(blob) if end < 0 else end
            rest, position = blob[position:end], end + 2
            line = line[: found.start()] + _quoted(literal).encode() + rest
        last = entries[max(0, bisect.bisect_right(starts, min(end, len(blob) - 1)) - 1)]
        lines.append((last, line.decode("utf-8", "backslashreplace")))
    return lines


def _tag(text: str) -> str:
    return text.split(" ", 1)[0] if " " in text else ""


def tagged_steps(dialog: Dialog) -> dict[str, list[int]]:
    """For each tag the dialog sends, the lines of the expectations that read its tagged
    response, in order: the first expectation after the command that starts with the tag."""
    found: dict[str, list[int]] = {}
    pending: list[str] = []
    for step in dialog.steps:
        if step.kind in (SEND, SEND_RAW):
            text = step.data.decode("utf-8", "replace") if step.kind == SEND_RAW else step.text
            pending += [_tag(part) for part in text.split("\r\n") if _tag(part)]
        elif step.kind in (EXPECT, EXPECT_MATCH, SKIP_UNTIL):
            for tag in [tag for tag in pending if step.text.startswith(f"{tag} ")]:
                found.setdefault(tag, []).append(step.line)
                pending.remove(tag)
    return found


_DIALOG: ContextVar[Dialog | None] = ContextVar("differential_imap_dialog", default=None)


def compare(
    dialog: Dialog,
    name: str,
    ours: tuple[str, int],
    theirs: tuple[str, int],
    timeout: float = 5.0,
) -> tuple[Result, list[differential.Difference]]:
    """:func:`differential.compare` for an IMAP dialog, each response filed under the step of
    the dialog that expects its tagged line (:func:`tagged_steps`), whichever step read it."""
    token = _DIALOG.set(dialog)
    try:
        return differential.compare(dialog, name, ours, theirs, timeout)
    finally:
        _DIALOG.reset(token)


def normalise_imap(trace: Trace, dialog: Dialog | None = None) -> list[tuple[int, str]]:
    """The responses of a traced play of ``dialog`` (default: the one :func:`compare` is
    playing, if any) as ``(step line, "line / line / tagged line")`` (see the module
    docstring)."""
    commands: dict[str, str] = {}
    for kind, _, data in trace:
        if kind == "c":
            for part in data.decode("utf-8", "replace").split("\r\n"):
                if part:
                    commands.setdefault(_tag(part), part)
    dialog = dialog if dialog is not None else _DIALOG.get()
    expected = tagged_steps(dialog) if dialog is not None else {}
    responses: list[tuple[int, str]] = []
    current: list[str] = []
    for index, line in _folded_lines(trace):
        match = _STATUS.fullmatch(line)
        tag = match.group(1) if match else None
        current.append(line)
        greeting = not responses and len(current) == 1 and line.startswith("* ")
        if not (tag and tag != "*") and not greeting:
            continue
        command = commands.get(tag or "", "")
        normalised = [normalise_line(entry, command) for entry in current]
        if greeting and normalised[-1] is None:
            normalised[-1] = "* OK"  # a greeting is compared even without a response code
        kept = [entry for entry in normalised if entry is not None]
        text = " / ".join(sorted(kept[:-1]) + kept[-1:])
        lines = expected.get(tag or "")
        responses.append((lines.pop(0) if lines else trace[index][1], text))
        current = []
    if current:  # the play ended before this response's tagged line was read
        normalised = [normalise_line(entry, "") for entry in current]
        text = " / ".join(entry for entry in normalised if entry is not None)
        responses.append((trace[len(trace) - 1][1], text or "<unsolicited>"))
    return responses


CONTINUATION = r"\* .*"
"""In Dovecot's lenient play, a step whose untagged line did not meet its expectation reads
the rest of the response too (up to the tagged line), so the next step starts in step."""

differential.NORMALISERS.setdefault("imap", normalise_imap)
differential.CONTINUATION.setdefault("imap", CONTINUATION)
