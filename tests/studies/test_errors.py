"""Bad input: one line on stderr, exit status 2, and the stored study untouched."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    url = f"sqlite:///{tmp / 'optuna.db'}"
    study = optuna.create_study(study_name="resnet_cifar-smoke", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, params={},
                                              distributions={}, intermediate_values={1: 0.5}))
    corrupt = write_image_folder(tmp / "corrupt", ["a", "b", "c"], 3, 1)
    (corrupt / "test" / "c" / "0000.png").write_bytes(b"\x89PNG broken")
    good = write_image_folder(tmp / "good", ["a", "b", "c"], 3, 1)
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return tmp, url, corrupt, good, blocker


CASES = {
    "unknown space": (["--space", "nope"], "unknown search space 'nope'; known spaces: cifar_zoo, resnet_cifar"),
    "missing data": (["--data", "/no/such/dir"], "data path '/no/such/dir' does not exist"),
    "corrupt image": (["--data", "{corrupt}"], "test/c/0000.png"),
    "zero trials": (["--data", "{good}", "--trials", "0"], "--trials: must be at least 1"),
    "malformed trials": (["--trials", "many"], "--trials: expected a whole number"),
    "unknown preset": (["--preset", "huge"], "argument --preset: invalid choice"),
    "unwritable storage": (["--data", "{good}", "--storage", "sqlite:///{blocker}/optuna.db"],
                           "cannot create the storage folder"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_and_keeps_the_study(existing, case):
    tmp, url, corrupt, good, blocker = existing
    args, expected = CASES[case]
    args = [a.format(corrupt=corrupt, good=good, blocker=blocker) for a in args]
    if "--storage" not in args:
        args += ["--storage", url]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke",
         "--cache-dir", str(tmp / "cache"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=url)
    assert [(t.state, t.value) for t in study.trials] == [(optuna.trial.TrialState.COMPLETE, 0.5)]
