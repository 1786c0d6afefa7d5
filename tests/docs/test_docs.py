"""The documentation holds together: every relative link and anchor in docs/*.md and
README.md resolves, every page of docs/ is reachable from docs/index.md, the Python in the
embedding guide compiles, and docs/interfaces.md is exactly what docs/gen_interfaces.py
renders from the interface objects.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def pages() -> list[Path]:
    """The Markdown pages checked: every docs/*.md and the README."""
    return sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """The lines outside fenced code blocks (with their 1-based numbers), and each fenced
    block as (first line number, info string, code)."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[int, str, str]] = []
    opened: re.Match[str] | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if opened is None:
            if match:
                opened, start, body = match, number, []
            else:
                prose.append((number, line))
            continue
        fence = opened.group("fence")
        if match and match.group("fence").startswith(fence) and not match.group("info").strip():
            blocks.append((start, opened.group("info").strip(), "\n".join(body)))
            opened = None
        else:
            body.append(line[len(opened.group("indent")) :])
    if opened is not None:
        raise AssertionError(f"line {start}: a code fence is never closed")
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (no code ticks, link targets or
    emphasis marks) lower-cased, punctuation dropped, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page defines: its headings (a repeated heading gets -1, -2, ... as on
    GitHub) and explicit ``<a id=...>`` / ``<a name=...>`` tags."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose:
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and image outside code."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for number, line in prose:
        for target in LINK.findall(INLINE_CODE.sub("code", line)):
            found.append((number, target))
    return found


def broken_links(path: Path) -> list[str]:
    """One message per relative link of ``path`` whose file or anchor does not exist."""
    problems = []
    for number, target in links(path):
        if not target or target.startswith(EXTERNAL):
            continue
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}"
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where}: {target}: no file {file_part}")
            continue
        if fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{where}: {target}: no heading or anchor #{fragment} in {linked.name}")
    return problems


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_interfaces", DOCS / "gen_interfaces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPECTED_PAGES = (
    "index.md",
    "architecture.md",
    "interfaces.md",
    "configuration.md",
    "operations.md",
    "embedding.md",
)


def test_the_documentation_pages_exist() -> None:
    """docs/ has the index, architecture, interfaces, configuration, operations and
    embedding pages."""
    missing = [name for name in EXPECTED_PAGES if not (DOCS / name).is_file()]
    assert not missing, f"missing pages in docs/: {missing}"


@pytest.mark.parametrize("page", pages(), ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    """Each relative link names a file that exists, and each #anchor names a heading (or an
    explicit anchor) of the page it points to."""
    assert broken_links(page) == []


def test_every_page_is_reachable_from_the_index() -> None:
    """docs/index.md links to every other page of docs/ (none is orphaned)."""
    index = DOCS / "index.md"
    linked = {(DOCS / target.partition("#")[0]).resolve() for _, target in links(index)}
    orphans = [p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in linked]
    assert orphans == []


def test_the_link_check_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    """The checker itself: a link to a missing file and one to a missing heading are each
    reported; a good anchor, an external URL and a link inside code are not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## The `add_recipient` call\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#the-add_recipient-call) [web](https://example.org/x#y)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [self](#page)\n"
        "`[in code](missing2.md)`\n\n"
        "```\n[in a fence](missing3.md)\n```\n"
    )
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "missing.md" in problems[0]
    assert "#nowhere" in problems[1]


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    """Two headings with the same text are #name and #name-1, as GitHub numbers them."""
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Example\n\n## Example\n")
    assert anchors(page) == {"notes", "example", "example-1"}


def test_python_in_the_embedding_guide_compiles() -> None:
    """Every ```python block of docs/embedding.md is valid Python (it compiles)."""
    guide = DOCS / "embedding.md"
    _, blocks = split_fences(guide.read_text(encoding="utf-8"))
    python = [(line, code) for line, info, code in blocks if info.split()[:1] == ["python"]]
    assert python, "docs/embedding.md has no ```python example"
    for line, code in python:
        compile(code, f"docs/embedding.md:{line}", "exec")


def test_interfaces_page_is_generated_from_the_interfaces() -> None:
    """docs/interfaces.md equals what docs/gen_interfaces.py renders now; after changing an
    interface, run `.venv/bin/python docs/gen_interfaces.py` and commit the page."""
    generator = load_generator()
    committed = (DOCS / "interfaces.md").read_text(encoding="utf-8")
    assert committed == generator.render(), (
        "docs/interfaces.md is stale: run .venv/bin/python docs/gen_interfaces.py"
    )


def test_interfaces_page_covers_every_interface() -> None:
    """Each interface exported by mailserver.interfaces has its own section, with a
    heading per method."""
    import mailserver.interfaces as package

    page = DOCS / "interfaces.md"
    found = anchors(page)
    for name in package.__all__:
        interface = getattr(package, name)
        assert name.lower() in found, name
        for member in interface.names():
            if callable(getattr(interface[member], "getSignatureString", None)):
                assert slug(f"`{name}.{member}`") in found, f"{name}.{member}"
