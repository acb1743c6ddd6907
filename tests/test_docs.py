"""The project explains itself: every pointer into docs/mathematics.md names a section that
exists, and nothing cites a document that is not in the repository."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mathematics.md"
SOURCES = [p for d in ("fastcpa", "kernels", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")] + \
    [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md"]


def citations():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"docs/mathematics\.md\)?,\s+sections?\s+(\d+)(?:-(\d+))?", text):
            yield path.relative_to(ROOT), int(m.group(1)), int(m.group(2) or m.group(1))


def test_cited_sections_exist():
    if not DOC.is_file():
        pytest.skip("docs/ is not part of this installation")
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", DOC.read_text(encoding="utf-8"), flags=re.M)}
    found = list(citations())
    assert len(found) >= 10
    for path, first, last in found:
        assert set(range(first, last + 1)) <= sections, (path, first, last)


def test_no_citation_of_documents_outside_the_repository():
    for path in SOURCES:
        if path == pathlib.Path(__file__).resolve():
            continue
        assert not re.search(r"DESIGN\s*\d", path.read_text(encoding="utf-8")), path
