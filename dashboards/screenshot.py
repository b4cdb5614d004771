"""Screenshots of a study's HTML report and of optuna-dashboard, taken in a real Chromium.

Remakes the README's pictures from a study (run from the repository root)::

    python dashboards/screenshot.py --study resnet_cifar-quick --storage sqlite:////abs/path/optuna.db

It writes docs/leaderboard.png (the top of the report: summary, winning
configuration, accuracy against cost, importances), docs/optuna-dashboard.png
(the study's page) and docs/optuna-dashboard-trial.png (the best trial: its
state, one intermediate value per epoch, parameters and user attributes).
Needs Debian's ``chromium`` (``apt-get install chromium``) and the
``playwright`` Python package (the ``test`` extra); no browser download. The
browser and server helpers here are shared with tests/dashboards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM_ARGS",
    "chromium",
    "find_chromium",
    "main",
    "serve_dashboard",
    "shoot_dashboard",
    "shoot_report",
]

# Chromium without a GPU, a sandbox, a network or a profile of its own.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
_VIEWPORT = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    """The Chromium to drive: ``$CHROMIUM``, else Debian's /usr/bin/chromium, else None."""
    for candidate in (os.environ.get("CHROMIUM"), *_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def chromium(viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A headless Chromium context with a fresh, temporary user-data dir.

    Yields a playwright ``BrowserContext``; the browser and its profile are
    gone afterwards.

    Raises:
        FileNotFoundError: No Chromium is installed.
    """
    from playwright.sync_api import sync_playwright  # a test/docs tool, not a runtime dependency

    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium found: apt-get install chromium, or set $CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="tunebench-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=viewport or _VIEWPORT,
            device_scale_factor=1,
        )
        try:
            yield context
        finally:
            context.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# optuna-dashboard's own server, started by its public run_server() in a child
# process, with the storage URL in the environment: a password in it must not
# show in the process list, as it would on optuna-dashboard's command line.
_SERVE = ("import os, optuna_dashboard; optuna_dashboard.run_server("
          "os.environ['TUNEBENCH_DASHBOARD_STORAGE'], host='127.0.0.1', port=int(os.environ['TUNEBENCH_DASHBOARD_PORT']))")


@contextlib.contextmanager
def serve_dashboard(storage: str, timeout: float = 30.0) -> Iterator[str]:
    """Runs optuna-dashboard's server on STORAGE at 127.0.0.1:FREE until the block ends.

    Yields the base URL once the server answers; the server is always
    stopped afterwards.

    Raises:
        RuntimeError: The server exited or did not answer within ``timeout``
            seconds; the message holds its output.
    """
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TUNEBENCH_DASHBOARD_STORAGE": storage, "TUNEBENCH_DASHBOARD_PORT": str(port)},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_answers(f"{base}/api/meta", server, timeout, log)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_answers(url: str, server: subprocess.Popen, timeout: float, log: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    log.seek(0)
    output = log.read().decode(errors="replace")[-2000:]
    state = (
        f"exited with {server.returncode}" if server.poll() is not None else f"no answer in {timeout:.0f} s"
    )
    raise RuntimeError(f"optuna-dashboard {state}: {output}")


def wait_for_plots(page: Any, count: int, timeout: float = 20_000) -> None:
    """Waits until ``count`` Plotly figures on a page have drawn their traces."""
    page.wait_for_function(
        """n => {
            const plots = document.querySelectorAll('.js-plotly-plot');
            return plots.length === n && [...plots].every(p => p._fullLayout && p.querySelector('.main-svg'));
        }""",
        arg=count,
        timeout=timeout,
    )


def shoot_report(context: Any, report: Path, out: Path, *, until: str | None = "#importance") -> Path:
    """Screenshots a report written by write_report.

    Args:
        context: A context from :func:`chromium`.
        report: The HTML file.
        out: The PNG to write.
        until: CSS selector of the section after which to stop (the section's
            figure included); the full page when None.
    """
    page = context.new_page()
    page.goto(report.resolve().as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg")
    page.wait_for_timeout(500)  # let plotly finish its first draw
    clip = None
    if until is not None:
        bottom = page.evaluate(
            """sel => {
                const head = document.querySelector(sel);
                if (!head) return null;
                let el = head.nextElementSibling;
                while (el && !el.classList.contains('figure') && el.tagName !== 'H2') {
                    el = el.nextElementSibling;
                }
                const last = el && el.classList.contains('figure') ? el : head;
                return last.getBoundingClientRect().bottom + window.scrollY + 10;
            }""",
            until,
        )
        if bottom:
            clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": bottom}
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True, clip=clip)
    page.close()
    return out


def shoot_dashboard(context: Any, url: str, out: Path, *, wait_for: str | None = None) -> Path:
    """Screenshots one optuna-dashboard page (the viewport, not the whole page).

    Args:
        context: A context from :func:`chromium`.
        url: The page, e.g. ``BASE/dashboard/studies/1`` or ``.../trials?numbers=8``.
        out: The PNG to write.
        wait_for: Text to wait for before the picture (the page renders after loading).
    """
    page = context.new_page()
    page.goto(url)
    page.wait_for_load_state("networkidle")
    if wait_for:
        page.get_by_text(wait_for).first.wait_for()
    page.wait_for_timeout(1500)  # plots animate in
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    page.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the README's screenshots of one study into ``--out`` (docs/).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0, or 2 after a one-line ``error: ...`` on stderr.
    """
    import optuna
    from optuna.trial import TrialState

    from dashboards.final_run import final_path
    from dashboards.report import write_report
    from dashboards.sources import UserError, open_storage, open_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--storage", required=True, help="Optuna storage URL (an absolute sqlite path is safest)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results folder, for a final run"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default: docs)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(args.study, args.storage)
        try:
            final: Path | None = final_path(args.study, args.results)
        except ValueError:  # a name no tool of ours made: it has no final run under --results
            final = None
        with tempfile.TemporaryDirectory() as tmp, chromium() as context:
            report = write_report(
                study, Path(tmp) / "report.html",
                final_metrics=final if final is not None and final.is_file() else None
            )
            print(f"wrote {shoot_report(context, report, args.out / 'leaderboard.png')}")
            study_id = open_storage(args.storage).get_study_id_from_name(args.study)  # the dashboard's URLs
            complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
            best = study.best_trial.number if complete else 0
            pages = {
                "optuna-dashboard.png": (f"dashboard/studies/{study_id}", "Hyperparameter Importance"),
                "optuna-dashboard-trial.png": (
                    f"dashboard/studies/{study_id}/trials?numbers={best}",
                    "User Attributes",
                ),
            }
            with serve_dashboard(args.storage) as base:
                for name, (path, text) in pages.items():
                    print(
                        f"wrote {shoot_dashboard(context, f'{base}/{path}', args.out / name, wait_for=text)}"
                    )
    except (UserError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
