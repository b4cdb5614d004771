"""Benchmark 3: the GPU checks, in one run that stays within a time budget (8 min on one H200).

Sections, each in its own process under a time cap. A section that overruns is
cut (its process group killed) and reported ``partial`` with whatever it had
measured, which it saves after every measurement; a section the remaining
budget cannot fit is ``skipped``.

* ``resnet18``: ResNet-18 (``create_model("resnet", 10, 18, 64)``) training
  images/s on synthetic data resident on the device: fp32 eager, bf16 autocast
  + channels_last, and the same under ``torch.compile`` (a failure is reported);
* ``ours_vs_classic``: ``trainers.loop.train`` on uint8 data resident on the GPU
  vs. a classic loop (DataLoader workers, PIL transforms of the same strength)
  on the same model, precision and memory format;
* ``concurrency``: 1, 2, 4 and 8 trials of a small model (``airbench`` when
  registered, else ResNet depth 10 width 16) as separate processes sharing the
  device, started together; total images/s;
* ``time_to_93``: ResNet-18, bf16 + channels_last, SGD Nesterov, label
  smoothing, batch 512, crop + flip + erasing, on the real CIFAR-10,
  evaluated on the test split every epoch until 93%.

The real CIFAR-10 is ``--data``, else ``data/cifar10-jpeg.tar.gz`` in the
checkout (git-ignored: the folder a device run names in ``carry``), else
``../shared/data/cifar10-jpeg.tar.gz`` beside it. ``time_to_93`` needs it:
without it the script stops at once with one line and exit status 2, unless
``--synthetic`` says to skip that section (the others then use random images).

Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out``, else ``$OUT``,
else ``benchmarks/out``. Needs torch and torchvision only (no Ray, Optuna or pandas).

    python benchmarks/gpu_check.py            # the real run (about 7.5 min budget)
    python benchmarks/gpu_check.py --smoke    # every section at tiny size; CPU is fine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

SECTIONS = ("resnet18", "ours_vs_classic", "concurrency", "time_to_93")
REAL_DATA_SECTIONS = ("time_to_93",)  # these measure accuracy: random images would say nothing
CHECKOUT_ARCHIVE = C.REPO_ROOT / "data" / C.ARCHIVE_NAME  # git-ignored; carried to the GPU machine
_MIN_SECTION_S = 15  # a section given less than this is skipped, not started


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each section does, and its time cap in seconds."""

    r18_width: int = 64
    r18_batch: int = 512
    r18_warmup: int = 10
    r18_steps: int = 60
    r18_eager_cap_s: float = 20
    ovc_images: int = 25_600
    ovc_batch: int = 512
    ovc_epochs: int = 2
    small_images: int = 5_120  # per epoch of a concurrent trial
    small_batch: int = 512
    small_window_s: float = 8.0
    levels: tuple[int, ...] = (1, 2, 4, 8)
    level_cap_s: float = 25
    t93_epochs: int = 30
    t93_train: int | None = None  # None: all 50,000
    t93_test: int | None = None  # None: all 10,000
    t93_width: int | None = None  # None: the width --t93-model names
    caps: tuple[tuple[str, float], ...] = (
        ("resnet18", 110), ("ours_vs_classic", 75), ("concurrency", 105), ("time_to_93", 200),
    )
    budget_s: float = 450


FULL = Sizes()
SMOKE = Sizes(
    r18_width=8, r18_batch=16, r18_warmup=1, r18_steps=3, r18_eager_cap_s=10,
    ovc_images=256, ovc_batch=32, ovc_epochs=1,
    small_images=256, small_batch=64, small_window_s=0.5, levels=(1, 2), level_cap_s=30,
    t93_epochs=1, t93_train=512, t93_test=256, t93_width=8,
    caps=(("resnet18", 60), ("ours_vs_classic", 60), ("concurrency", 75), ("time_to_93", 60)),
    budget_s=300,  # the sections' caps, and decoding the archive on a 2-core CPU (30-80 s)
)


# ---------------------------------------------------------------- the driver


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.trial_worker:
        _trial_worker(json.loads(args.trial_worker))
        return {}
    if args.section:
        _run_section(args)
        return {}
    try:
        return _drive(args, argv if argv is not None else sys.argv[1:])
    except _NoData as err:  # one line, before any device time is spent
        print(f"gpu_check: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class _NoData(Exception):
    """The real CIFAR-10 is missing or unreadable where a section needs it."""


def find_data(args: argparse.Namespace) -> Path | None:
    """The real CIFAR-10 to use: ``--data``, else the checkout's ``data/``, else ``../shared/data``.

    None with ``--synthetic``, or where none is found and no section asked for
    needs it (the throughput sections then use random images).

    Raises:
        _NoData: ``--data`` names nothing, or a section that needs real data
            would run without it.
    """
    if args.synthetic:
        return None
    if args.data:
        if not Path(args.data).exists():
            raise _NoData(f"--data {args.data}: no such file or folder")
        return Path(args.data)
    for path in (CHECKOUT_ARCHIVE, C.default_archive()):
        if path is not None and path.exists():
            return path
    needing = [name for name in args.sections if name in REAL_DATA_SECTIONS]
    if needing:
        raise _NoData(
            f"{', '.join(needing)} needs the real CIFAR-10 and none was found (no --data, no "
            f"data/{C.ARCHIVE_NAME} in the checkout, no ../shared/data/{C.ARCHIVE_NAME} "
            "beside it); on the GPU machine copy the archive into data/ and carry it (benchmarks/README.md), "
            "or pass --synthetic to skip that section")
    return None


def _drive(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    start = time.monotonic()
    sizes = SMOKE if args.smoke else FULL
    budget = args.budget or sizes.budget_s
    deadline = start + budget
    data = find_data(args)  # first: a run that cannot measure what it is for stops before anything
    out = Path(args.out or C.default_out())
    logs = out / "gpu_check_logs"
    logs.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "benchmark": "gpu_check",
        "command": " ".join(["python", "benchmarks/gpu_check.py", *argv]),
        "smoke": args.smoke,
        "budget_s": budget,
        "sizes": dataclasses.asdict(sizes),
        "sections": {},
    }
    if data is not None:
        # Decode once here, so every section's process only loads the cached tensors.
        t0 = time.monotonic()
        try:
            ds = C.load(str(data))
        except Exception as err:  # noqa: BLE001 - a corrupt archive is one line, not a traceback
            raise _NoData(f"the data at {data} could not be loaded: {type(err).__name__}: {err}") from None
        record["data"] = {"source": str(data), "real": True, "train": len(ds.train_x),
                          "test": len(ds.test_x), "prepare_seconds": time.monotonic() - t0}
        del ds
    else:
        why = "--synthetic" if args.synthetic else "no real CIFAR-10 found"
        record["data"] = {"source": f"synthetic ({why})", "real": False}
        print(f"[gpu_check] data: random images ({why})", flush=True)
    record["machine"] = C.machine()
    caps = dict(sizes.caps)
    for name in args.sections:
        if data is None and name in REAL_DATA_SECTIONS:
            record["sections"][name] = {"status": "skipped", "reason": "--synthetic: it needs the real "
                                        "CIFAR-10 (--data)", "seconds": 0.0, "cap_s": 0.0}
            print(f"[gpu_check] {name}: skipped (--synthetic; it needs the real CIFAR-10)", flush=True)
            continue
        cap = min(caps[name], deadline - time.monotonic())
        if cap < _MIN_SECTION_S:
            record["sections"][name] = {"status": "skipped", "reason": f"budget: {cap:.0f}s left"}
            continue
        record["sections"][name] = _spawn_section(name, cap, args, data, out, logs)
        print(f"[gpu_check] {name}: {record['sections'][name]['status']} in "
              f"{record['sections'][name]['seconds']:.1f}s", flush=True)
    record["total_seconds"] = time.monotonic() - start
    record["targets"] = _targets(record)
    markdown = _markdown(record)
    print(markdown)
    paths = C.write_outputs(out, "gpu_check", record, markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return record


def _spawn_section(name: str, cap: float, args: argparse.Namespace, data, out: Path,
                   logs: Path) -> dict[str, Any]:
    result_path = out / f".gpu_check_{name}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--cap", f"{cap:.1f}",
           "--spawned-at", f"{time.time():.3f}",
           "--result", str(result_path), "--device", args.device,
           "--compile-backend", args.compile_backend, "--classic-workers", str(args.classic_workers),
           "--t93-target", str(args.t93_target)]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--data", str(data)] if data is not None else ["--synthetic"]
    cmd += ["--t93-epochs", str(args.t93_epochs)] if args.t93_epochs else []
    cmd += ["--t93-model", args.t93_model]
    t0 = time.monotonic()
    with open(logs / f"{name}.log", "w") as log:
        # Own process group: a cut kills the section and any workers it started.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
            cut = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, cut = proc.wait(), True
    seconds = time.monotonic() - t0
    try:
        saved = json.loads(result_path.read_text())
        result_path.unlink()
    except (OSError, ValueError):
        saved = {"status": "failed", "results": {}}
    status = saved.get("status", "failed")
    if cut:
        status = "partial"
        saved["reason"] = f"cut at its {cap:.0f}s cap"
    elif rc != 0 and status != "failed":
        status = "failed"
    if status == "failed" and "error" not in saved:
        saved["error"] = f"exit status {rc}; see {logs / (name + '.log')}"
    return {**saved, "status": status, "seconds": seconds, "cap_s": cap, "exit_status": rc}


# ---------------------------------------------------------------- one section, in its own process


class _Section:
    """A section's results, saved after every measurement so a cut keeps them."""

    def __init__(self, path: Path, cap: float, spawned_at: float | None) -> None:
        self.path = path
        # The cap counts from the spawn, interpreter start-up included; 3 s are
        # kept to write the last save before the driver kills the process group.
        started = spawned_at if spawned_at is not None else time.time()
        self.deadline = time.monotonic() + (started + cap - 3 - time.time())
        self.results: dict[str, Any] = {}
        self.status = "running"
        self.extra: dict[str, Any] = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": self.status, "results": self.results, **self.extra},
                                  default=str))
        os.replace(tmp, self.path)


def _run_section(args: argparse.Namespace) -> None:
    import torch

    section = _Section(Path(args.result), args.cap, args.spawned_at)
    section.save()
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    section.extra["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    section.extra["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    sizes = SMOKE if args.smoke else FULL
    try:
        partial = _SECTION_FUNCS[args.section](section, sizes, device, args)
        section.status = "partial" if partial else "ok"
    except Exception as err:  # noqa: BLE001 - any failure is reported, not raised
        section.status = "failed"
        section.extra["error"] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    section.save()


def _dataset(args: argparse.Namespace, n_train: int, n_test: int):
    """The real dataset when --data is given, else synthetic images of the same shape."""
    if args.data and not args.synthetic:
        return C.load(args.data)
    return C.synthetic_dataset(n_train, n_test)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- resnet18


def _section_resnet18(section: _Section, sizes: Sizes, device, args) -> bool:
    partial = False
    modes = (("fp32_eager", False, False), ("bf16_channels_last", True, False),
             ("bf16_channels_last_compile", True, True))
    for name, bf16, compiled in modes:
        cap_end = section.deadline if compiled else min(
            section.deadline, time.monotonic() + sizes.r18_eager_cap_s)
        try:
            res = _r18_throughput(sizes, device, bf16, compiled, args.compile_backend, cap_end)
        except Exception as err:  # noqa: BLE001 - compile failures land here; others still count
            res = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            traceback.print_exc()
        partial |= bool(res.get("partial"))
        section.results[name] = res
        section.save()
    return partial


def _r18_throughput(sizes: Sizes, device, bf16: bool, compiled: bool, backend: str,
                    deadline: float) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from trainers.models import create_model

    torch.manual_seed(0)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = create_model("resnet", 10, 18, sizes.r18_width).to(device).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    forward = torch.compile(model, backend=backend) if compiled else model
    x = torch.randn(sizes.r18_batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (sizes.r18_batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t0 = time.monotonic()
    step()  # compiles, for the compiled mode
    _sync(device)
    first = time.monotonic() - t0
    for _ in range(sizes.r18_warmup):
        step()
    _sync(device)
    steps, chunk = 0, max(1, min(10, sizes.r18_steps))
    t0 = time.monotonic()
    while steps < sizes.r18_steps and time.monotonic() < deadline:
        for _ in range(chunk):
            step()
        _sync(device)
        steps += chunk
    seconds = time.monotonic() - t0
    return {"images_per_sec": steps * sizes.r18_batch / max(seconds, 1e-9), "steps": steps,
            "batch": sizes.r18_batch, "seconds": seconds, "first_step_seconds": first,
            "width": sizes.r18_width, "optimizer": "SGD nesterov",
            "compile_backend": backend if compiled else None,
            "partial": steps < sizes.r18_steps}


# -- ours vs classic


def _section_ours_vs_classic(section: _Section, sizes: Sizes, device, args) -> bool:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from trainers import metrics as M
    from trainers.augment import AugmentPolicy
    from trainers.config import TrialConfig
    from trainers.data import make_splits
    from trainers.loop import train
    from trainers.models import create_model

    ds = _dataset(args, sizes.ovc_images, 0)
    fraction = min(1.0, sizes.ovc_images / len(ds.train_x))
    splits = make_splits(ds, val_fraction=0.0, data_fraction=fraction, seed=0)
    config = TrialConfig(model="resnet", depth=18, width=sizes.r18_width, epochs=sizes.ovc_epochs,
                         batch_size=sizes.ovc_batch, aug_strength=0.5, data_fraction=fraction,
                         val_fraction=0.0, mixed_precision=True, channels_last=True)
    section.extra["config"] = config.to_dict()
    n_warm = 2 * config.batch_size
    warm = dataclasses.replace(splits, train_x=splits.train_x[:n_warm], train_y=splits.train_y[:n_warm])
    train(config.replace(epochs=1), warm, device=device)

    def stop_at_deadline(metrics, state):
        if time.monotonic() > section.deadline:
            raise _Cut

    partial = False
    try:
        result = train(config, splits, report=stop_at_deadline, device=device)
        history = result.history
    except _Cut:
        history, partial = [], True
    if history:
        best = max(history, key=lambda r: r[M.IMAGES_PER_SEC])
        section.results["ours"] = {
            "images_per_sec": best[M.IMAGES_PER_SEC], "epochs": len(history),
            "images_per_epoch": (len(splits.train_x) // config.batch_size) * config.batch_size,
            "per_epoch_images_per_sec": [r[M.IMAGES_PER_SEC] for r in history]}
        section.save()

    # The classic loop: per-image PIL transforms in worker processes, pinned batches copied over.
    policy = AugmentPolicy.from_strength(config.aug_strength, ds.image_size)
    transform = C.classic_transform(policy, splits.mean, splits.std, ds.image_size)
    dataset = C.PILImages(C.to_pil(splits.train_x), splits.train_y, transform)
    workers = args.classic_workers
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = create_model("resnet", 10, 18, sizes.r18_width).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss()
    bf16 = device.type == "cuda"  # as train() does: bf16 autocast on CUDA only

    def batches():
        while True:
            yield from loader

    images, warmup, target = 0, 3, len(splits.train_x) // config.batch_size * config.batch_size
    t0 = None
    for i, (xb, yb) in enumerate(batches()):
        if i == warmup:
            _sync(device)
            t0 = time.monotonic()
        xb = xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        yb = yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(xb).float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if t0 is not None:
            images += len(xb)
            if images >= target:
                break
            if time.monotonic() > section.deadline:
                partial = True
                break
    _sync(device)
    seconds = time.monotonic() - t0 if t0 is not None else float("nan")
    section.results["classic"] = {
        "images_per_sec": images / seconds if images else float("nan"), "images": images,
        "seconds": seconds, "workers": workers, "pin_memory": device.type == "cuda",
        "warmup_batches": warmup, "transform": repr(transform)}
    if "ours" in section.results and images:
        section.results["ours_over_classic"] = (
            section.results["ours"]["images_per_sec"] / section.results["classic"]["images_per_sec"])
    section.save()
    return partial


# -- concurrent trials


def _small_model() -> tuple[str, int, int]:
    """``airbench`` at its canonical size when registered, else ResNet-10 width 16."""
    from trainers import models

    if "airbench" in models.list_models():
        try:
            info = models.model_info("airbench")
            models.create_model("airbench", 10, info.default_depth, info.default_width)
            return "airbench", info.default_depth, info.default_width
        except Exception:  # noqa: BLE001 - no model_info in the registry, or a size refused
            traceback.print_exc()
    return "resnet", 10, 16


def _section_concurrency(section: _Section, sizes: Sizes, device, args) -> bool:
    model, depth, width = _small_model()
    section.extra["model"] = {"model": model, "depth": depth, "width": width,
                              "batch": sizes.small_batch, "images_per_epoch": sizes.small_images,
                              "data": "synthetic uint8, resident on the device"}
    partial = False
    with tempfile.TemporaryDirectory() as tmp:
        for k in sizes.levels:
            if section.remaining() < min(sizes.level_cap_s, 10):
                partial = True
                break
            level_deadline = min(section.deadline, time.monotonic() + sizes.level_cap_s)
            res = _run_level(k, Path(tmp), sizes, device, model, depth, width, level_deadline)
            partial |= bool(res.get("partial"))
            section.results[str(k)] = res
            section.save()
    return partial


def _run_level(k: int, tmp: Path, sizes: Sizes, device, model: str, depth: int, width: int,
               deadline: float) -> dict[str, Any]:
    go = tmp / f"go-{k}"
    specs = [{"model": model, "depth": depth, "width": width, "images": sizes.small_images,
              "batch": sizes.small_batch, "window_s": sizes.small_window_s,
              "device": device.type, "seed": i, "go": str(go),
              "ready": str(tmp / f"ready-{k}-{i}"), "result": str(tmp / f"result-{k}-{i}.json"),
              "threads": max(1, (os.cpu_count() or 1) // k), "wait_s": deadline - time.monotonic()}
             for i in range(k)]
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--trial-worker",
                               json.dumps(s)]) for s in specs]
    try:
        # Start all trials together once every process is initialised and warmed up.
        while time.monotonic() < deadline:
            if all(Path(s["ready"]).exists() for s in specs):
                break
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        go.touch()
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    done = []
    for s in specs:
        try:
            done.append(json.loads(Path(s["result"]).read_text()))
        except (OSError, ValueError):
            pass
    if not done:
        return {"trials": k, "finished": 0, "partial": True, "total_images_per_sec": float("nan")}
    span = max(d["t_end"] for d in done) - min(d["t_start"] for d in done)
    images = sum(d["images"] for d in done)
    return {"trials": k, "finished": len(done), "partial": len(done) < k,
            "total_images_per_sec": images / max(span, 1e-9), "images": images,
            "span_seconds": span,
            "per_trial_images_per_sec": [d["images_per_sec"] for d in done]}


def _trial_worker(spec: dict[str, Any]) -> None:
    """One concurrent trial: the real trainer for a time window after a shared start."""
    import torch

    from trainers import metrics as M
    from trainers.config import TrialConfig
    from trainers.data import Splits
    from trainers.loop import train

    torch.set_num_threads(spec["threads"])
    gen = torch.Generator().manual_seed(spec["seed"])
    n = spec["images"]
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    splits = Splits(train_x=x, train_y=y, val_x=x[:0], val_y=y[:0],
                    classes=tuple(str(i) for i in range(10)), mean=(0.5,) * 3, std=(0.25,) * 3)
    config = TrialConfig(model=spec["model"], depth=spec["depth"], width=spec["width"],
                         epochs=1000, batch_size=spec["batch"], aug_strength=0.5,
                         val_fraction=0.0, seed=spec["seed"])
    device = torch.device(spec["device"])
    warm = dataclasses.replace(splits, train_x=x[: 2 * spec["batch"]], train_y=y[: 2 * spec["batch"]])
    train(config.replace(epochs=1), warm, device=device)
    Path(spec["ready"]).touch()
    give_up = time.monotonic() + spec["wait_s"]
    while not Path(spec["go"]).exists() and time.monotonic() < give_up:
        time.sleep(0.005)
    rows: list[dict[str, Any]] = []
    t_start = time.time()  # wall clock: comparable across the trials' processes

    def report(metrics, state):
        rows.append(metrics)
        if time.time() - t_start >= spec["window_s"]:
            raise _Cut

    try:
        train(config, splits, report=report, device=device)
    except _Cut:
        pass
    t_end = time.time()
    images = len(rows) * (n // spec["batch"]) * spec["batch"]
    Path(spec["result"]).write_text(json.dumps({
        "images": images, "t_start": t_start, "t_end": t_end,
        "images_per_sec": images / max(t_end - t_start, 1e-9),
        "epoch_images_per_sec": [r[M.IMAGES_PER_SEC] for r in rows]}))


# -- time to 93%


def _section_time_to_93(section: _Section, sizes: Sizes, device, args) -> bool:
    import torch

    from trainers import metrics as M
    from trainers.config import TrialConfig
    from trainers.data import make_splits
    from trainers.loop import train

    if not args.data or args.synthetic:  # the driver never starts it so; a hand-made call might
        raise RuntimeError("time_to_93 needs the real CIFAR-10 (--data)")
    ds = C.load(args.data)
    fraction = 1.0 if sizes.t93_train is None else min(1.0, sizes.t93_train / len(ds.train_x))
    splits = make_splits(ds, val_fraction=0.0, data_fraction=fraction, seed=0)
    n_test = min(sizes.t93_test or len(ds.test_x), len(ds.test_x))
    # Evenly spaced: the archive's test split is sorted by class, so its first
    # images would all be airplanes (the smoke run's 256 scored 99% after one epoch).
    every = torch.arange(n_test) * (len(ds.test_x) // n_test)
    # The test split stands in for validation, so the trainer evaluates it every epoch.
    splits = dataclasses.replace(splits, val_x=ds.test_x[every], val_y=ds.test_y[every])
    epochs = args.t93_epochs or sizes.t93_epochs
    # Why this config: ResNet-18 at width 64 is the model measured above (bf16 +
    # channels_last is its fastest eager mode); SGD Nesterov with a short warm-up,
    # cosine decay and label smoothing 0.1 is the standard fast CIFAR recipe;
    # batch 512 keeps an H200 busy; crop (pad 4) + flip + erasing (cutout-like) is
    # the DAWNBench augmentation that reaches 94% in about 24 epochs with a ResNet-9.
    name, depth, width = args.t93_model.split(":")
    aug = ({"aug_ops": "crop,flip,erasing", "aug_strength": 0.5}
           if "aug_ops" in {f.name for f in dataclasses.fields(TrialConfig)}
           else {"aug_strength": 0.25})  # an older trainer: one knob for every op
    config = TrialConfig(model=name, depth=int(depth), width=sizes.t93_width or int(width),
                         epochs=epochs, batch_size=512 if not args.smoke else 64,
                         optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4,
                         warmup_epochs=min(2.0, epochs / 4), label_smoothing=0.1,
                         val_fraction=0.0, data_fraction=fraction, mixed_precision=True,
                         channels_last=True, eval_batch_size=1024, **aug)
    section.extra["config"] = config.to_dict()
    section.extra["data"] = "real CIFAR-10 (JPEG q75 copy)"
    section.extra["test_images"] = n_test
    section.extra["test_classes"] = int(splits.val_y.unique().numel())
    curve: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def report(metrics, state):
        curve.append({"epoch": metrics[M.EPOCH], "test_acc": metrics[M.VAL_ACC],
                      "train_seconds": metrics[M.TRAIN_SECONDS],
                      "wall_seconds": time.monotonic() - t0})
        section.results["curve"] = curve
        section.save()
        if metrics[M.VAL_ACC] >= args.t93_target:
            raise _Reached
        if time.monotonic() + metrics[M.EPOCH_SECONDS] > section.deadline:
            raise _Cut

    reached = cut = False
    try:
        train(config, splits, report=report, device=device)
    except _Reached:
        reached = True
    except _Cut:
        cut = True
    last = curve[-1] if curve else {}
    section.results.update({
        "target": args.t93_target, "reached": reached, "epochs_run": len(curve),
        "best_test_acc": max((c["test_acc"] for c in curve), default=float("nan")),
        "time_to_target_train_seconds": last.get("train_seconds") if reached else None,
        "time_to_target_wall_seconds": last.get("wall_seconds") if reached else None})
    return cut


_SECTION_FUNCS: dict[str, Callable[..., bool]] = {
    "resnet18": _section_resnet18,
    "ours_vs_classic": _section_ours_vs_classic,
    "concurrency": _section_concurrency,
    "time_to_93": _section_time_to_93,
}


class _Cut(Exception):
    """Raised from a report callback to end a run at an epoch boundary."""


class _Reached(Exception):
    """The accuracy target was reached."""


# ---------------------------------------------------------------- the report


def _get(record: dict[str, Any], *keys: str) -> Any:
    node: Any = record
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _targets(record: dict[str, Any]) -> dict[str, Any]:
    bf16 = _get(record, "sections", "resnet18", "results", "bf16_channels_last", "images_per_sec")
    ratio = _get(record, "sections", "ours_vs_classic", "results", "ours_over_classic")
    return {
        "resnet18_bf16_images_per_sec": bf16,
        "resnet18_bf16_at_least_25000": None if bf16 is None else bf16 >= 25_000,
        "ours_over_classic": ratio,
        "ours_at_least_5x_classic": None if ratio is None else ratio >= 5,
        "meaningful": _get(record, "machine", "gpu") is not None and not record["smoke"],
    }


def _markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    secs = record["sections"]
    lines = [
        "## GPU check (benchmark 3)" + (" — smoke run, tiny sizes" if record["smoke"] else ""),
        "",
        f"`{record['command']}`  ",
        (f"GPU: {m.get('gpu') or 'none (CPU)'}; {m['cpu_model']}, {m['cpu_count']} CPUs; torch "
         f"{m['versions']['torch']}; {m['time']}; data: {record['data']['source']}; "
         f"{record['total_seconds']:.0f}s of a {record['budget_s']:.0f}s budget."),
        "",
        "| section | status | seconds | cap |",
        "|---|---|---|---|",
    ]
    for name, s in secs.items():
        note = s.get("error") or s.get("reason") or ""
        lines.append(f"| {name} | {s['status']}{' — ' + note if note else ''} | "
                     f"{s.get('seconds', 0):.0f} | {s.get('cap_s', 0):.0f} |")
    r18 = _get(secs, "resnet18", "results") or {}
    if r18:
        lines += ["", "### ResNet-18 training (synthetic batch on the device)", "",
                  "| mode | images/s | batch | steps | first step s | note |", "|---|---|---|---|---|---|"]
        for mode, r in r18.items():
            lines.append(f"| {mode} | {C.fmt_rate(r.get('images_per_sec'))} | {r.get('batch', '')} | "
                         f"{r.get('steps', '')} | {r.get('first_step_seconds', float('nan')):.1f} | "
                         f"{r.get('error', 'partial' if r.get('partial') else '')} |")
    ovc = _get(secs, "ours_vs_classic", "results") or {}
    if ovc:
        lines += ["", "### Ours vs. the classic DataLoader loop (same ResNet-18, bf16, channels_last)",
                  "", "| loop | images/s | note |", "|---|---|---|"]
        if "ours" in ovc:
            lines.append(f"| ours: train() on uint8 on the device | "
                         f"{C.fmt_rate(ovc['ours']['images_per_sec'])} | best of "
                         f"{ovc['ours']['epochs']} epochs |")
        if "classic" in ovc:
            lines.append(f"| classic: DataLoader({ovc['classic']['workers']} workers) + PIL | "
                         f"{C.fmt_rate(ovc['classic']['images_per_sec'])} | "
                         f"{ovc['classic']['images']} images |")
        if "ours_over_classic" in ovc:
            lines += ["", f"Ours ÷ classic: **{ovc['ours_over_classic']:.1f}x**."]
    conc = _get(secs, "concurrency", "results") or {}
    if conc:
        model = _get(secs, "concurrency", "model") or {}
        title = (f"### Concurrent trials ({model.get('model')} depth {model.get('depth')} "
                 f"width {model.get('width')}, batch {model.get('batch')})")
        lines += ["", title, "", "| trials | total images/s | finished | per trial |",
                  "|---|---|---|---|"]
        for k, r in conc.items():
            per = ", ".join(C.fmt_rate(v) for v in r.get("per_trial_images_per_sec", []))
            lines.append(f"| {k} | {C.fmt_rate(r.get('total_images_per_sec'))} | "
                         f"{r.get('finished')}/{r.get('trials')} | {per} |")
    t93 = _get(secs, "time_to_93", "results") or {}
    if t93:
        cfg = _get(secs, "time_to_93", "config") or {}
        when = (f"{t93['time_to_target_train_seconds']:.1f}s of training (evaluation included), "
                f"{t93['time_to_target_wall_seconds']:.1f}s wall, epoch {t93['epochs_run']}"
                if t93.get("reached") else f"not reached in {t93.get('epochs_run')} epochs")
        keys = ("model", "depth", "width", "epochs", "batch_size", "optimizer", "lr",
                "weight_decay", "label_smoothing", "aug_ops", "aug_strength")
        shown = json.dumps({k: cfg.get(k) for k in keys})
        best = t93.get("best_test_acc", float("nan"))
        lines += ["", f"### Time to {t93.get('target', 0.93):.0%} test accuracy", "",
                  f"{when}; best {best:.2%}. Config: `{shown}`"]
    t = record["targets"]
    caveat = "" if t["meaningful"] else " (not meaningful: no GPU or smoke run)"
    ratio = "n/a" if t["ours_over_classic"] is None else format(t["ours_over_classic"], ".1f")
    bf16 = (f"- ResNet-18 bf16 + channels_last >= 25,000 images/s: "
            f"{t['resnet18_bf16_at_least_25000']} "
            f"({C.fmt_rate(t['resnet18_bf16_images_per_sec'])})")
    lines += ["", "### Targets" + caveat, "", bf16,
              f"- ours >= 5x classic: {t['ours_at_least_5x_classic']} ({ratio}x)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="every section at tiny size (CPU is fine)")
    p.add_argument("--out", help="output folder (default: $OUT, else benchmarks/out)")
    p.add_argument("--data", help=f"the real CIFAR-10, needed by time_to_93 (default: data/{C.ARCHIVE_NAME} "
                   f"in the checkout, else ../shared/data/{C.ARCHIVE_NAME})")
    p.add_argument("--synthetic", action="store_true",
                   help="random images instead of CIFAR-10; time_to_93 is skipped")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 450; smoke 300)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   type=lambda s: [x for x in s.split(",") if x],
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible), cuda or cpu")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default inductor; smoke: eager, to stay quick)")
    p.add_argument("--classic-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the classic loop (default min(8, CPUs))")
    p.add_argument("--t93-target", type=float, default=0.93)
    p.add_argument("--t93-epochs", type=int, default=None, help="epochs of the time-to-93%% run")
    p.add_argument("--t93-model", default="resnet:18:64",
                   help="MODEL:DEPTH:WIDTH of the time-to-93%% run (width 8 in smoke)")
    # Internal: how the driver starts a section, and a section starts a concurrent trial.
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--cap", type=float, default=60, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--spawned-at", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--trial-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; known: {list(SECTIONS)}")
    if args.data and args.synthetic and not args.section:
        p.error("--data and --synthetic exclude each other")
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.smoke else "inductor"
    return args


if __name__ == "__main__":
    main()
