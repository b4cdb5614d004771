"""The study stays true off the beaten path: other objectives, a raising space, Ctrl-C, two drivers.

Real run.py processes, real Ray, real Optuna storages (SQLite, and PostgreSQL
where the fixture has a server), real images.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies import record
from studies.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
STUDY = "resnet_cifar-smoke"


def command(data: Path, results: Path, *extra: object) -> list[str]:
    return [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data", str(data),
            "--data-fraction", "1", "--results", str(results), "--cache-dir", str(results / "cache"),
            *map(str, extra)]


def run(data: Path, results: Path, *extra: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(data, results, *extra), capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def dump(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs,
             t.datetime_start, t.datetime_complete) for t in study.trials]


def counts(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


# ---------------------------------------------------------------- objectives


def test_a_loss_study_is_its_own_study_ranked_lowest_first(tiny_cifar, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    # The smoke preset's limits hold no ResNet-18: --start says it has nothing to start from.
    first = run(tiny_cifar, tmp_path, "--trials", 3, "--no-baselines", "--start")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "note: --start is ignored: resnet_cifar has no known-good start for 2 epochs" in first.stdout
    accuracy = dump(optuna.load_study(study_name=STUDY, storage=url))
    assert record.settings_of(optuna.load_study(study_name=STUDY, storage=url)).start is False

    loss = run(tiny_cifar, tmp_path, "--trials", 3, "--no-baselines", "--objectives", "val_loss")
    assert loss.returncode == 0, loss.stderr[-3000:]
    assert dump(optuna.load_study(study_name=STUDY, storage=url)) == accuracy  # untouched
    study = optuna.load_study(study_name=f"{STUDY}-val_loss", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["val_loss"]
    assert record.settings_of(study).objectives == ("val_loss",)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all(t.value == pytest.approx(t.user_attrs[record.VALUES]["val_loss"]) for t in complete)
    # The leaderboard ranks the lowest loss first, shown as a loss (not a percentage),
    # with each trial's accuracy beside it.
    board = loss.stdout[loss.stdout.index("rank  trial"):].splitlines()
    assert board[0].split()[:6] == ["rank", "trial", "state", "val", "loss", "val"]
    best = min(complete, key=lambda t: t.value)
    best_acc = best.user_attrs[record.VALUES]["val_acc"]
    assert board[1].split()[1:5] == [str(best.number), "COMPLETE", f"{best.value:.4g}", f"{100 * best_acc:.2f}%"]
    page = (tmp_path / f"{STUDY}-val_loss" / "leaderboard.html").read_text()
    assert f"Winner: trial #{best.number}" in page

    # Asking for the accuracy study's name with the loss objective is refused, and changes nothing.
    refused = run(tiny_cifar, tmp_path, "--trials", 4, "--no-baselines", "--objectives", "val_loss",
                  "--study", STUDY)
    assert refused.returncode == 2 and "objectives" in refused.stderr.strip().splitlines()[-1]
    assert dump(optuna.load_study(study_name=STUDY, storage=url)) == accuracy


# ---------------------------------------------------------------- the budget's known-good start


def test_a_short_study_runs_the_space_s_start_first_and_once(tiny_cifar, tmp_path):
    """By default the quick preset's ResNet study tries the recorded recipe as trial 0,
    marked as the space's start; continuing it does not run it again; with --no-start, none."""
    from search_spaces.resnet_cifar import SHORT_BUDGET_START

    url, name = f"sqlite:///{tmp_path / 'optuna.db'}", "resnet_cifar-quick"
    short = ("--preset", "quick", "--epochs", 2, "--no-baselines", "--scheduler", "fifo")
    first = run(tiny_cifar, tmp_path, *short, "--trials", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=url)
    assert record.settings_of(study).start is True
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params == {**SHORT_BUDGET_START, "warmup_epochs": 0.5}  # a quarter of 2 epochs
    assert study.trials[0].user_attrs[record.START] == "resnet_cifar"
    assert record.START not in study.trials[1].user_attrs and study.trials[1].params["lr"] != SHORT_BUDGET_START["lr"]
    before = dump(study)

    # Continuing with --no-start is another study's settings: refused, nothing changed.
    refused = run(tiny_cifar, tmp_path, *short, "--trials", 3, "--no-start")
    assert refused.returncode == 2 and "start" in refused.stderr.strip().splitlines()[-1]
    assert dump(optuna.load_study(study_name=name, storage=url)) == before
    # Continuing it adds a sampled trial, not a second start.
    more = run(tiny_cifar, tmp_path, *short, "--trials", 3, "--start")
    assert more.returncode == 0, more.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=url)
    assert dump(study)[:2] == before and len(study.trials) == 3
    assert [t.number for t in study.trials if record.START in t.user_attrs] == [0]

    plain = run(tiny_cifar, tmp_path, *short, "--trials", 1, "--study", "plain", "--no-start")
    assert plain.returncode == 0, plain.stderr[-3000:]
    study = optuna.load_study(study_name="plain", storage=url)
    assert record.settings_of(study).start is False
    assert study.trials[0].params["lr"] != SHORT_BUDGET_START["lr"] and record.START not in study.trials[0].user_attrs
    # The start drew nothing from the sampler: the same seed samples the same first configuration.
    started = optuna.load_study(study_name=name, storage=url)
    assert started.trials[1].params == study.trials[0].params


# ---------------------------------------------------------------- a space that raises


def test_a_space_that_raises_fails_those_trials_and_the_study_goes_on(tiny_cifar, tmp_path, monkeypatch,
                                                                    capsys):
    import search_spaces
    from studies import run as run_py

    real = search_spaces.get_space("resnet_cifar")

    def every_third_raises(trial, limits):
        if trial.number % 3 == 2:
            raise RuntimeError(f"space refuses trial {trial.number}")
        return real(trial, limits)

    monkeypatch.setattr(search_spaces, "get_space", lambda name: every_third_raises)
    status = run_py.main(command(tiny_cifar, tmp_path, "--trials", 6, "--no-baselines")[2:])
    import ray

    ray.shutdown()
    assert status == 0
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [n for n in range(len(study.trials)) if n % 3 == 2]
    assert all(record.fail_reason(t) == f"the search space raised RuntimeError: space refuses trial {t.number}"
               for t in failed)
    assert record.finished_count(study.trials) == 6 and "RUNNING" not in counts(study)
    assert counts(study).get("COMPLETE", 0) + counts(study).get("PRUNED", 0) == 4
    assert "failed: the search space raised RuntimeError" in capsys.readouterr().err


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_fails_the_open_trials_exits_130_and_the_same_command_continues(tiny_cifar, tmp_path):
    db = tmp_path / "optuna.db"
    # Trials long enough (30 epochs for the unpruned; about a second for 6 epochs of this data on
    # a quiet machine) that Ctrl-C lands inside the study, not after its last trial ended: CI saw
    # the whole 6-epoch study finish between the poll that found a running trial and the signal.
    # Started with SIGINT ignored, as a script's background job (or, in CI, a test runner whose
    # earlier tests left SIGINT ignored) starts it: the driver still stops on Ctrl-C.
    proc = subprocess.Popen(command(tiny_cifar, tmp_path, "--trials", 8, "--epochs", 30),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            # Through open_storage: the driver may be creating the schema this very moment.
            storage = open_storage(f"sqlite:///{db}", stale_after=None)
            study = optuna.load_study(study_name=STUDY, storage=storage) \
                if STUDY in optuna.get_all_study_names(storage) else None
            if study is not None and any(t.state == TrialState.RUNNING and t.intermediate_values
                                         for t in study.trials) and record.finished_count(study.trials) < 6:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    assert "RUNNING" not in counts(study)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert interrupted and all(record.is_stale(t) and "interrupted" in record.fail_reason(t)
                               for t in interrupted)
    kept = {t.number: t.user_attrs for t in study.trials if t.state != TrialState.FAIL}

    again = run(tiny_cifar, tmp_path, "--trials", 8, "--epochs", 30)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    assert record.finished_count(study.trials) == 8 and "RUNNING" not in counts(study)
    assert {t.number: t.user_attrs for t in study.trials if t.number in kept} == kept
    # A baseline the interruption cut is run again: both reference recipes finished.
    ran = {t.user_attrs.get(record.RECIPE) for t in study.trials if not record.is_stale(t)}
    assert {"keras_reference", "torch_reference"} <= ran


# ---------------------------------------------------------------- several drivers


def two_drivers(data: Path, tmp_path: Path, storage: str, trials: int = 6) -> optuna.Study:
    env = {"TUNEBENCH_STORAGE": storage}
    procs = []
    for i in range(2):
        results = tmp_path / f"driver{i}"
        # 30-epoch trials: on a fast machine smoke trials take a second, and the first driver
        # finished the whole study before the second one started.
        procs.append(subprocess.Popen(command(data, results, "--trials", trials, "--epochs", 30,
                                              "--stale-after", 30),
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **env}))
        if i == 0:
            time.sleep(8)
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return optuna.load_study(study_name=STUDY, storage=storage)


def check_two_drivers(study: optuna.Study, trials: int = 6) -> None:
    states = counts(study)
    assert "FAIL" not in states and "RUNNING" not in states, states
    assert trials <= record.finished_count(study.trials) <= trials + 2, states
    # The baselines were enqueued once, by whichever driver came first.
    recipes = [t.user_attrs.get(record.RECIPE) for t in study.trials if record.RECIPE in t.user_attrs]
    assert sorted(recipes) == ["keras_reference", "torch_reference"]
    drivers = {t.user_attrs[record.DRIVER].split(":")[1] for t in study.trials}
    assert len(drivers) == 2  # both drivers ran trials of the one study


@pytest.mark.slow
def test_two_drivers_on_one_sqlite_study(tiny_cifar, tmp_path):
    check_two_drivers(two_drivers(tiny_cifar, tmp_path, f"sqlite:///{tmp_path / 'shared.db'}"))


def test_two_drivers_on_one_postgresql_study(tiny_cifar, tmp_path, pg_url):
    check_two_drivers(two_drivers(tiny_cifar, tmp_path, pg_url))


@pytest.mark.slow
def test_a_killed_driver_s_trials_fail_only_after_the_grace_period(tiny_cifar, tmp_path, pg_url):
    """Two drivers on two machines (told apart by their machine names): one is killed with
    SIGKILL; its trials stay RUNNING for the grace period (its process cannot be seen from the
    other machine), then the survivor fails them and finishes the study."""
    grace = 12
    env = {**os.environ, "TUNEBENCH_STORAGE": pg_url}
    victim = subprocess.Popen(command(tiny_cifar, tmp_path / "a", "--trials", 8, "--epochs", 30,
                                      "--stale-after", grace),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env={**env, record.HOST_ENV: "machine-a"})
    deadline = time.monotonic() + 300
    study = None
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=STUDY, storage=pg_url)
        except KeyError:
            study = None
        if study is not None and any(t.state == TrialState.RUNNING for t in study.trials):
            break
        time.sleep(0.5)
    survivor = subprocess.Popen(command(tiny_cifar, tmp_path / "b", "--trials", 8, "--epochs", 30,
                                        "--stale-after", grace),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**env, record.HOST_ENV: "machine-b"})
    time.sleep(5)
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and its Ray session, as a dead machine
    victim.wait()
    killed_at = time.monotonic()
    study = optuna.load_study(study_name=STUDY, storage=pg_url)
    orphans = {t.number for t in study.trials if t.state == TrialState.RUNNING
               and t.user_attrs.get(record.DRIVER, "").startswith("machine-a:")}
    finished_before = {t.number: t.user_attrs for t in study.trials
                       if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert orphans, "the killed driver had no trial running"
    failed_at = None
    while survivor.poll() is None:
        states = {t.number: t.state for t in optuna.load_study(study_name=STUDY, storage=pg_url).trials}
        if failed_at is None and any(states[n] == TrialState.FAIL for n in orphans):
            failed_at = time.monotonic() - killed_at
        time.sleep(0.5)
    _, err = survivor.communicate()
    assert survivor.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=pg_url)
    by_number = {t.number: t for t in study.trials}
    assert all(by_number[n].state == TrialState.FAIL and record.is_stale(by_number[n]) for n in orphans)
    # Its last heartbeat came at most one interval (grace / 6) before the kill.
    assert failed_at is not None and failed_at >= grace - grace / 6 - 1
    print(f"killed driver's trials {sorted(orphans)}: FAIL {failed_at:.1f} s after the kill (grace {grace} s); "
          f"study {counts(study)}")
    assert record.finished_count(study.trials) >= 8 and "RUNNING" not in counts(study)
    assert {n: by_number[n].user_attrs for n in finished_before} == finished_before


@pytest.mark.slow
def test_sigkill_of_the_driver_loses_nothing_on_postgresql(tiny_cifar, tmp_path, pg_url):
    from benchmarks.resume_kill import kill_and_resume

    run = kill_and_resume(tiny_cifar, tmp_path, 1, 6,
                          ["--data-fraction", "1", "--cache-dir", str(tmp_path / "cache")], storage=pg_url)
    assert run.rerun_exit == 0, run.rerun_stderr
    assert run.unchanged and run.running_after == 0 and run.finished_after == 6
    assert run.running_at_kill >= 1 and run.stale_failed >= 1
    assert run.trials_total == 6 + run.stale_failed


# ---------------------------------------------------------------- secrets


def test_the_storage_password_appears_nowhere(tiny_cifar, tmp_path, pg_url):
    from sqlalchemy.engine import make_url

    password = make_url(pg_url).password
    assert password and len(password) >= 8
    results = tmp_path / "results"
    outputs = []
    study = run(tiny_cifar, results, "--trials", 2, "--storage", pg_url)
    assert study.returncode == 0, study.stderr[-3000:]
    outputs += [study.stdout, study.stderr]
    # The final command it suggests keeps the URL in the environment.
    assert "TUNEBENCH_STORAGE=<the storage URL> python studies/final.py" in study.stdout
    final = subprocess.run([sys.executable, str(ROOT / "studies" / "final.py"), "--preset", "smoke",
                            "--data", str(tiny_cifar), "--results", str(results), "--seeds", "1",
                            "--cache-dir", str(results / "cache"), "--epochs", "1"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT,
                           env={**os.environ, "TUNEBENCH_STORAGE": pg_url})
    assert final.returncode == 0, final.stderr[-3000:]
    outputs += [final.stdout, final.stderr]
    compare = subprocess.run([sys.executable, str(ROOT / "dashboards" / "compare.py"), "--storage", pg_url,
                              "--results", str(results)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert compare.returncode == 0, compare.stderr[-3000:]
    outputs += [compare.stdout, compare.stderr]
    bad = make_url(pg_url).set(database="no_such_database")
    refused = run(tiny_cifar, results, "--trials", 2, "--storage", bad.render_as_string(hide_password=False))
    assert refused.returncode == 2 and "***" in refused.stderr
    outputs += [refused.stdout, refused.stderr]
    for text in outputs:
        assert password not in text
    files = [p for p in results.rglob("*") if p.is_file()] + [p for p in Path("/tmp/ray").rglob("*.pkl")
                                                                 if p.is_file()]
    assert any(p.name == "tuner.pkl" for p in files)
    leaks = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert not leaks


def test_optuna_dashboard_reads_a_postgresql_study(tiny_cifar, tmp_path, pg_url):
    import json
    import urllib.request

    from dashboards.screenshot import serve_dashboard

    done = run(tiny_cifar, tmp_path, "--trials", 2, "--storage", pg_url)
    assert done.returncode == 0, done.stderr[-3000:]
    with serve_dashboard(pg_url) as base:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as response:
            studies = json.load(response)["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == STUDY]
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=30) as response:
            detail = json.load(response)
    assert detail["name"] == STUDY
    assert [t["number"] for t in detail["trials"]] == [0, 1]  # the two baselines asked for
    assert {t["state"] for t in detail["trials"]} <= {"Complete", "Pruned"}
    assert all(t["intermediate_values"] for t in detail["trials"])
    assert all(any(a["key"] == record.CONFIG for a in t["user_attrs"]) for t in detail["trials"])


def test_drivers_opening_one_new_storage_at_once_all_get_it(tmp_path):
    """Each creates the schema; the slower ones saw "table studies already exists" or a UNIQUE
    violation of alembic_version (CI: the Ctrl-C test's poll against its own driver). Without the
    retry every one of these rounds failed."""
    import threading


    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        start, errors = threading.Barrier(4), []

        def open_it():
            start.wait()
            try:
                open_storage(url, stale_after=None)
            except Exception as err:  # noqa: BLE001 - the assertion reports it
                errors.append(err)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert optuna.get_all_study_names(url) == []
