"""Bring your own, without Ray: spaces from files and modules, plugins, options in a TOML file, --enqueue."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from search_spaces import get_space, space_id, space_label
from studies import cli
from studies.run import _parser, check_space, read_enqueue
from trainers.errors import UserError
from trainers.plugins import import_user_module, load_payload, load_plugins, plugin_payload

ROOT = Path(__file__).resolve().parents[2]

TYPO_SPACE = """
def space(trial, limits):
    return {"model": "resnet", "depth": 10,
            "width": trial.suggest_categorical("width", [16, 32]),
            "weightdecay": trial.suggest_float("wd", 1e-3, 1e-1, log=True)}
"""

GOOD_SPACE = """
def space(trial, limits):
    return {"model": "resnet", "depth": 10,
            "width": trial.suggest_categorical("width", [16, 32]),
            "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True)}

def wide(trial, limits):
    return {"model": "resnet", "depth": 10, "width": 64}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- spaces from anywhere


def test_a_typo_in_a_space_file_fails_before_anything_is_stored(tmp_path):
    space = write(tmp_path / "elsewhere" / "my_space.py", TYPO_SPACE)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "studies" / "run.py"), "--space", str(space),
                           "--preset", "smoke", "--results", str(results), "--data", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'weightdecay' (did you mean 'weight_decay'?)" in lines[0]
    assert lines[0].startswith(f"error: --space {space}: unknown config key")
    assert not results.exists()  # no storage, no study, no folder


def test_spaces_load_from_a_file_a_function_in_it_and_a_module(tmp_path, monkeypatch):
    path = write(tmp_path / "my_space.py", GOOD_SPACE)
    write(tmp_path / "pkg_spaces" / "__init__.py", "")
    write(tmp_path / "pkg_spaces" / "cifar.py", GOOD_SPACE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_space(str(path)).__name__ == "space"
    assert get_space(f"{path}:wide")(None, None)["width"] == 64
    assert get_space("pkg_spaces.cifar:wide")(None, None)["width"] == 64
    assert get_space(str(path)) is get_space(str(path))  # imported once per process
    assert space_label(str(path)) == "my_space" and space_label(f"{path}:wide") == "my_space.wide"
    assert space_label("pkg_spaces.cifar:wide") == "pkg_spaces.cifar.wide"
    monkeypatch.chdir(tmp_path)
    assert space_id("my_space.py") == str(path) and space_id("my_space.py:wide") == f"{path}:wide"
    assert space_id("resnet_cifar") == "resnet_cifar"


@pytest.mark.parametrize(("spec", "message"), [
    ("nowhere/missing.py", "--space 'nowhere/missing.py': no such file"),
    ("resnet_cifr", "unknown search space 'resnet_cifr'; known spaces: cifar_zoo, resnet_cifar"),
    ("no_such_pkg.mod:space", "no module 'no_such_pkg' on the Python path"),
    ("MY:wider", "defines no function 'wider'; it defines: space, wide"),
    ("RAISES", "importing 'RAISES' raised ZeroDivisionError: division by zero"),
])
def test_a_space_that_cannot_load_is_one_line(tmp_path, spec, message):
    mine = write(tmp_path / "mine.py", GOOD_SPACE)
    raises = write(tmp_path / "raises.py", "x = 1 / 0\n")
    spec = spec.replace("MY", str(mine)).replace("RAISES", str(raises))
    message = message.replace("RAISES", str(raises))
    with pytest.raises(UserError) as err:
        get_space(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_space_names_what_is_wrong_with_a_space(tmp_path):
    from search_spaces import SpaceLimits

    fixed = {"epochs": 2, "data_fraction": 0.1}
    check_space(get_space(str(write(tmp_path / "ok.py", GOOD_SPACE))), "ok.py", fixed, SpaceLimits())
    cases = {
        "def space(trial, limits):\n    return [1]\n": "a space must return a dict of config keys, got list",
        "def space(trial, limits):\n    raise KeyError('lr')\n": "sampling the space raised KeyError: 'lr'",
        "def space(trial, limits):\n    return {'model': 'resnet', 'lr': 50.0}\n": "config key 'lr' must be in (0, 10], got 50.0",
    }
    for i, (text, message) in enumerate(cases.items()):
        space = get_space(str(write(tmp_path / f"bad{i}.py", text)))
        with pytest.raises(UserError, match=None) as err:
            check_space(space, f"bad{i}.py", fixed, SpaceLimits())
        assert str(err.value) == f"--space bad{i}.py: {message}"


# ---------------------------------------------------------------- --enqueue


def test_enqueued_configs_are_checked_against_the_space(tmp_path):
    from search_spaces import SpaceLimits

    space = get_space(str(write(tmp_path / "s.py", GOOD_SPACE)))
    fixed, limits = {"epochs": 2}, SpaceLimits()
    check_space(space, "s.py", fixed, limits, [{"width": 32, "lr": 0.005}], "e.json")
    with pytest.raises(UserError) as err:
        check_space(space, "s.py", fixed, limits, [{"width": 32, "lr": 0.005}, {"widht": 16}], "e.json")
    assert str(err.value) == ("--enqueue 'e.json' entry 1: 'widht' is not a parameter this space "
                              "suggests (did you mean 'width'?); its parameters here: width, lr")
    with pytest.raises(UserError) as err:
        check_space(space, "s.py", fixed, limits, [{"lr": 0.5}], "e.json")
    assert str(err.value) == "--enqueue 'e.json' entry 0: lr=0.5 is outside the space's range [0.001, 0.01]"
    with pytest.raises(UserError) as err:
        check_space(space, "s.py", fixed, limits, [{"width": 24}], "e.json")
    assert str(err.value) == "--enqueue 'e.json' entry 0: width=24 is outside the space's choices [16, 32]"


def test_an_enqueued_name_a_space_prefixes_is_pointed_to_the_prefixed_one():
    """cifar_zoo names depth per family (``resnet_depth``); plain ``depth`` is too far from it
    for difflib's spelling match, so the message looks for the name as a suffix."""
    from studies.presets import PRESETS

    quick = PRESETS["quick"]
    space = get_space("cifar_zoo")
    check_space(space, "cifar_zoo", quick.fixed, quick.limits, [{"model": "resnet", "resnet_depth": 18}], "e.json")
    with pytest.raises(UserError) as err:
        check_space(space, "cifar_zoo", quick.fixed, quick.limits, [{"model": "resnet", "depth": 18}], "e.json")
    assert str(err.value).startswith(
        "--enqueue 'e.json' entry 0: 'depth' is not a parameter this space suggests (did you mean 'resnet_depth'?)")


@pytest.mark.parametrize(("text", "message"), [
    ("[{\"lr\": 0.1}", "is not JSON"),
    ("[1, 2]", "must hold a list of objects"),
    ("[{\"lr\": [0.1]}]", "entry 0: 'lr' must be a number, string or boolean"),
])
def test_a_malformed_enqueue_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "e.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_enqueue(path)
    assert read_enqueue(write(tmp_path / "one.json", json.dumps({"lr": 0.1}))) == [{"lr": 0.1}]


# ---------------------------------------------------------------- plugins


PLUGIN = """
from torch import nn
from trainers.models import register_model

@register_model("byo_{tag}", depths=(1,), default_depth=1, default_width=4, widths_hint=(4,),
                has_drop_path=False, description="a plugin's model")
def build(num_classes, depth, width):
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
"""


def test_a_plugin_file_registers_its_model_once_per_process(tmp_path):
    from trainers.models import create_model, list_models

    path = write(tmp_path / "plug.py", PLUGIN.format(tag="once"))
    load_plugins([str(path)])
    load_plugins([str(path), str(tmp_path / "." / "plug.py")])  # again, and by another spelling
    assert "byo_once" in list_models()
    assert create_model("byo_once", 3)(__import__("torch").zeros(2, 3, 32, 32)).shape == (2, 3)


def test_a_worker_without_the_file_imports_the_shipped_text(tmp_path):
    from trainers.models import list_models

    path = write(tmp_path / "shipped.py", PLUGIN.format(tag="shipped"))
    payload = plugin_payload([str(path)])
    path.unlink()  # another machine: the path does not exist there
    load_payload(payload)
    assert "byo_shipped" in list_models()


def test_plugin_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"--plugin 'nope\.py': no such file"):
        load_plugins(["nope.py"])
    with pytest.raises(UserError, match="no module 'not_a_module_here' on the Python path"):
        import_user_module("not_a_module_here.models")
    with pytest.raises(UserError, match="neither a .py file nor a module name"):
        import_user_module("bad name!")
    bad = write(tmp_path / "broken.py", "import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(UserError, match="importing .*broken.py' raised RuntimeError: no GPU here"):
        load_plugins([str(bad)])


# ---------------------------------------------------------------- options in a file


def test_options_come_from_a_toml_file_and_flags_override_it(tmp_path):
    options = write(tmp_path / "o.toml", """
        space = "my_space.py"
        preset = "smoke"
        trials = 6
        data-fraction = 0.5
        no_baselines = true
        plugin = ["a.py", "b.py"]
        results = "out"
        time-budget = 2.5
    """)
    args = cli.parse(_parser(), ["--options", str(options), "--trials", "3", "--plugin", "c.py"])
    assert (args.space, args.preset, args.trials, args.data_fraction, args.no_baselines) == (
        "my_space.py", "smoke", 3, 0.5, True)
    assert args.plugin == ["a.py", "b.py", "c.py"] and args.results == Path("out") and args.time_budget == 2.5
    fresh = cli.parse(_parser(), [])  # the file's values do not leak into the next parse
    assert (fresh.trials, fresh.plugin, fresh.space) == (None, [], "resnet_cifar")


@pytest.mark.parametrize(("text", "message"), [
    ("trails = 4", "unknown option 'trails' (did you mean 'trials'?)"),
    ("trials = 0", "trials: must be at least 1, got 0"),
    ("trials = \"many\"", "trials: expected a whole number, got 'many'"),
    ("sampler = \"gridd\"", "sampler must be one of"),
    ("no-baselines = \"yes\"", "no-baselines must be true or false"),
    ("plugin = 3", "plugin must be a list of strings"),
    ("trials = [", "is not valid TOML"),
])
def test_a_bad_options_file_is_one_line_naming_it(tmp_path, text, message):
    path = write(tmp_path / "o.toml", text)
    proc = subprocess.run([sys.executable, str(ROOT / "studies" / "run.py"), "--options", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: --options '{path}'") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_start_and_no_start_together_are_refused_before_anything_is_stored(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "studies" / "run.py"), "--start", "--no-start",
                           "--results", str(tmp_path / "r")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --start and --no-start contradict each other; pass one"
    assert not (tmp_path / "r").exists()


def test_the_python_api_checks_options_as_the_flags_do():
    from studies import final_run, run_study

    with pytest.raises(UserError, match=r"run_study: unknown option 'trails' \(did you mean 'trials'\?\)"):
        run_study(trails=3)
    with pytest.raises(UserError, match="final_run: seeds: must be at least 1, got 0"):
        final_run(seeds=0)


def test_resolved_options_round_trip_through_toml(tmp_path):
    values = {"space": "/abs/my space.py", "trials": 8, "data_fraction": 0.3, "no_baselines": True,
              "plugin": ["/x/p.py", "pkg.models"], "study": 'a"b', "storage": None, "epochs": None}
    path = tmp_path / "options.toml"
    path.write_text(cli.options_toml(values, "header\nline two"))
    args = cli.parse(_parser(), ["--options", str(path)])
    assert (args.space, args.trials, args.data_fraction, args.no_baselines, args.plugin, args.study) == (
        "/abs/my space.py", 8, 0.3, True, ["/x/p.py", "pkg.models"], 'a"b')
    assert args.epochs is None and args.storage is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tunebench-study", "tunebench-final", "tunebench-predict",
                                  "tunebench-export", "tunebench-benchmark", "tunebench-families"])
def test_console_scripts_run_the_entry_points(name, tmp_path):
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{name} is not installed: pip install -e . again after pyproject.toml changed"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ")


@pytest.mark.parametrize(("argv", "minutes"), [
    ([], "preset"),  # the quick preset's own budget: its time budget applies
    (["--time-budget", "3"], 3.0),  # the user's always wins
    (["--trials", "16"], None),  # a budget of the user's own runs to the end (benchmark.py's cells)
    (["--epochs", "4"], None),
    (["--data-fraction", "0.2"], None),
    (["--trials", "40", "--time-budget", "20"], 20.0),
])
def test_the_preset_time_budget_applies_to_the_preset_s_own_budget_only(argv, minutes):
    from studies.presets import PRESETS
    from studies.run import time_budget

    quick = PRESETS["quick"]
    assert quick.time_budget is not None and quick.time_budget < 15  # the quick study's promise
    args = cli.parse(_parser(), ["--preset", "quick", *argv])
    assert time_budget(args, quick) == (quick.time_budget if minutes == "preset" else minutes)
