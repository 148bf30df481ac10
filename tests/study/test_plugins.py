"""study/plugins.py: a grid's imports, once each, with messages that say what to give."""
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
