"""Every document a user is pointed to is in the repository: relative links and cited files resolve."""
from __future__ import annotations

import re

import pytest
from conftest import ROOT

DOCUMENTS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")])
CITED = re.compile(r"`((?:docs|studylib|benchmarks|params|notebooks|tests)/[\w./-]+\.(?:md|py|yaml|ipynb|sh))`")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_cited_files_exist(document):
    text = document.read_text()
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:|#", t)]
    missing = [t for t in links if t and not (document.parent / t).exists()]
    missing += [t for t in CITED.findall(text) if not (ROOT / t).exists()]
    assert not missing, f"{document.name} points to files the repository does not have: {missing}"


def test_nothing_points_users_outside_the_repository():
    sources = [*DOCUMENTS, *ROOT.glob("studylib/**/*.py"), *ROOT.glob("studylib/**/*.yaml"),
               *ROOT.glob("studylib/**/*.ipynb")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if re.search(r"DESIGN\.md|\.\./shared/(?!data)", p.read_text())]
    assert not offenders
