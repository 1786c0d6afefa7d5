"""Tests for report.py: one report, Markdown and HTML, with counts per RFC and working links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from matrix import CONFORMANCE_DIR, load
from report import main, render_html, section_url, write_report

HEADER = "id\tsection\tlevel\tsummary\tstatus\ttests\n"
TABLE = (
    "# RFC 5321: Simple Mail Transfer Protocol. Notes that are not the title.\n"
    + HEADER
    + "5321-4.1.1.1-a\t4.1.1.1\tMUST\tGreet <politely> & briefly\tpass\t"
    "tests/test_x.py::test_plain dialogs/smtp/quit.dialog\n"
    "5321-4.1.1.2-a\t4.1.1.2\tSHOULD\tWait\ttodo\t\n"
    "5321-D.1-a\tD.1\tMAY\tScenario\tdeviation: we are <strict>\t\n"
)
DIALOG = "# protocol: smtp\n# requirements: 5321-4.1.1.1-a\ns~ 220 .*\nclose\n"


class Links(HTMLParser):
    """Collects the href of every link of a page (and fails on unbalanced markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "br", "!doctype"):
            self.open.append(tag)
        self.hrefs += [value or "" for name, value in attrs if name == "href"]

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()


def make_tree(tmp_path: Path) -> Path:
    conformance = tmp_path / "rfc-conformance"
    (conformance / "requirements").mkdir(parents=True)
    (conformance / "requirements" / "rfc5321.tsv").write_text(TABLE)
    (conformance / "dialogs" / "smtp").mkdir(parents=True)
    (conformance / "dialogs" / "smtp" / "quit.dialog").write_text(DIALOG)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_plain():\n    pass\n")
    assert load(conformance).problems == []
    return conformance


def test_html_page_counts_rows_and_escapes_text(tmp_path):
    """The page has the counts per RFC with the table's title, every row with its status
    class, and the summaries and reasons escaped; the markup is balanced."""
    conformance = make_tree(tmp_path)
    page = render_html(load(conformance), "", tmp_path)
    assert "<td>Simple Mail Transfer Protocol</td>" in page
    counts = re.search(r'<a href="#rfc5321">RFC 5321</a>.*?</tr>', page).group(0)
    assert re.findall(r'<td class="n">(\d+)</td>', counts) == ["1", "1", "0", "1", "3"]
    assert '<tr id="5321-4.1.1.1-a" class="pass">' in page
    assert "Greet &lt;politely&gt; &amp; briefly" in page
    assert "deviation: we are &lt;strict&gt;" in page
    assert "<strict>" not in page
    Links().feed(page)


def test_written_report_links_reach_the_cited_files(tmp_path):
    """report.md and report.html link each cited test and dialog to its file, relative to
    the output directory, and each section to the RFC text."""
    conformance = make_tree(tmp_path)
    out = tmp_path / "build" / "conformance"
    markdown, page = write_report(load(conformance), out, tmp_path)
    parser = Links()
    parser.feed(page.read_text())
    local = [href for href in parser.hrefs if not href.startswith(("#", "https://"))]
    assert sorted(local) == [
        "../../rfc-conformance/dialogs/smtp/quit.dialog",
        "../../tests/test_x.py",
    ]
    for href in local:
        assert (out / href).resolve().is_file(), href
    assert "https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1" in parser.hrefs
    assert "https://www.rfc-editor.org/rfc/rfc5321#appendix-D.1" in parser.hrefs
    text = markdown.read_text()
    assert "[`tests/test_x.py::test_plain`](../../tests/test_x.py)" in text
    assert "| RFC 5321 | 1 | 1 | 0 | 1 | 3 |" in text


def test_real_report_links_resolve(tmp_path):
    """Every local link of the real report names a file of the checkout."""
    out = tmp_path / "report"
    _, page = write_report(load(CONFORMANCE_DIR), out)
    parser = Links()
    parser.feed(page.read_text())
    local = {href for href in parser.hrefs if not href.startswith(("#", "https://"))}
    assert len(local) > 100
    missing = [
        href
        for href in local
        if not Path(href).is_absolute() and not (out / href).resolve().is_file()
    ]
    assert missing == []


def test_report_lists_the_variations_found_against_the_reference(tmp_path):
    """With a variations.tsv, both files end with its rows: the dialog (linked), the line,
    the reference server, both answers and why the difference is allowed."""
    conformance = make_tree(tmp_path)
    (conformance / "variations.tsv").write_text(
        "dialog\tstep\tours\ttheirs\trfc\n"
        "dialogs/smtp/quit.dialog\t3\t220\t554\tRFC 5321 §3.1: a <server> may refuse\n"
    )
    markdown, page = write_report(load(conformance), tmp_path / "out", tmp_path)
    html_text = page.read_text()
    assert "Differences from the reference servers" in html_text
    assert '<td class="n">3</td><td>postfix</td><td><code>220</code></td>' in html_text
    assert "a &lt;server&gt; may refuse" in html_text
    Links().feed(html_text)
    assert (
        "| [`dialogs/smtp/quit.dialog`](../rfc-conformance/dialogs/smtp/quit.dialog) | 3 | "
        "postfix | `220` | `554` | RFC 5321 §3.1: a <server> may refuse |"
    ) in markdown.read_text()


def test_section_urls():
    assert section_url("rfc9051", "6.3.5") == "https://www.rfc-editor.org/rfc/rfc9051#section-6.3.5"
    assert section_url("rfc3464", "A.2") == "https://www.rfc-editor.org/rfc/rfc3464#appendix-A.2"


def test_cli_writes_both_files_and_reports_problems(tmp_path, capsys):
    """The CLI writes both files and exits 0 on a clean tree, 1 (listing them) on problems."""
    conformance = make_tree(tmp_path)
    assert main(["--root", str(conformance), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file() and (
        tmp_path / "out" / "report.md"
    ).is_file()
    assert "3 requirements" in capsys.readouterr().out
    (conformance / "dialogs" / "smtp" / "quit.dialog").unlink()
    assert main(["--root", str(conformance), "--out", str(tmp_path / "out")]) == 1
    assert "cites missing dialog dialogs/smtp/quit.dialog" in capsys.readouterr().err
    assert "Problems" in (tmp_path / "out" / "report.html").read_text()


def test_cli_names_an_unwritable_output(tmp_path, capsys):
    """An output path that cannot be made is a one-line error, not a traceback."""
    conformance = make_tree(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--root", str(conformance), "--out", str(blocker / "sub")]) == 1
    assert "cannot write the report to" in capsys.readouterr().err
