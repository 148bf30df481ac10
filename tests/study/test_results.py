"""results.run_config: a run folder's config.json read back as the RunConfig it ran, once."""
from studylib.core.config import RunConfig
from studylib.models.backbones import block_names
from studylib.study.results import run_config


def test_an_old_folder_gets_what_that_studylib_did_and_autos_resolved_by_the_strategy():
    recorded = {"dataset": "synthetic", "backbone": "tinycnn", "strategy": "surgical", "seed": 3, "lr": 1e-3,
                "bn_policy": "auto", "image_size": 28, "resize_size": 0}  # written before dropout was a field
    config, problem = run_config(recorded)
    assert problem == ""
    assert config["dropout"] == "train"  # before the field, dropout always trained
    assert config["surgical_block"] == block_names("tinycnn")[0]  # what the empty block means
    assert config["bn_policy"] == "train"
    assert config["resize_size"] == RunConfig(image_size=28).prepared_size  # the side the run used
    assert config["max_epochs"] == RunConfig().max_epochs and isinstance(config["lr"], float)
    old_rgn, _ = run_config({**recorded, "strategy": "auto_rgn"})
    assert old_rgn["dropout"] == "train" != run_config({**recorded, "strategy": "auto_rgn", "dropout": "auto"})[0][
        "dropout"]  # Auto-RGN now resolves its own; the old folder trained dropout


def test_a_plugins_knob_is_kept_and_a_bad_value_is_named():
    config, problem = run_config({"strategy": "someones_plugin", "their_knob": 2, "seed": 1})
    assert problem == "" and config["their_knob"] == 2 and config["strategy"] == "someones_plugin"
    config, problem = run_config({"strategy": "ft", "lr": "fast"})
    assert "lr must be float" in problem and "--overwrite" in problem and config["lr"] == "fast"
