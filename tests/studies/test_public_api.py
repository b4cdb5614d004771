"""studies/ uses Ray and Optuna through their public API only: no private attribute, no private module."""

import ast
from pathlib import Path

STUDIES = Path(__file__).resolve().parents[2] / "studies"
# argparse's list of options and its append action: the standard library's, not Ray's or Optuna's.
ALLOWED = {("cli.py", "_actions"), ("cli.py", "_AppendAction")}


def private_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and (path.name, node.attr) not in ALLOWED:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ray", "optuna"):
            if any(part.startswith("_") for part in node.module.split(".")) or any(
                    alias.name.startswith("_") for alias in node.names):
                found.append(f"{path.name}:{node.lineno} from {node.module}")
    return found


def test_studies_reach_into_no_private_name_of_ray_or_optuna():
    assert [use for path in sorted(STUDIES.glob("*.py")) for use in private_uses(path)] == []


def test_the_check_itself_finds_a_private_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from optuna.storages._heartbeat import fail_stale_trials\nx = study._storage\n")
    assert private_uses(bad) == ["bad.py:1 from optuna.storages._heartbeat", "bad.py:2 ._storage"]


def test_the_optuna_heartbeat_names_we_rely_on_still_do_their_job(tmp_path):
    """studies/storage.py's Heartbeat uses RDBStorage.record_heartbeat, get_heartbeat_interval and
    get_trial_id_from_study_id_trial_number, and optuna.storages.fail_stale_trials, which Optuna
    documents for its own optimize loop: fail here, not silently, if a release moves them."""
    import time
    import warnings

    import optuna
    from optuna.trial import TrialState

    from studies.storage import Heartbeat

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1,
                                         grace_period=2)
    study = optuna.create_study(storage=storage, study_name="beats")
    heartbeat = Heartbeat(storage, "beats")
    assert heartbeat.interval == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live, silent = study.ask(), study.ask()
        heartbeat.beat([live.number, silent.number])
        time.sleep(1.5)
        heartbeat.beat([live.number])  # the silent one's driver has died
        time.sleep(1.5)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.trials}
    assert states == {live.number: TrialState.RUNNING, silent.number: TrialState.FAIL}
