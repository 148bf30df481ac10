"""The teaching notebook's interactive plan explorer and its sentences."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from studylib.views.teaching import PlanExplorer, plan_figure  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return PlanExplorer("tinycnn", 8, strategies=("ft", "lp_ft", "gu_last_first"))


def _head_only_epochs(plan) -> int:
    trained = plan.pivot(index="epoch", columns="block", values="trainable")
    return int((trained["head"] & ~trained.drop(columns="head").any(axis=1)).sum())


def test_moving_a_slider_redraws_the_plan_with_the_new_setting(explorer):
    explorer.sliders["lp_epochs"].value = 2
    before, plan = explorer.figure, explorer.plans()["lp_ft"]
    assert _head_only_epochs(plan) == 2
    explorer.sliders["lp_epochs"].value = 5
    assert explorer.figure is not before  # redrawn
    assert _head_only_epochs(explorer.plans()["lp_ft"]) == 5
    factor = explorer.plans()["lp_ft"]
    explorer.sliders["lpft_lr_factor"].value = 0.01
    slow = explorer.plans()["lp_ft"]
    assert slow[slow.stage == "ft"].lr.max() == pytest.approx(factor[factor.stage == "ft"].lr.max() / 10)


def test_gradual_unfreezing_follows_its_stage_length_or_says_why_it_cannot(explorer):
    explorer.sliders["gu_epochs_per_stage"].value = 1
    plan = explorer.plans()["gu_last_first"]
    first_epoch = plan[plan.epoch == 0].set_index("block").trainable
    assert first_epoch["head"] and not first_epoch.drop("head").any()
    explorer.sliders["gu_epochs_per_stage"].value = 3  # 5 blocks x 3 epochs cannot fit 8 epochs
    reason = explorer.plans()["gu_last_first"]
    assert isinstance(reason, str) and "needs at least 13 epochs" in reason
    texts = [t.get_text() for axis in explorer.figure.axes for t in axis.texts]
    assert any("needs at least 13 epochs" in t.replace("\n", " ") for t in texts)
    explorer.epochs.value = 13
    assert not isinstance(explorer.plans()["gu_last_first"], str)
    explorer.epochs.value, explorer.sliders["gu_epochs_per_stage"].value = 8, 1


def test_panels_carry_strategy_names_and_the_illustration_is_labelled(explorer):
    explorer.picker.value = ("ft", "lp", "l2_sp", "auto_rgn")
    titles = [axis.get_title() for axis in explorer.figure.axes]
    assert titles[0] == "FT" and titles[1] == "LP"
    assert titles[2].startswith("L2-SP") and "w0" in titles[2]
    assert titles[3].startswith("Auto-RGN") and "illustration" in titles[3]
    explorer.picker.value = ()
    assert explorer.figure is None


def test_the_sp_alpha_sliders_redraw_the_pull_of_each_penalty(explorer):
    explorer.picker.value = ("ft", "l2_sp")
    assert explorer.pull_figure is not None and len(explorer.pull_figure.axes[0].lines) == 1  # L2-SP only
    explorer.sliders["l2sp_alpha"].value = 0.1
    line = explorer.pull_figure.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), 0.1 * line.get_xdata())  # the L2-SP gradient: alpha * (w - w0)
    assert "α = 0.1" in explorer.figure.axes[1].get_title()
    explorer.picker.value = ("l1_sp", "l2_sp")
    explorer.sliders["l1sp_alpha"].value = 1e-3
    flat, spring = explorer.pull_figure.axes[0].lines[:2]
    assert set(flat.get_ydata()) == {1e-3}  # L1-SP pulls with alpha whatever the distance
    crossing = [t.get_text() for t in explorer.pull_figure.axes[0].texts]
    assert crossing == ["equal pull at |w − w0| = 0.01"]
    explorer.picker.value = ("ft",)
    assert explorer.pull_figure is None


def test_maps_of_one_rate_share_one_colour():
    figure = plan_figure(["ft", "l2_sp"], "tinycnn", 4)
    images = [axis.images[0] for axis in figure.axes if axis.images]
    colours = [image.to_rgba(image.get_array()) for image in images]
    np.testing.assert_array_equal(colours[0], colours[1])  # the same rate everywhere: the same colour
    low, high = images[0].get_clim()
    assert low < np.log10(1e-3) < high


def test_the_static_plan_figure_is_a_grid_of_readable_panels():
    strategies = ["ft", "lp", "gu_last_first", "gu_first_last", "l1_sp", "l2_sp", "lp_ft", "auto_rgn"]
    figure = plan_figure(strategies, "tinycnn", 6)
    panels = [axis for axis in figure.axes if axis.get_title()]
    assert len(panels) == 8
    assert len({round(axis.get_position().y0, 2) for axis in panels}) == 2  # two rows of four, not one row of eight
    assert panels[0].get_yticklabels()[0].get_text() == "stem"
    assert not any(t.get_text() for t in panels[1].get_yticklabels())  # block names once per row


def _cell_colours(figure, title: str) -> np.ndarray:
    axis = next(a for a in figure.axes if a.get_title().split("\n")[0] == title)
    image = axis.images[0]
    return image.to_rgba(image.get_array())


@pytest.mark.parametrize("factors", [(0.1, 0.01), (0.01, 0.001), (0.1, 1.0)])
def test_lp_fts_rate_factor_moves_its_second_stage_colour_and_never_fts(factors):
    """One fixed colour scale: LP-FT's fine-tuning stage darkens as its factor shrinks, FT's map stays as it was
    (the colour scale used to follow each selection, so FT turned teal at factor 1)."""
    first, second = (plan_figure(["ft", "lp_ft"], "tinycnn", 6, settings={"lpft_lr_factor": f}) for f in factors)
    np.testing.assert_array_equal(_cell_colours(first, "FT"), _cell_colours(second, "FT"))
    before, after = _cell_colours(first, "LP-FT")[:, -1], _cell_colours(second, "LP-FT")[:, -1]  # the last epoch
    assert not np.allclose(before, after)
    assert first.axes[0].images[0].get_clim() == second.axes[0].images[0].get_clim()  # the widget's and the copy's


def test_the_auto_rgn_sentence_is_read_from_the_run_it_describes(tmp_path):
    import json

    import pandas as pd

    from studylib.views.teaching import rgn_sentence

    rates = {"head": [1e-3, 8e-4, 5e-4, 2e-4], "stem": [1e-4, 2e-4, 4.5e-4, 3e-4], "stage1": [5e-5] * 4}
    rows = [{"epoch": e, "block": b, "lr": r[e]} for b, r in rates.items() for e in range(4)]
    pd.DataFrame(rows).to_csv(tmp_path / "layers.csv", index=False)
    (tmp_path / "config.json").write_text(json.dumps({"strategy": "auto_rgn", "seed": 42}))
    text = rgn_sentence(tmp_path)
    assert "(seed 42)" in text and "at epoch 0 was 10.0 times the fastest backbone block's (stem)" in text
    assert "In epochs 2, 3, stem came within 20% of the head's rate or passed it" in text  # 5/4.5 = 1.11, 2/3
    assert "orders of magnitude" not in text


def test_the_teaching_notebook_names_no_seed_or_epoch_its_figures_do_not_show():
    import json
    import re
    from pathlib import Path

    from studylib.views.teaching import strategy_plan

    cells = json.loads((Path(__file__).parents[2] / "notebooks" / "teaching.ipynb").read_text())["cells"]
    words = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert not re.search(r"seed \d", words)  # the seeds are in the figures' titles, read from the runs
    assert "orders of magnitude" not in words and "exactly to their pretrained value" not in words
    plan = strategy_plan("lp_ft", "tinycnn", 8, lp_epochs=5)  # exercise 3.1: LP epochs 5 of 8
    stem = plan[(plan.block == "stem") & plan.trainable].epoch.tolist()
    assert "Three epochs: " + ", ".join(map(str, stem[:-1])) + f" and {stem[-1]} on the plan's axis" in words
