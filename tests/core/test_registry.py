"""core/registry.py and core/knobs.py on their own: names, suggestions, duplicates, and knobs that come and go."""
import pytest

from studylib.core import knobs
from studylib.core.knobs import AT_LEAST_1, Knob
from studylib.core.registry import Registry, UnknownNameError


def test_a_registry_refuses_duplicates_and_suggests_the_close_name():
    registry = Registry("colour")
    registry.add("crimson", 1)
    with pytest.raises(ValueError, match="colour 'crimson' is already registered"):
        registry.add("crimson", 2)
    with pytest.raises(UnknownNameError, match="unknown colour 'crimsn'. Did you mean 'crimson'"):
        registry.get("crimsn")
    assert str(UnknownNameError("plain")) == "plain"  # not KeyError's quoted repr


def test_removing_an_entry_calls_its_hook_once():
    removed = []
    registry = Registry("thing", on_remove=removed.append)
    registry.register("a")(object())
    registry.remove("a")
    assert removed == ["a"] and "a" not in registry
    with pytest.raises(UnknownNameError):
        registry.remove("a")


def test_a_knob_is_shared_by_identical_declaration_only_and_leaves_with_its_last_owner():
    knob = Knob("probe_count_x", 3, "probes", AT_LEAST_1)
    try:
        knobs.declare("one", (knob,), reserved={"lr"})
        knobs.declare("two", (knob,), reserved={"lr"})  # the same declaration: shared
        assert knobs.OWNERS["probe_count_x"] == ["one", "two"]
        assert knobs.help_line("probe_count_x") == "one, two: probes"
        with pytest.raises(ValueError, match="already declared differently by one, two"):
            knobs.declare("three", (Knob("probe_count_x", 4, "probes"),), reserved=set())
        with pytest.raises(ValueError, match="'lr' is a RunConfig field"):
            knobs.declare("four", (Knob("lr", 0.1, "a clash"),), reserved={"lr"})
        knobs.withdraw("one")
        assert "probe_count_x" in knobs.KNOBS
    finally:
        knobs.withdraw("two")
    assert "probe_count_x" not in knobs.KNOBS and "probe_count_x" not in knobs.OWNERS


def test_a_knob_names_what_is_wrong_with_a_value():
    knob = Knob("mode_x", "a", "mode", choices=("a", "b"))
    assert knob.problem("a") == "" and "choose one of a, b" in knob.problem("c")
    assert "set size_x to at least 1" in Knob("size_x", 2, "size", AT_LEAST_1).problem(0)
