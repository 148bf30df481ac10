"""WiSE-FT and model soups from finished runs: the interpolation's ends are the linear probe and the fine-tuned
run, a greedy soup never keeps a member that lowers validation, and the results are arms of the analysis."""
import json

import pytest
import torch
from conftest import tiny_config, write_image_folder

from studylib.core import runfiles
from studylib.study import analysis
from studylib.study.derived import DerivedError, blend, soup, wise
from studylib.training.runner import run

SETTINGS = dict(save_checkpoint=True, select_metric="loss", synthetic_size=200, max_epochs=3)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """FT at two rates and LP, two seeds each, weights kept (the folder a grid with save_checkpoint leaves)."""
    root = tmp_path_factory.mktemp("derived")
    for seed in (1, 2):
        for strategy, lr in (("ft", 0.01), ("ft", 0.003), ("lp", 0.01)):
            run(tiny_config(strategy=strategy, lr=lr, seed=seed, **SETTINGS), root / "runs" / f"{strategy}-{lr}-{seed}")
    return root


def metrics(folder):
    return json.loads((folder / runfiles.METRICS).read_text())


def test_blend_ends_are_its_inputs_and_integer_buffers_come_from_the_last():
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.ones(3), "n": torch.tensor(7)}
    assert torch.equal(blend([a, b], [1.0, 0.0])["w"], a["w"]) and torch.equal(blend([a, b], [0.0, 1.0])["w"], b["w"])
    assert blend([a, b], [0.5, 0.5])["w"].tolist() == [0.5] * 3 and blend([a, b], [0.5, 0.5])["n"].item() == 7


def test_wise_runs_from_the_linear_probe_at_alpha_0_to_the_fine_tuned_run_at_1(grid):
    written = wise(grid)
    assert len(written) == 4  # one per fine-tuned run
    for folder in written:
        record = json.loads((folder / "derived.json").read_text())
        tuned, probe = (metrics(p) for p in map(type(folder), record["derived_from"]))
        assert record["val_by_alpha"]["0.0"] == pytest.approx(-probe["val"]["loss"], rel=1e-4)
        assert record["val_by_alpha"]["1.0"] == pytest.approx(-tuned["val"]["loss"], rel=1e-4)
        assert record["val_by_alpha"][str(record["alpha"])] == max(record["val_by_alpha"].values())
        assert record["selected_on"] == "validation"


def test_a_greedy_soup_never_keeps_a_member_that_lowers_validation(grid):
    written = soup(grid, strategy="ft")
    kinds = {json.loads((f / "derived.json").read_text())["kind"]: f for f in written}
    assert len(written) == 4 and set(kinds) == {"uniform_soup", "greedy_soup"}  # per seed
    for folder in written:
        record = json.loads((folder / "derived.json").read_text())
        members = [metrics(type(folder)(p)) for p in record["derived_from"]]
        if record["kind"] == "greedy_soup":
            assert record["val_score"] >= max(-m["val"]["loss"] for m in members) - 1e-9
            assert set(record["members"]) <= set(record["derived_from"]) and record["members"][0] == min(
                record["derived_from"], key=lambda p: metrics(type(folder)(p))["val"]["loss"])


def test_derived_runs_are_arms_of_the_analysis_paired_with_ft(grid):
    wise(grid)
    study = analysis.Study(grid, n_boot=100)
    arms = set(study.gains.arm)
    assert {"wise_ft", "soup_greedy_ft", "soup_uniform_ft", "lp"} <= arms
    assert (study.gains.set_index("arm").loc["wise_ft", "seeds"] == 2).all()


def test_what_cannot_be_combined_is_refused_with_the_reason(tmp_path):
    run(tiny_config(strategy="ft", **SETTINGS), tmp_path / "runs" / "ft")
    with pytest.raises(DerivedError, match="needs strategy lp"):
        wise(tmp_path)
    with pytest.raises(DerivedError, match="two or more runs of one strategy, seed"):
        soup(tmp_path)
    run(tiny_config(strategy="lp", save_checkpoint=False), tmp_path / "other" / "lp")
    with pytest.raises(DerivedError, match="save_checkpoint: true"):
        wise(tmp_path / "other")


def test_wise_scores_with_the_runs_own_loss_when_it_is_class_weighted(tmp_path):
    data = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=24, splits=())
    for extra in sorted((data / "b").glob("*.png"))[8:]:
        extra.unlink()  # 24 a, 8 b: class weights 0.67 and 2
    settings = dict(SETTINGS, dataset="folder", data_root=str(data), class_weighted_loss=True, val_fraction=0.3)
    for strategy in ("ft", "lp"):
        run(tiny_config(strategy=strategy, **settings), tmp_path / "grid" / "runs" / strategy)
    [folder] = wise(tmp_path / "grid")
    record = json.loads((folder / "derived.json").read_text())
    tuned, probe = (metrics(tmp_path / "grid" / "runs" / name) for name in ("ft", "lp"))
    assert record["val_by_alpha"]["0.0"] == pytest.approx(-probe["val"]["loss"], rel=1e-4)
    assert record["val_by_alpha"]["1.0"] == pytest.approx(-tuned["val"]["loss"], rel=1e-4)
