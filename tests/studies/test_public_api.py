"""studies/ uses Ray and Optuna through their public API only: no private attribute, no private module."""

import ast
from pathlib import Path

STUDIES = Path(__file__).resolve().parents[2] / "studies"
ALLOWED = {("benchmark.py", "_actions")}  # argparse's list of options: not Ray's, not Optuna's


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
