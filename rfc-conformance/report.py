"""Render the conformance matrix as one report: a Markdown file and a static HTML page.

Both have the counts per RFC and status, then one table per RFC with every row; each cited
test and dialog is a link to its file in the checkout (relative to the report, so the page
works from a local clone or a CI artefact unpacked beside the checkout), and each section
number links to the RFC text at rfc-editor.org. The page is one self-contained file (inline
style, no script, nothing fetched).

Run as a script (the output directory is under build/, which git ignores)::

    python rfc-conformance/report.py                     # build/conformance/report.{md,html}
    python rfc-conformance/report.py --out /tmp/matrix   # elsewhere

It exits with status 1 when the tree has problems (the report still lists them at the end).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from differential import REFERENCE, Variation, load_variations
from matrix import CONFORMANCE_DIR, STATUSES, Matrix, Row, _cell, _ref_file, load, render_markdown

DEFAULT_OUT = CONFORMANCE_DIR.parent / "build" / "conformance"
"""Where the report goes by default: build/conformance/ in the checkout (gitignored)."""

_TITLE = re.compile(r"#\s*RFC\s*(\d+)(?:\s*\([^)]*\))?\s*:\s*(.+?)[.;:]?\s*$")
_TABLE = re.compile(r"rfc(\d+)")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.n { text-align: right; }
td:first-child, td:nth-child(2), td:nth-child(3) { white-space: nowrap; }
td code { word-break: break-all; }
.pass { background: #e3f6e3; } .deviation { background: #fff4d6; }
.todo { background: #fde2e2; } .na { background: #eee; color: #666; }
code { font-size: 0.9em; } ul.problems { color: #a00; }
"""


def rfc_titles(matrix: Matrix, checkout_dir: Path) -> dict[str, str]:
    """Map each table stem (rfc5321) to its title, from the table's `# RFC NNNN: Title` line."""
    titles: dict[str, str] = {}
    for row in matrix.rows:
        if row.rfc in titles:
            continue
        titles[row.rfc] = ""
        try:
            lines = (checkout_dir / row.path).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            match = _TITLE.match(line)
            if match:
                title = match.group(2).split(". ", 1)[0]  # the title, not the notes after it
                titles[row.rfc] = title[0].upper() + title[1:]
                break
    return titles


def section_url(rfc: str, section: str) -> str:
    """The rfc-editor.org address of `section` of table `rfc` (appendices: A.1 and so on)."""
    number = _TABLE.fullmatch(rfc)
    base = f"https://www.rfc-editor.org/rfc/rfc{number.group(1) if number else rfc}"
    anchor = "appendix" if section[:1].isalpha() else "section"
    return f"{base}#{anchor}-{section}"


def _status_class(row: Row) -> str:
    return "na" if row.status == "n/a" else row.status


def render_html(
    matrix: Matrix,
    link_base: str = "",
    checkout_dir: Path | None = None,
    variations: Sequence[Variation] = (),
) -> str:
    """Return the report as one HTML page. Links to cited files are `link_base` + the
    checkout-relative path (so `link_base` is the checkout seen from where the page is).
    `variations` (rows of variations.tsv) are listed after the RFC tables."""
    checkout_dir = checkout_dir or CONFORMANCE_DIR.parent
    titles = rfc_titles(matrix, checkout_dir)
    rfcs = sorted({row.rfc for row in matrix.rows}, key=_rfc_number)
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>RFC conformance matrix</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>RFC conformance matrix</h1>",
        f"<p>{len(matrix.rows)} requirements in {len(rfcs)} RFCs, {len(matrix.dialogs)} "
        "dialogs. Every <em>pass</em> is proven by the tests it links to; CI fails when one "
        "of them fails or does not exist.</p>",
        "<table><thead><tr><th>RFC</th><th>title</th>"
        + "".join(f"<th>{esc(status)}</th>" for status in STATUSES)
        + "<th>total</th></tr></thead><tbody>",
    ]
    for rfc in rfcs:
        statuses = [row.status for row in matrix.rows if row.rfc == rfc]
        cells = "".join(f'<td class="n">{statuses.count(status)}</td>' for status in STATUSES)
        out.append(
            f'<tr><td><a href="#{esc(rfc)}">{esc(_rfc_title(rfc))}</a></td>'
            f"<td>{esc(titles.get(rfc, ''))}</td>{cells}"
            f'<td class="n">{len(statuses)}</td></tr>'
        )
    totals = "".join(
        f'<td class="n">{sum(row.status == status for row in matrix.rows)}</td>'
        for status in STATUSES
    )
    out.append(
        f'<tr><th>all</th><th></th>{totals}<td class="n">{len(matrix.rows)}</td></tr>'
        "</tbody></table>"
    )
    for rfc in rfcs:
        heading = _rfc_title(rfc) + (f": {titles[rfc]}" if titles.get(rfc) else "")
        out.append(f'<h2 id="{esc(rfc)}">{esc(heading)}</h2>')
        out.append(
            "<table><thead><tr><th>id</th><th>section</th><th>level</th><th>status</th>"
            "<th>summary</th><th>tests</th></tr></thead><tbody>"
        )
        for row in (row for row in matrix.rows if row.rfc == rfc):
            status = f"deviation: {row.reason}" if row.status == "deviation" else row.status
            tests = "<br>".join(
                f'<a href="{esc(link_base + _ref_file(ref))}"><code>{esc(ref)}</code></a>'
                for ref in row.tests
            )
            out.append(
                f'<tr id="{esc(row.id)}" class="{_status_class(row)}">'
                f"<td>{esc(row.id)}</td>"
                f'<td><a href="{esc(section_url(rfc, row.section))}">{esc(row.section)}</a></td>'
                f"<td>{esc(row.level)}</td><td>{esc(status)}</td><td>{esc(row.summary)}</td>"
                f"<td>{tests}</td></tr>"
            )
        out.append("</tbody></table>")
    if variations:
        out.append('<h2 id="variations">Differences from the reference servers</h2>')
        out.append(
            "<p>What the differential tests (tests/peers/test_*_differential.py) found when "
            "the same dialogs ran against our server and a reference, after normalising, and "
            "why each is allowed (rfc-conformance/variations.tsv).</p>"
        )
        out.append(
            "<table><thead><tr><th>dialog</th><th>line</th><th>reference</th><th>ours</th>"
            "<th>theirs</th><th>why</th></tr></thead><tbody>"
        )
        for variation in variations:
            href = esc(link_base + "rfc-conformance/" + variation.dialog)
            out.append(
                f'<tr><td><a href="{href}"><code>{esc(variation.dialog)}</code></a></td>'
                f'<td class="n">{variation.step}</td><td>{esc(_reference(variation))}</td>'
                f"<td><code>{esc(variation.ours)}</code></td>"
                f"<td><code>{esc(variation.theirs)}</code></td><td>{esc(variation.rfc)}</td></tr>"
            )
        out.append("</tbody></table>")
    if matrix.problems:
        out.append('<h2 id="problems">Problems</h2><ul class="problems">')
        out += [f"<li>{esc(str(problem))}</li>" for problem in matrix.problems]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _reference(row: Variation) -> str:
    """The reference server a variation was found against (by the dialog's protocol)."""
    parts = row.dialog.split("/")
    return REFERENCE.get(parts[1], "") if len(parts) == 3 else ""


def render_variations_markdown(variations: Sequence[Variation], link_base: str = "") -> str:
    """The variations as a Markdown section (empty when there are none)."""
    if not variations:
        return ""
    lines = ["", "## Differences from the reference servers", ""]
    lines.append("| dialog | line | reference | ours | theirs | why |")
    lines.append("|---|---|---|---|---|---|")
    for row in variations:
        link = f"[`{row.dialog}`]({link_base}rfc-conformance/{row.dialog})"
        cells = [link, str(row.step), _reference(row), f"`{row.ours}`", f"`{row.theirs}`", row.rfc]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _rfc_number(rfc: str) -> tuple[int, str]:
    match = _TABLE.fullmatch(rfc)
    return (int(match.group(1)) if match else sys.maxsize, rfc)


def _rfc_title(rfc: str) -> str:
    match = _TABLE.fullmatch(rfc)
    return f"RFC {match.group(1)}" if match else rfc


def write_report(
    matrix: Matrix, out_dir: Path, checkout_dir: Path | None = None
) -> tuple[Path, Path]:
    """Write report.md and report.html into `out_dir` (made if missing), with links relative
    to it, and the rows of the checkout's rfc-conformance/variations.tsv after the RFC tables;
    return both paths."""
    checkout_dir = (checkout_dir or CONFORMANCE_DIR.parent).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    link_base = Path(os.path.relpath(checkout_dir, out_dir.resolve())).as_posix() + "/"
    markdown = out_dir / "report.md"
    page = out_dir / "report.html"
    table = checkout_dir / "rfc-conformance" / "variations.tsv"
    variations = load_variations(table)[0] if table.is_file() else []
    text = render_markdown(matrix, link_base) + render_variations_markdown(variations, link_base)
    markdown.write_text(text, encoding="utf-8")
    page.write_text(render_html(matrix, link_base, checkout_dir, variations), encoding="utf-8")
    return markdown, page


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; print where, and any problems (exit 1 if there are some)."""
    parser = argparse.ArgumentParser(
        description="Write the RFC conformance report (Markdown, HTML)."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--root", type=Path, default=CONFORMANCE_DIR, help="the rfc-conformance directory"
    )
    args = parser.parse_args(argv)
    matrix = load(args.root)
    try:
        markdown, page = write_report(matrix, args.out, Path(args.root).resolve().parent)
    except OSError as error:
        print(f"cannot write the report to {args.out}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {markdown} and {page}: {len(matrix.rows)} requirements")
    for problem in matrix.problems:
        print(problem, file=sys.stderr)
    return 1 if matrix.problems else 0


if __name__ == "__main__":
    sys.exit(main())
