"""Load the requirements tables, check their cross references, and render the matrix.

The tables live in `requirements/rfcNNNN.tsv` and the dialogs in `dialogs/<protocol>/*.dialog`
(README.md in this directory describes both formats). `load` validates every table row,
parses every dialog, and checks that:

- each cited pytest node id names an existing file and a test function or method in it
  (found with `ast`, following base classes defined or imported in the checkout; nothing
  is imported or run);
- each cited dialog exists, and each dialog names at least one requirement;
- each id a dialog names exists, and that row cites the dialog back (and vice versa).

Run as a script::

    python rfc-conformance/matrix.py               # check; print problems; exit 1 if any
    python rfc-conformance/matrix.py --markdown > report.md
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner import PROTOCOLS, Dialog, DialogSyntaxError, parse_dialog

CONFORMANCE_DIR = Path(__file__).resolve().parent
COLUMNS = ("id", "section", "level", "summary", "status", "tests")
LEVELS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
STATUSES = ("pass", "deviation", "n/a", "todo")

_TABLE_NAME = re.compile(r"rfc(\d+)\.tsv")
_ROW_ID = re.compile(r"(\d+)-([A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*)-([a-z0-9]+)")


@dataclass(frozen=True)
class Problem:
    """One defect in the tables or dialogs, located by file (relative to the checkout) and line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Row:
    """One requirement: a table row with its RFC, location and parsed status.

    `status` is one of STATUSES; a deviation's reason is in `reason`. `tests` holds the cited
    pytest node ids and dialog paths in the order written.
    """

    rfc: str
    id: str
    section: str
    level: str
    summary: str
    status: str
    reason: str
    tests: tuple[str, ...]
    path: str
    line: int


@dataclass
class Matrix:
    """Everything loaded from a conformance tree, plus the problems found on the way.

    `dialogs` maps each dialog's path relative to the conformance directory (as rows cite
    it, e.g. `dialogs/smtp/ehlo.dialog`) to the parsed Dialog.
    """

    rows: list[Row] = field(default_factory=list)
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def load(conformance_dir: Path = CONFORMANCE_DIR, checkout_dir: Path | None = None) -> Matrix:
    """Load and check the tables and dialogs under `conformance_dir`.

    Pytest node ids are resolved against `checkout_dir` (default: the parent of
    `conformance_dir`). Every problem found is recorded in the returned Matrix; nothing raises
    for a malformed tree.
    """
    conformance_dir = Path(conformance_dir).resolve()
    checkout_dir = (Path(checkout_dir) if checkout_dir else conformance_dir.parent).resolve()
    matrix = Matrix()
    seen: dict[str, Row] = {}
    for path in sorted((conformance_dir / "requirements").glob("*.tsv")):
        rows, problems = parse_table(path, _display(path, checkout_dir))
        matrix.problems.extend(problems)
        for row in rows:
            if row.id in seen:
                first = seen[row.id]
                matrix.problems.append(
                    Problem(
                        row.path,
                        row.line,
                        f"duplicate id {row.id} (first at {first.path}:{first.line})",
                    )
                )
                continue
            seen[row.id] = row
            matrix.rows.append(row)
    for path in sorted((conformance_dir / "dialogs").glob("**/*.dialog")):
        name = path.relative_to(conformance_dir).as_posix()
        try:
            dialog = parse_dialog(path)
        except (OSError, UnicodeDecodeError) as error:
            matrix.problems.append(Problem(_display(path, checkout_dir), None, str(error)))
            continue
        except DialogSyntaxError as error:
            matrix.problems.append(Problem(_display(path, checkout_dir), error.line, error.message))
            continue
        matrix.dialogs[name] = dialog
    matrix.problems.extend(_check_references(matrix, conformance_dir, checkout_dir))
    return matrix


def check(
    conformance_dir: Path = CONFORMANCE_DIR, checkout_dir: Path | None = None
) -> list[Problem]:
    """Return every problem in the tree under `conformance_dir` (empty when it is consistent)."""
    return load(conformance_dir, checkout_dir).problems


def parse_table(path: Path, display: str | None = None) -> tuple[list[Row], list[Problem]]:
    """Parse one requirements table; return its rows and the format problems found.

    `display` is the file name used in problems (default: `path`). A row with the wrong number
    of columns is reported and dropped; other row defects are reported and the row is kept.
    """
    display = display or str(path)
    problems: list[Problem] = []
    rows: list[Row] = []
    name_match = _TABLE_NAME.fullmatch(path.name)
    if name_match is None:
        problems.append(Problem(display, None, "table file name must be rfcNNNN.tsv"))
    rfc = path.stem
    header_seen = False
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = [value.strip() for value in raw.split("\t")]
        if not header_seen:
            header_seen = True
            if tuple(fields) != COLUMNS:
                problems.append(
                    Problem(display, number, f"header must be {' <TAB> '.join(COLUMNS)}")
                )
                return rows, problems
            continue
        if len(fields) == len(COLUMNS) - 1:
            fields.append("")
        if len(fields) != len(COLUMNS):
            problems.append(
                Problem(
                    display,
                    number,
                    f"expected {len(COLUMNS)} tab-separated columns "
                    f"({', '.join(COLUMNS)}), found {len(fields)}",
                )
            )
            continue
        row_id, section, level, summary, status_text, tests_text = fields
        row_problems: list[str] = []
        id_match = _ROW_ID.fullmatch(row_id)
        if id_match is None:
            row_problems.append(f"id {row_id!r} is not like 5321-4.5.3.1.4-a")
        else:
            if name_match is not None and id_match.group(1) != name_match.group(1):
                row_problems.append(f"id {row_id} does not start with {name_match.group(1)}-")
            if id_match.group(2) != section:
                row_problems.append(f"id {row_id} does not carry its section {section!r}")
        if not section:
            row_problems.append("section is empty")
        if level not in LEVELS:
            row_problems.append(f"unknown level {level!r} (known: {', '.join(LEVELS)})")
        if not summary:
            row_problems.append("summary is empty")
        status, _, reason = status_text.partition(":")
        status, reason = status.strip(), reason.strip()
        if status not in STATUSES or (reason and status != "deviation"):
            row_problems.append(
                f"unknown status {status_text!r} (known: pass, deviation: <reason>, n/a, todo)"
            )
        elif status == "deviation" and not reason:
            row_problems.append("a deviation needs a reason: 'deviation: <reason>'")
        tests = tuple(tests_text.split())
        if status == "pass" and not tests:
            row_problems.append(f"{row_id} has status pass but cites no test")
        for ref in tests:
            if _ref_kind(ref) is None:
                row_problems.append(
                    f"unrecognised test reference {ref!r} (use path/test_x.py::test_name "
                    "or dialogs/<protocol>/<name>.dialog)"
                )
        problems.extend(Problem(display, number, message) for message in row_problems)
        rows.append(
            Row(rfc, row_id, section, level, summary, status, reason, tests, display, number)
        )
    if not header_seen:
        problems.append(Problem(display, None, "table has no header line"))
    return rows, problems


def _ref_kind(ref: str) -> str | None:
    """Return "node" for a pytest node id, "dialog" for a dialog path, None otherwise."""
    if "::" in ref:
        path = ref.split("::", 1)[0]
        if path.endswith(".py") and not path.startswith("/") and ".." not in path.split("/"):
            return "node"
        return None
    if ref.startswith("dialogs/") and ref.endswith(".dialog") and ".." not in ref.split("/"):
        return "dialog"
    return None


def _display(path: Path, checkout_dir: Path) -> str:
    """Return `path` relative to the checkout when it is inside it, else as given."""
    try:
        return path.resolve().relative_to(checkout_dir).as_posix()
    except ValueError:
        return str(path)


def _check_references(matrix: Matrix, conformance_dir: Path, checkout_dir: Path) -> list[Problem]:
    """Check rows against tests and dialogs, and dialogs against rows."""
    problems: list[Problem] = []
    finder = _TestFinder(checkout_dir)
    by_id = {row.id: row for row in matrix.rows}
    for row in matrix.rows:
        for ref in row.tests:
            kind = _ref_kind(ref)
            if kind == "node":
                error = finder.missing(ref)
                if error is not None:
                    problems.append(Problem(row.path, row.line, f"{row.id} cites {error}"))
            elif kind == "dialog":
                dialog = matrix.dialogs.get(ref)
                if dialog is None:
                    if not (conformance_dir / ref).is_file():
                        problems.append(
                            Problem(row.path, row.line, f"{row.id} cites missing dialog {ref}")
                        )
                elif row.id not in dialog.requirements:
                    problems.append(
                        Problem(
                            row.path,
                            row.line,
                            f"{row.id} cites {ref}, whose '# requirements:' line does not name it",
                        )
                    )
    for name, dialog in matrix.dialogs.items():
        display = _display(dialog.path, checkout_dir)
        line = dialog.metadata_lines.get("requirements", 1)
        parts = name.split("/")
        if len(parts) != 3 or parts[1] not in PROTOCOLS:
            problems.append(Problem(display, None, "dialogs must sit in dialogs/{smtp,imap,pop3}/"))
        elif parts[1] != dialog.protocol:
            problems.append(
                Problem(
                    display,
                    dialog.metadata_lines.get("protocol"),
                    f"protocol {dialog.protocol} does not match directory {parts[1]}/",
                )
            )
        if not dialog.requirements:
            problems.append(
                Problem(display, None, "dialog names no requirement ('# requirements: <ids>')")
            )
        for req_id in dialog.requirements:
            named = by_id.get(req_id)
            if named is None:
                problems.append(Problem(display, line, f"names unknown requirement {req_id}"))
            elif name not in named.tests:
                problems.append(
                    Problem(
                        display,
                        line,
                        f"names {req_id}, but that row ({named.path}:"
                        f"{named.line}) does not cite {name}",
                    )
                )
    return problems


class _TestFinder:
    """Find test functions and methods in Python files by parsing them with `ast`."""

    def __init__(self, checkout_dir: Path) -> None:
        self.checkout_dir = checkout_dir
        self.modules: dict[Path, ast.Module | None] = {}

    def missing(self, node_id: str) -> str | None:
        """Return None if `node_id` names an existing test, else a description of what is wrong."""
        file_part, *names = node_id.split("::")
        names = [re.sub(r"\[.*\]$", "", name) for name in names]
        path = self.checkout_dir / file_part
        if not path.is_file():
            return f"{node_id}: no file {file_part}"
        module = self._module(path)
        if module is None:
            return f"{node_id}: {file_part} does not parse"
        if not names or not names[-1].startswith("test"):
            return f"{node_id}: the last part must name a test function (test_...)"
        if len(names) == 1:
            if names[0] in _defined_names(module.body):
                return None
            return f"{node_id}: no function {names[0]} in {file_part}"
        found = self._class(path, module, names[0])
        for nested in names[1:-1]:
            if found is None:
                break
            found = _find_class(found[1].body, nested, found[0])
        if found is None:
            return f"{node_id}: no class {'::'.join(names[:-1])} in {file_part}"
        if self._class_defines(found[0], found[1], names[-1], set()):
            return None
        return f"{node_id}: no method {names[-1]} in class {names[-2]} or its bases"

    def _module(self, path: Path) -> ast.Module | None:
        """Return the parsed module at `path` (cached), or None if it cannot be read or parsed."""
        path = path.resolve()
        if path not in self.modules:
            try:
                self.modules[path] = ast.parse(path.read_bytes(), filename=str(path))
            except (OSError, SyntaxError, ValueError):
                self.modules[path] = None
        return self.modules[path]

    def _class_defines(
        self, path: Path, node: ast.ClassDef, name: str, seen: set[tuple[Path, str]]
    ) -> bool:
        """Return True if class `node` (in `path`) or one of its resolvable bases defines `name`."""
        if name in _defined_names(node.body):
            return True
        seen.add((path, node.name))
        for base in node.bases:
            resolved = self._resolve(path, ast.unparse(base), 0)
            if resolved is not None and (resolved[0], resolved[1].name) not in seen:
                if self._class_defines(resolved[0], resolved[1], name, seen):
                    return True
        return False

    def _class(self, path: Path, module: ast.Module, name: str) -> tuple[Path, ast.ClassDef] | None:
        """Return the module-level class `name` of `module`, or None."""
        return _find_class(module.body, name, path)

    def _resolve(self, path: Path, dotted: str, depth: int) -> tuple[Path, ast.ClassDef] | None:
        """Resolve the class expression `dotted` as seen from the module at `path`.

        Follows module-level classes, `from x import Name` and `import x as m` + `m.Name`
        for modules inside the checkout; returns None for anything else.
        """
        module = self._module(path)
        if module is None or depth > 8:
            return None
        head, _, tail = dotted.partition(".")
        if not tail:
            found = self._class(path, module, head)
            if found is not None:
                return found
        for statement in module.body:
            if isinstance(statement, ast.ImportFrom):
                for alias in statement.names:
                    if (alias.asname or alias.name) != head:
                        continue
                    prefix = statement.module or ""
                    if tail:
                        submodule = f"{prefix}.{alias.name}".lstrip(".")
                        source = self._module_path(path, submodule, statement.level)
                        return self._resolve(source, tail, depth + 1) if source else None
                    source = self._module_path(path, prefix, statement.level)
                    return self._resolve(source, alias.name, depth + 1) if source else None
            elif isinstance(statement, ast.Import) and tail:
                for alias in statement.names:
                    bound = alias.asname or alias.name
                    if dotted.startswith(bound + "."):
                        source = self._module_path(path, alias.name, 0)
                        rest = dotted[len(bound) + 1 :]
                        if source is not None:
                            return self._resolve(source, rest, depth + 1)
        return None

    def _module_path(self, path: Path, dotted: str, level: int) -> Path | None:
        """Return the file of module `dotted` imported from `path` at relative `level`."""
        base = self.checkout_dir if level == 0 else path.resolve().parents[level - 1]
        target = base.joinpath(*dotted.split(".")) if dotted else base
        for candidate in (target.with_suffix(".py"), target / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None


def _find_class(
    body: Iterable[ast.stmt], name: str, path: Path
) -> tuple[Path, ast.ClassDef] | None:
    """Return the class called `name` defined directly in `body`, or None."""
    for statement in body:
        if isinstance(statement, ast.ClassDef) and statement.name == name:
            return path, statement
    return None


def _defined_names(body: Iterable[ast.stmt]) -> set[str]:
    """Return the function names and assigned names defined directly in `body`."""
    names: set[str] = set()
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
    return names


def render_markdown(matrix: Matrix, link_base: str = "") -> str:
    """Return the matrix as Markdown: counts per RFC and status, then every row per RFC.

    Each cited test or dialog links to its file: `link_base` + the checkout-relative path
    (the default "" suits a report at the top of the checkout).
    """
    rfcs = sorted({row.rfc for row in matrix.rows}, key=_rfc_key)
    lines = ["# RFC conformance matrix", ""]
    lines.append("| RFC | " + " | ".join(STATUSES) + " | total |")
    lines.append("|---" * (len(STATUSES) + 2) + "|")
    for rfc in rfcs:
        statuses = [row.status for row in matrix.rows if row.rfc == rfc]
        counts = " | ".join(str(statuses.count(status)) for status in STATUSES)
        lines.append(f"| {_rfc_title(rfc)} | {counts} | {len(statuses)} |")
    totals = " | ".join(
        str(sum(row.status == status for row in matrix.rows)) for status in STATUSES
    )
    lines.append(f"| **all** | {totals} | {len(matrix.rows)} |")
    for rfc in rfcs:
        lines += ["", f"## {_rfc_title(rfc)}", ""]
        lines.append("| id | section | level | status | summary | tests |")
        lines.append("|---|---|---|---|---|---|")
        for row in (row for row in matrix.rows if row.rfc == rfc):
            status = f"deviation: {row.reason}" if row.status == "deviation" else row.status
            tests = "<br>".join(f"[`{ref}`]({link_base}{_ref_file(ref)})" for ref in row.tests)
            cells = [row.id, row.section, row.level, status, row.summary, tests]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if matrix.problems:
        lines += ["", "## Problems", ""]
        lines += [f"- {_cell(str(problem))}" for problem in matrix.problems]
    return "\n".join(lines) + "\n"


def _ref_file(ref: str) -> str:
    """The checkout-relative file of a test reference (a node id's file, or the dialog)."""
    return ref.split("::", 1)[0] if "::" in ref else f"rfc-conformance/{ref}"


def _rfc_key(rfc: str) -> tuple[int, str]:
    """Sort tables by RFC number, then by name."""
    match = _TABLE_NAME.fullmatch(rfc + ".tsv")
    return (int(match.group(1)) if match else sys.maxsize, rfc)


def _rfc_title(rfc: str) -> str:
    """Return "RFC 5321" for the table stem "rfc5321"."""
    match = _TABLE_NAME.fullmatch(rfc + ".tsv")
    return f"RFC {match.group(1)}" if match else rfc


def _cell(text: str) -> str:
    """Escape `text` for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: check the tree (or render it with --markdown); return 1 if it has problems."""
    parser = argparse.ArgumentParser(description="Check or render the RFC conformance matrix.")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown report")
    parser.add_argument(
        "--root", type=Path, default=CONFORMANCE_DIR, help="the rfc-conformance directory"
    )
    args = parser.parse_args(argv)
    matrix = load(args.root)
    if args.markdown:
        sys.stdout.write(render_markdown(matrix))
        for problem in matrix.problems:
            print(problem, file=sys.stderr)
    elif matrix.problems:
        for problem in matrix.problems:
            print(problem)
    else:
        tables = len({row.rfc for row in matrix.rows})
        print(
            f"OK: {len(matrix.rows)} requirements in {tables} tables, {len(matrix.dialogs)} dialogs"
        )
    return 1 if matrix.problems else 0


if __name__ == "__main__":
    sys.exit(main())
