"""study/plugins.py: a grid's imports, once each, with messages that say what to give."""
from pathlib import Path

import pytest

from studylib.core.config import ConfigError
from studylib.study import plugins


def test_a_file_is_imported_once_however_often_it_is_named(tmp_path):
    module = tmp_path / "counter.py"
    module.write_text("import builtins\nbuiltins.counter_imports = getattr(builtins, 'counter_imports', 0) + 1\n")
    specs = plugins.resolve(["counter.py", "json"], tmp_path)
    assert specs == [str(module.resolve()), "json"]
    plugins.import_all(specs)
    plugins.import_all(specs)
    import builtins
    assert builtins.counter_imports == 1


def test_a_missing_file_or_module_says_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; give a .py file relative to the grid file"):
        plugins.import_all([str(tmp_path / "nowhere.py")])
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'.*module on the Python path"):
        plugins.import_all(["no_such_module_xyz"])


def test_a_file_that_fails_can_be_fixed_and_imported_again(tmp_path):
    module = tmp_path / "broken.py"
    module.write_text("raise RuntimeError('half written')\n")
    with pytest.raises(RuntimeError, match="half written"):
        plugins.import_all([str(module)])
    module.write_text("VALUE = 1\n")
    plugins.import_all([str(module)])  # not remembered as imported after the failure


@pytest.mark.slow
def test_a_report_imports_what_the_grid_imported_so_its_knobs_are_compared(tmp_path):
    """A grid records its imports in its folder; the analysis of that folder (studylib report, the notebooks)
    imports them, so a plugin strategy's knob sweep stays two settings in a fresh process."""
    import subprocess
    import sys

    (tmp_path / "mine.py").write_text(
        "from studylib.core.knobs import Knob\n"
        "from studylib.training.strategies import FullFineTuning, register_strategy\n\n"
        "@register_strategy\nclass Mine(FullFineTuning):\n    name, label = 'mine_x', 'MX'\n"
        "    knobs = (Knob('mine_alpha', 1.0, 'a setting'),)\n")
    out = tmp_path / "out"
    plugins.record(out.mkdir() or out, [str(tmp_path / "mine.py")])
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
              "import warnings; from crafted import LABELS, crafted_run, with_accuracy\n"
              "from studylib.study import analysis, plugins\n"
              f"plugins.import_recorded({str(out)!r})\n"
              f"for i, a in enumerate((1.0, 2.0)): crafted_run(__import__('pathlib').Path({str(out)!r}) / str(i), "
              "with_accuracy(LABELS, 0.7), LABELS, strategy='mine_x', mine_alpha=a)\n")
    subprocess.run([sys.executable, "-c", script], check=True)  # the runs, written by a process that had them
    report = (f"from studylib.study import analysis\ndone = analysis.load_results({str(out)!r})\n"
              "print(len(done), analysis.budgets(done).tuned.iloc[0])")
    shown = subprocess.run([sys.executable, "-c", report], check=True, capture_output=True, text=True).stdout
    assert shown.split() == ["2", "mine_alpha"]
