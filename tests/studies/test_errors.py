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
    "study name with ..": (["--data", "{good}", "--study", "../../x"],
                           "--study: study name '../../x' cannot name a folder"),
    "absolute study name": (["--data", "{good}", "--study", "/tmp/x"], "study name '/tmp/x' cannot name a folder"),
    "study name with a separator": (["--study", "a/b"], "study name 'a/b' cannot name a folder"),
    "infinite cpus": (["--cpus-per-trial", "inf"], "--cpus-per-trial: expected a finite number, got inf"),
    "more cpus than the machine": (["--data", "{good}", "--cpus-per-trial", "512"],
                                   "a trial asks for 512 CPUs and 0 GPUs, but this machine has"),
    "negative seed": (["--seed", "-1"], "--seed: must be in [0, 2**32), got -1"),
    "seed too large": (["--seed", str(2**32)], "--seed: must be in [0, 2**32), got 4294967296"),
    "cache dir is a file": (["--data", "{good}", "--cache-dir", "{blocker}"],
                            "is a file; pass --cache-dir a folder"),
    "results is a file": (["--data", "{good}", "--results", "{blocker}"], "--results '{blocker}' is a file"),
    "results not writable": (["--data", "{good}", "--results", "{blocker}/sub"], "is not writable"),
    "unknown model in --models": (["--space", "cifar_zoo", "--models", "vgg,resnett"],
                                  "--models: unknown model 'resnett' (did you mean 'resnet'?); known models:"),
    "--models for a space that ignores it": (["--data", "{good}", "--models", "vgg"],
                                             "--space resnet_cifar chose model 'resnet', not one of --models vgg"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_and_keeps_the_study(existing, case):
    tmp, url, corrupt, good, blocker = existing
    args, expected = CASES[case]
    args = [a.format(corrupt=corrupt, good=good, blocker=blocker) for a in args]
    expected = expected.format(blocker=blocker)
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if not {"cache", "results"} & set(p.parts))
    if "--storage" not in args:
        args += ["--storage", url]
    if "--results" not in args:
        args += ["--results", str(tmp / "results")]
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
    # Nothing written anywhere but the cache (the refused --study ../../x included).
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*") if not {"cache", "results"} & set(p.parts)) == before
    assert not [p for p in (tmp / "results").rglob("*")]  # at most the empty folder checked for writing
    assert not (tmp.parent.parent / "x").exists()
