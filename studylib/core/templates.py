"""The notebooks and params files that ship inside the package (the repository's top-level
`notebooks/*.ipynb` and `params/` are links to these: one copy of each).

Found with importlib.resources, so `studylib grid`, `studylib demo` and `studylib init` work from a
wheel installed anywhere, not only from a checkout.
"""
from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

KINDS = {"notebooks": "*.ipynb", "params": "*.yaml"}


def template_dir(kind: str) -> Path:
    """studylib/templates/<kind> (notebooks or params) of the installed package."""
    return Path(str(files("studylib").joinpath("templates", kind)))


def template(kind: str, name: str) -> Path:
    """One shipped file, e.g. template('params', 'smoke.yaml')."""
    path = template_dir(kind) / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in template_dir(kind).glob(KINDS[kind])))
        raise FileNotFoundError(f"studylib ships no {kind} file {name!r}; it ships {shipped}")
    return path


def shipped_grid(name: str) -> Path | None:
    """The shipped grid a bare name stands for ('smoke' or 'smoke.yaml'), or None."""
    path = template_dir("params") / (name if name.endswith(".yaml") else f"{name}.yaml")
    return path if "/" not in name and path.is_file() else None


def shipped_grids() -> list[str]:
    """The names of the shipped grids (smoke, demo, paper, ...), for help texts and messages."""
    return sorted(p.stem for p in template_dir("params").glob(KINDS["params"]))


def copy_templates(dest: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy every shipped notebook and params file into DEST/notebooks and DEST/params, for a
    JupyterLab user to open and edit; never overwrites. Returns (copied, kept as they were)."""
    copied, kept = [], []
    for kind, pattern in KINDS.items():
        target = Path(dest) / kind
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(template_dir(kind).glob(pattern)):
            path = target / source.name
            if path.exists():
                kept.append(path)
                continue
            shutil.copyfile(source, path)
            copied.append(path)
    return copied, kept
