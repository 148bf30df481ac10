import pytest

from studylib.core.config import (
    FIELDS,
    ConfigError,
    RunConfig,
    field_help,
    load_yaml,
    parse_assignment,
)


def test_unknown_key_names_the_key_and_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'stratgy'.*Did you mean 'strategy'"):
        RunConfig.from_dict({"stratgy": "ft"})


@pytest.mark.parametrize("key, value", [("lr", "fast"), ("max_epochs", 2.5), ("max_epochs", True), ("augment", 1)])
def test_wrong_types_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict({key: value})


def test_ints_and_yaml_strings_are_accepted_for_floats():
    assert RunConfig.from_dict({"lr": 1}).lr == 1.0
    assert RunConfig.from_dict({"lr": "1e-4"}).lr == 1e-4


@pytest.mark.parametrize("key, value", [("optimizer", "lion"), ("bn_policy", "off"), ("device", "tpu")])
def test_invalid_choices_list_the_valid_ones(key, value):
    with pytest.raises(ConfigError, match="valid|Valid"):
        RunConfig.from_dict({key: value})


@pytest.mark.parametrize("key, value", [("strategy", "nope"), ("backbone", "resnet"), ("dataset", "x")])
def test_unknown_names_are_refused_where_they_are_resolved_with_the_valid_ones(key, value):
    from studylib.training.runner import check_config
    cfg = RunConfig.from_dict({key: value})  # the config is data: names are the registries' business
    with pytest.raises(ConfigError, match="Valid"):
        check_config(cfg)


def test_every_field_and_knob_has_help_text():
    from studylib.core.knobs import KNOBS
    helps = field_help()
    assert set(helps) == set(FIELDS) | set(KNOBS)
    assert all(helps.values())
    assert helps["lp_epochs"].startswith("lp_ft: ")  # a knob's help names the strategies that read it


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: ft\nlr: [1e-3\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_yaml(bad)


def test_cli_assignment_reads_yaml_values():
    assert parse_assignment("lr=1e-4") == ("lr", 1e-4)
    assert parse_assignment("augment=true") == ("augment", True)
    assert parse_assignment("weights=none") == ("weights", "none")


def test_run_hash_ignores_presentation_fields_only():
    base = RunConfig()
    assert base.run_hash() == base.replace(quiet=True).run_hash()
    assert base.run_hash() != base.replace(lr=1e-4).run_hash()


def test_prepared_size_follows_232_over_224():
    assert RunConfig(image_size=224).prepared_size == 232
    assert RunConfig(image_size=32, resize_size=40).prepared_size == 40


def test_lp_ft_must_reach_its_second_stage():
    from studylib.training.runner import check_config
    with pytest.raises(ConfigError, match="never reaches its fine-tuning stage"):  # LP-FT's own rule
        check_config(RunConfig.from_dict({"strategy": "lp_ft", "lp_epochs": 5, "max_epochs": 5}))


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="lr must be float"):
        RunConfig(lr="fast")
    with pytest.raises(ConfigError, match="patience=0 is out of range"):
        RunConfig(patience=0)


def test_every_field_has_exactly_one_role_and_the_run_hash_follows_them():
    from studylib.core.config import ROLES
    from studylib.core.knobs import KNOBS
    assert set(ROLES) == set(FIELDS)
    assert set(ROLES.values()) == {"case", "method", "seed", "protocol", "tuned", "data", "engine", "runtime"}
    assert {k.role for k in KNOBS.values()} == {"tuned", "method"}
    base = RunConfig()
    for name, role in ROLES.items():
        if role == "runtime" and FIELDS[name].type == "bool":
            assert base.replace(**{name: not getattr(base, name)}).run_hash() == base.run_hash(), name


@pytest.mark.slow
def test_a_lock_held_elsewhere_times_out_with_a_message_that_says_what_to_do(tmp_path):
    import subprocess
    import sys

    from studylib.core.fileio import LockTimeout, file_lock, is_locked
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
                               f"with FileLock({str(lock)!r}):\n    print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(lock)
        with pytest.raises(LockTimeout, match=r"another studylib process holds .*x.lock.*gave up after 0.2 s"):
            with file_lock(lock, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not is_locked(lock)  # released by the OS when its holder died


def test_the_metric_names_are_the_ones_the_metrics_module_computes():
    import numpy as np

    from studylib.core.config import METRICS
    from studylib.training.metrics import classification_metrics
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    assert set(classification_metrics(np.array([0, 1, 1, 1]), probs)) | {"loss"} == set(METRICS)


def test_every_strategy_reads_real_config_fields_and_owns_declared_knobs():
    from studylib.core.knobs import KNOBS, OWNERS
    from studylib.training.strategies import STRATEGIES
    for name, cls in STRATEGIES.items():
        assert cls.reads and set(cls.reads) <= set(FIELDS), name
        for knob in cls.all_knobs():
            assert KNOBS[knob.name] is knob and name in OWNERS[knob.name], (name, knob.name)


def test_a_run_hashes_only_its_own_strategys_knobs():
    ft = RunConfig(strategy="ft")
    assert ft.replace(lp_epochs=2).run_hash() == ft.run_hash()  # FT never reads lp_epochs: the same run
    lp_ft = RunConfig(strategy="lp_ft")
    assert lp_ft.replace(lp_epochs=2).run_hash() != lp_ft.run_hash()
    assert lp_ft.replace(l2sp_alpha=0.5).run_hash() == lp_ft.run_hash()


def test_knobs_are_config_keys_with_types_ranges_and_choices():
    assert RunConfig(lp_epochs=3).lp_epochs == 3 and RunConfig().lp_epochs == 5
    assert RunConfig.from_dict({"l2sp_alpha": 1}).l2sp_alpha == 1.0  # an int for a float knob
    assert parse_assignment("dlr_decay=0.25") == ("dlr_decay", 0.25)
    assert "lp_epochs" in RunConfig().to_dict() and RunConfig(lp_epochs=3) != RunConfig()
    with pytest.raises(ConfigError, match="lp_epochs must be int"):
        RunConfig(lp_epochs="many")
    with pytest.raises(ConfigError, match=r"dlr_decay=0.0 is out of range; set dlr_decay to above 0"):
        RunConfig(dlr_decay=0.0)
    with pytest.raises(ConfigError, match="rgn_max_over='head' is not valid; choose one of all, backbone"):
        RunConfig(rgn_max_over="head")
    with pytest.raises(ConfigError, match="Did you mean 'lp_epochs'"):
        RunConfig.from_dict({"lp_epoch": 3})
