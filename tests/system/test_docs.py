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
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if re.search(r"DESIGN\.md|\.\./shared/(?!data)", p.read_text())]
    assert not offenders


def test_the_code_map_names_every_module():
    text = (ROOT / "README.md").read_text()
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "studylib").rglob("*.py") if p.name != "__init__.py"]
    assert [m for m in modules if f"`{m}`" not in text] == []


def test_the_readme_grid_over_your_own_images_is_a_valid_grid(tmp_path):
    from studylib.study.grid import load_grid

    text = (ROOT / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text[text.index("## Your own data"):], re.S).group(1)
    (tmp_path / "mine.yaml").write_text(example)
    grid = load_grid(tmp_path / "mine.yaml")
    assert len(grid.runs) == 24 and {c.strategy for c in grid.runs} >= {"ft", "lp_ft", "auto_rgn"}
    assert {c.classes for c in grid.runs} == {"NORMAL,PNEUMONIA"} and grid.runs[0].group_pattern
