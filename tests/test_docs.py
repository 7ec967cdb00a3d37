"""docs/architecture.md and docs/guarantees.md against the code they describe.

Every test a document cites (`tests/test_file.py::test_name`) must exist, every
guarantee must cite one, every module path a document names must exist, the layer
table must be the one tests/test_layers.py enforces, links between the documents must
land on a heading, and every "docs/....md, Section" citation anywhere in the repository
must name a section that exists. So a renamed test, a moved module or a renamed section
fails here instead of leaving the documents quietly wrong.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "picolytics"
DOCUMENTS = ("architecture.md", "guarantees.md")

# tests/test_file.py, tests/test_file.py::test_name, tests/test_file.py::TestClass::test_name
TEST_CITATION = re.compile(r"\btests/(test_\w+\.py)(?:::(\w+))?(?:::(\w+))?")
# A file path in backticks; paths without one of these top folders are package modules.
FILE_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)*\.(?:py|sql|json))`")
TOP_FOLDERS = ("tests/", "sql/", "scripts/", "grafana/", "docker/", "k8s/", "deploy/")
GUARANTEE_HEADING = re.compile(r"^### ([A-Z]\d+)\. (.+)$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,4}) (.+)$", re.MULTILINE)
LINK = re.compile(r"\]\(((?:architecture|guarantees)\.md)?(?:#([\w-]+))?\)")
# "docs/guarantees.md, Reliability R3": the text after the comma names a section.
SECTION_CITATION = re.compile(r"docs/(architecture|guarantees)\.md, ([^)\n;:\"]+)")
GUARANTEE_ID = re.compile(r"\b([A-Z]\d+)\b")
# The design brief lives outside the repository; nothing inside may cite it.
OUTSIDE_BRIEF = re.compile("DESIGN" + r"(?: §|\.md)")

SCANNED_SUFFIXES = {".py", ".md", ".sql", ".yaml", ".yml", ".json", ".toml", ".sh", ".spec"}
SCANNED_NAMES = {"Makefile", "Dockerfile"}
SKIPPED_FOLDERS = {
    *(".git", ".venv", "node_modules", "__pycache__", "dist", "build", "data"),
    *(".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"),
}


@dataclass(frozen=True)
class Citation:
    document: str
    file: str  # test_file.py
    name: str | None  # a test function, or a class when `method` is set
    method: str | None

    def __str__(self) -> str:
        return "::".join(part for part in ("tests/" + self.file, self.name, self.method) if part)


def text_of(document: str) -> str:
    return (DOCS / document).read_text(encoding="utf-8")


def citations_in(document: str, text: str) -> list[Citation]:
    return [Citation(document, *match.groups()) for match in TEST_CITATION.finditer(text)]


def names_in(path: Path) -> dict[str, set[str]]:
    """Top-level test functions (key "") and the test methods of each class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[""].add(node.name)
        elif isinstance(node, ast.ClassDef):
            found[node.name] = {
                item.name
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
    return found


def missing(citation: Citation) -> str | None:
    """Why a citation points nowhere, or None when it points at a real test."""
    path = ROOT / "tests" / citation.file
    if not path.is_file():
        return "no such file"
    if citation.name is None:
        return None
    names = names_in(path)
    if citation.method is None:
        return None if citation.name in names[""] else "no such test function"
    if citation.method not in names.get(citation.name, set()):
        return "no such test method"
    return None


def headings(text: str) -> list[str]:
    return [match.group(2).strip() for match in HEADING.finditer(text)]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")


def layers_enforced() -> dict[str, int]:
    """The LAYERS table of tests/test_layers.py, read without importing it."""
    tree = ast.parse((ROOT / "tests" / "test_layers.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if not isinstance(node, ast.AnnAssign) or node.value is None:
            continue
        if isinstance(node.target, ast.Name) and node.target.id == "LAYERS":
            value: dict[str, int] = ast.literal_eval(node.value)
            return value
    raise AssertionError("tests/test_layers.py has no LAYERS table")


def section(text: str, title: str) -> str:
    """The body of the `## title` section of a document."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def scanned_files() -> list[Path]:
    """The repository's text files, without virtual environments, caches and data sets."""
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = sorted(name for name in subfolders if name not in SKIPPED_FOLDERS)
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix in SCANNED_SUFFIXES or name in SCANNED_NAMES:
                files.append(path)
    return files


@pytest.mark.parametrize("document", DOCUMENTS)
def test_cited_tests_exist(document: str) -> None:
    citations = citations_in(document, text_of(document))
    assert citations or document == "architecture.md"
    broken = [f"{citation}: {why}" for citation in citations if (why := missing(citation))]
    assert not broken, f"docs/{document} cites tests that do not exist: {broken}"


def test_every_guarantee_cites_a_test() -> None:
    text = text_of("guarantees.md")
    matches = list(GUARANTEE_HEADING.finditer(text))
    assert len(matches) > 50
    ids = [match.group(1) for match in matches]
    assert len(ids) == len(set(ids)), "guarantee ids must be unique"
    without = []
    for number, match in enumerate(matches):
        # A guarantee runs to the next heading, whatever its level.
        following = HEADING.search(text, match.end())
        end = following.start() if following else len(text)
        body = text[match.end() : end]
        if not any(c.name for c in citations_in("guarantees.md", body)):
            without.append(ids[number])
    assert not without, f"these guarantees cite no test function: {without}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_named_files_exist(document: str) -> None:
    named = {match.group(1) for match in FILE_PATH.finditer(text_of(document))}
    assert named
    absent = [
        path
        for path in sorted(named)
        if not (ROOT / path if path.startswith(TOP_FOLDERS) else PACKAGE / path).is_file()
    ]
    assert not absent, f"docs/{document} names files that do not exist: {absent}"


def test_layer_table_is_the_enforced_one() -> None:
    table = section(text_of("architecture.md"), "Layers")
    documented: dict[str, int] = {}
    for row in re.finditer(r"^\| [a-z]+ \| (\d) \| (.+) \|$", table, re.MULTILINE):
        for unit in re.findall(r"`(\w+)`", row.group(2)):
            documented[unit] = int(row.group(1))
    assert documented == layers_enforced()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_land_on_headings(document: str) -> None:
    broken = []
    for match in LINK.finditer(text_of(document)):
        target, fragment = match.group(1) or document, match.group(2)
        assert (DOCS / target).is_file(), target
        if fragment and fragment not in {anchor(h) for h in headings(text_of(target))}:
            broken.append(f"{target}#{fragment}")
    assert not broken, f"docs/{document} links to headings that do not exist: {broken}"


def test_section_citations_in_the_repository_exist() -> None:
    guarantees = text_of("guarantees.md")
    known_ids = {gid for gid, _ in GUARANTEE_HEADING.findall(guarantees)}
    titles = {
        "architecture": headings(text_of("architecture.md")),
        "guarantees": [*headings(guarantees), *known_ids],
    }
    wrong, checked = [], 0
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in SECTION_CITATION.finditer(text):
            checked += 1
            document, cited = match.group(1), match.group(2).strip()
            names_a_section = any(cited.lower().startswith(t.lower()) for t in titles[document])
            unknown_ids = set(GUARANTEE_ID.findall(cited)) - known_ids
            if not names_a_section or (document == "guarantees" and unknown_ids):
                wrong.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert checked > 10  # the code does cite these documents
    assert not wrong, f"citations of sections that do not exist: {wrong}"


def test_nothing_cites_the_brief_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in scanned_files()
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if OUTSIDE_BRIEF.search(line)
    ]
    assert not found, f"cite docs/ instead: {found}"


def test_the_parsers_see_what_they_must() -> None:
    """The checks above, on known text, so a blind pattern cannot pass them."""
    sample = (
        "`tests/test_a.py::test_b`, tests/test_c.py::TestD::test_e and tests/test_f.py.\n"
        "### R9. A heading\n[x](guarantees.md#privacy) [y](#the-read-side)\n"
        "(docs/guarantees.md, Reliability R3) `storage/writer.py` `sql/0001_initial.sql`\n"
    )
    assert [str(c) for c in citations_in("x", sample)] == [
        "tests/test_a.py::test_b",
        "tests/test_c.py::TestD::test_e",
        "tests/test_f.py",
    ]
    assert GUARANTEE_HEADING.findall(sample) == [("R9", "A heading")]
    assert LINK.findall(sample) == [("guarantees.md", "privacy"), ("", "the-read-side")]
    assert SECTION_CITATION.findall(sample) == [("guarantees", "Reliability R3")]
    assert FILE_PATH.findall(sample) == ["storage/writer.py", "sql/0001_initial.sql"]
    assert anchor("R3. A database outage loses `nothing`") == "r3-a-database-outage-loses-nothing"
    assert OUTSIDE_BRIEF.search("see " + "DESIGN" + " §6")
    assert (
        missing(Citation("x", "test_docs.py", "test_the_parsers_see_what_they_must", None)) is None
    )
    assert missing(Citation("x", "test_docs.py", "test_that_is_not_here", None))
    assert missing(Citation("x", "test_not_a_file.py", None, None))
