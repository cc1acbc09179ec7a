"""The repository explains itself: the code cites docs/, and every citation leads somewhere.

- The design notes kept outside the repository are cited nowhere: what the code relies on
  lives in docs/.
- Every `docs/<page>.md` cited in the code, tests, scripts, recipes, accelerate configs or README exists,
  and so does the `#anchor` it names (an `<a id=...>` or a heading, as GitHub makes anchors from them).
- Every trap cited by number ("trap 3", `docs/traps.md#trap-3`) has its heading in docs/traps.md.
- Links between docs pages resolve, and docs/README.md lists every page.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

DOCS = REPO / "docs"
CITING = ("ossft", "tests", "scripts", "recipes", "accelerate_configs", "README.md", "BENCHMARKS.md")
THIS_FILE = Path(__file__).resolve()
# Pages of other projects that carry the same path. Each may be cited only by the file named.
OTHER_PROJECTS = {"docs/format.md": "tests/test_harmony_tools.py"}  # openai/harmony's format guide

CITATION = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(?:#([\w-]+))?")
TRAP = re.compile(r"\btrap[ -](\d+)\b", re.IGNORECASE)
TRAP_HEADING = re.compile(r"^## Trap (\d+):", re.MULTILINE)
DOCS_LINK = re.compile(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)")
EXPLICIT_ANCHOR = re.compile(r"<a id=\"([\w-]+)\"></a>")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)


def text_files(roots=CITING):
    for name in roots:
        path = REPO / name
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if not file.is_file() or "__pycache__" in file.parts:
                continue
            try:
                yield file, file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # not text


def slug(heading: str) -> str:
    """The anchor GitHub makes from a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page_text: str) -> set[str]:
    return set(EXPLICIT_ANCHOR.findall(page_text)) | {slug(h) for h in HEADING.findall(page_text)}


def broken_citations(files: dict[str, str], pages: dict[str, str]) -> list[str]:
    """What in `files` (name -> text) points at no page, anchor or trap of `pages` (docs file name -> text)."""
    traps = set(TRAP_HEADING.findall(pages.get("traps.md", "")))
    problems = []
    for name, text in files.items():
        for match in CITATION.finditer(text):
            page, anchor = match.groups()
            if OTHER_PROJECTS.get(f"docs/{page}") == name:
                continue
            if page not in pages:
                problems.append(f"{name}: {match.group(0)} cites a page docs/ does not have")
            elif anchor and anchor not in anchors(pages[page]):
                problems.append(f"{name}: {match.group(0)} names an anchor docs/{page} does not have")
        for number in TRAP.findall(text):
            if number not in traps:
                problems.append(f"{name}: trap {number} has no '## Trap {number}:' heading in docs/traps.md")
    return problems


def broken_links(pages: dict[str, str]) -> list[str]:
    """Links between docs pages (`[text](page.md#anchor)`, `[text](#anchor)`) that lead nowhere."""
    problems = []
    for name, text in pages.items():
        for page, anchor in DOCS_LINK.findall(text):
            target = page or name
            if target not in pages:
                problems.append(f"docs/{name}: links to {page}, which docs/ does not have")
            elif anchor and anchor not in anchors(pages[target]):
                problems.append(f"docs/{name}: links to {target}#{anchor}, which has no such anchor")
    return problems


def docs_pages() -> dict[str, str]:
    return {page.name: page.read_text(encoding="utf-8") for page in sorted(DOCS.glob("*.md"))}


def citing_files() -> dict[str, str]:
    # This file is left out: its self-test holds broken citations on purpose.
    return {file.relative_to(REPO).as_posix(): text for file, text in text_files() if file.resolve() != THIS_FILE}


# Spelled in two parts, so that a grep for the file name in ossft, tests and scripts finds nothing, this file included.
OUTSIDE_NOTES = "design" + ".md"


def test_design_notes_outside_the_repository_are_not_cited():
    citing = [
        f"{file.relative_to(REPO)}:{number}"
        for file, text in text_files((*CITING, "docs", "pyproject.toml"))
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE_NOTES in line
    ]
    assert citing == [], f"cite the docs/ page instead of {OUTSIDE_NOTES}:\n" + "\n".join(citing)


def test_every_cited_page_anchor_and_trap_exists():
    files = citing_files()
    assert any(CITATION.search(text) for text in files.values())  # the scan sees the citations
    problems = broken_citations(files, docs_pages())
    assert problems == [], "\n".join(problems)


def test_docs_pages_link_to_what_exists_and_are_all_listed():
    pages = docs_pages()
    assert {"README.md", "traps.md", "gpt-oss.md", "stack.md"} <= set(pages)
    assert broken_links(pages) == []
    assert broken_citations({f"docs/{name}": text for name, text in pages.items()}, pages) == []
    index = pages["README.md"]
    unlisted = [name for name in pages if name != "README.md" and f"]({name})" not in index]
    assert unlisted == [], f"docs/README.md does not list {unlisted}"


def test_traps_are_numbered_once_in_order():
    numbers = [int(n) for n in TRAP_HEADING.findall(docs_pages()["traps.md"])]
    assert numbers == list(range(1, len(numbers) + 1))
    for n in numbers:
        assert f'<a id="trap-{n}"></a>' in docs_pages()["traps.md"]


def test_the_checks_see_a_broken_citation():
    pages = {"traps.md": '<a id="trap-1"></a>\n## Trap 1: one\n', "gpt-oss.md": "## Shapes\n"}
    good = {"a.py": "see docs/traps.md#trap-1 and docs/gpt-oss.md#shapes, trap 1"}
    assert broken_citations(good, pages) == []
    for wrong in ("docs/trap.md", "docs/traps.md#trap-2", "trap 2", "docs/gpt-oss.md#shape"):
        assert broken_citations({"a.py": f"({wrong})"}, pages), wrong
    assert broken_links({"README.md": "[x](traps.md#trap-3)", **pages}) != []
