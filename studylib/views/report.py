"""A self-contained report of a grid: headline tables and figures as Markdown and HTML (PNGs inlined)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..core.fileio import atomic_write
from ..study import analysis
from ..study.analysis import Study
from ..study.results import failures
from . import studyfigures


def study_figures(study: Study) -> dict[str, Path]:
    """Write the headline figures of `study` into ROOT/figures; returns title -> PNG path."""
    out = study.root / "figures"
    made: dict[str, Path] = {}

    def keep(title: str, name: str, draw) -> None:
        made[title] = out / f"{name}.png"
        plt.close(draw(made[title]))

    if study.best.empty:
        return made
    keep("Gain over FT per dataset x backbone", "gain_heatmap", lambda p: studyfigures.gain_heatmap(study.gains, p))
    keep("Test accuracy per strategy (mean +- sd over seeds)", "accuracy",
         lambda p: studyfigures.accuracy_bars(study.accuracy, p))
    rgn = study.example_run("auto_rgn")
    if rgn is not None:
        keep("Auto-RGN: per-block learning rate over epochs", "auto_rgn_block_lr",
             lambda p: studyfigures.run_layers(rgn, "lr", p))
    timeline = {s: study.example_run(s) for s in ("gu_last_first", "gu_first_last", "lp_ft")}
    timeline = {s: r for s, r in timeline.items() if r is not None}
    if timeline:
        keep("Trainable blocks per epoch", "unfreezing_timeline",
             lambda p: studyfigures.unfreezing_timeline(timeline, p))
    keep("Cost against accuracy", "cost_vs_accuracy", lambda p: studyfigures.cost_vs_accuracy(study.best, p))
    return made


def write_report(root: str | Path, metric: str = "balanced_accuracy", n_boot: int = 1000,
                 runs: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """ROOT/report.md (figures linked) and ROOT/report.html (self-contained); `runs`: collect(root) if known."""
    study = Study(Path(root), metric, n_boot, runs)
    sections = _sections(study)
    figures = study_figures(study)
    markdown = _markdown(study, sections, figures)
    page = _html(study, sections, figures)
    atomic_write(study.root / "report.md", markdown)
    atomic_write(study.root / "report.html", page)
    return study.root / "report.md", study.root / "report.html"


def _sections(study: Study) -> dict[str, pd.DataFrame | str]:
    sections: dict[str, pd.DataFrame | str] = {}
    if study.best.empty:
        return {"Nothing to compare yet": "no finished runs in this folder"}
    sections["Test accuracy (mean, sd over seeds; each strategy at its best validation setting)"] = \
        study.accuracy.round(4)
    gains = study.gains
    if not gains.empty:
        sections["Gain over FT with 95% paired-bootstrap interval"] = gains.round(4)
        wtl = analysis.win_tie_loss(gains)
        sections["Win / tie / loss against FT"] = "\n".join(f"- {s}" for s in wtl.sentence)
    sections["Mean rank over dataset x backbone cases (1 = best)"] = analysis.mean_ranks(study.accuracy).round(2).to_frame()
    failed = failures(study.runs)
    if len(failed):
        sections["Runs that did not finish"] = failed
    return sections


def _markdown(study: Study, sections: dict, figures: dict[str, Path]) -> str:
    lines = [f"# studylib report: {study.root.name}", "", _headline(study), ""]
    lines += [f"> {note}" for note in study.notes]
    for title, body in sections.items():
        text = f"```text\n{body.to_string()}\n```" if isinstance(body, pd.DataFrame) else body
        lines += [f"## {title}", "", text, ""]
    for title, path in figures.items():
        lines += [f"## {title}", "", f"![{title}]({path.relative_to(study.root)})", ""]
    return "\n".join(lines)


def _headline(study: Study) -> str:
    if study.done.empty:
        return "No finished runs."
    return (f"{len(study.done)} finished runs; {study.done.dataset.nunique()} datasets, "
            f"{study.done.backbone.nunique()} backbones, {study.done.strategy.nunique()} strategies, "
            f"{study.done.seed.nunique()} seeds; selection on validation {study.metric}, test scored once per run.")


def _html(study: Study, sections: dict, figures: dict[str, Path]) -> str:
    parts = [f"<h1>studylib report: {html.escape(study.root.name)}</h1>", f"<p>{html.escape(_headline(study))}</p>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in study.notes]
    for title, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    for title, body in sections.items():
        content = body.to_html(classes="table", na_rep="missing") if isinstance(body, pd.DataFrame) else \
            "<pre>" + html.escape(body) + "</pre>"
        parts.append(f"<h2>{html.escape(title)}</h2>{content}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             ".note{background:#fff3cd;padding:6px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>studylib report</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"
