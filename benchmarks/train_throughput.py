"""Benchmark 2: training throughput on the quick-preset model, our trainer vs. the classic loop.

Same model (``resnet`` depth 18 width 16, the quick preset's largest), batch 128,
AdamW, the same training images and torch threads, channels_last on both sides
(the trainer's CPU default; the classic loop gets it too, so only the data path
differs):

* ours: ``trainers.loop.train`` for one epoch on uint8 tensors in memory with
  batched augmentation (``aug_strength``), validation split empty so no
  evaluation is timed; its report gives images/s;
* classic: a DataLoader (``--workers``, PIL images in memory, torchvision v1
  transforms of the same strength) feeding a plain loop with the same model;
  the first ``--workers`` value (2) is the headline; ``0`` (transforms in the
  main process) is measured as well, to show how much of the gap is two workers
  and two training threads oversubscribing two cores.

Then a short profile of our step, phase by phase (the step replicated from the
public pieces), and the top operators by self CPU time (torch.profiler).

``--baseline-ref REF`` also times the trainer as of a git commit (its
``trainers/loop.py`` and ``trainers/augment.py``, imported beside today's), in
the same process and interleaved with ours, and reports ours ÷ REF's: a change
to the trainer measured against what it replaces, on the same machine state.

    python benchmarks/train_throughput.py --images 5120
    python benchmarks/train_throughput.py --baseline-ref HEAD --workers "" --profile-steps 0
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from benchmarks import _common as C
from trainers import metrics as M
from trainers.augment import AugmentPolicy, augment_normalize
from trainers.config import TrialConfig
from trainers.data import Splits, make_splits
from trainers.loop import AUGMENT_CHUNK, train
from trainers.memory import keep_freed_memory
from trainers.models import create_model
from trainers.onednn import sidestep_strided_1x1

PHASES = ("gather", "augment + normalise (its share of a chunk)", "forward + loss", "backward",
          "optimizer step")


def measure_ours(config: TrialConfig, splits: Splits, threads: int, warmup_steps: int,
                 train_fn: Callable = train, label: str = "ours") -> dict[str, Any]:
    """One epoch of the real trainer; a few-step run first warms oneDNN's kernels."""
    n_warm = min(len(splits.train_x), config.batch_size * warmup_steps)
    warm = dataclasses.replace(splits, train_x=splits.train_x[:n_warm], train_y=splits.train_y[:n_warm])
    train_fn(config, warm, threads=threads)
    result = train_fn(config, splits, threads=threads)
    row = result.last
    images = (len(splits.train_x) // config.batch_size) * config.batch_size
    return {"loop": f"{label}: trainers.loop.train (uint8 in memory, batched augment)",
            "images": images, "seconds": row[M.EPOCH_SECONDS],
            "images_per_sec": row[M.IMAGES_PER_SEC], "train_loss": row[M.TRAIN_LOSS],
            "torch_threads": threads, "workers": 0}


def baseline_train(ref: str) -> Callable:
    """``trainers.loop.train`` as of git ``ref``, with that commit's ``trainers/augment.py``.

    Both are imported from ``git show`` as new modules beside today's, so the two
    trainers run in one process; the rest of ``trainers/`` is today's.
    """
    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=C.REPO_ROOT, check=True,
                              capture_output=True, text=True).stdout

    def module(name: str, text: str, origin: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__file__ = origin
        sys.modules[name] = mod  # dataclasses look their module up while the class is made
        exec(compile(text, origin, "exec"), mod.__dict__)
        return mod

    module("_baseline_augment", source("trainers/augment.py"), f"{ref}:trainers/augment.py")
    loop = source("trainers/loop.py")
    if "from trainers.augment import" not in loop:
        raise SystemExit(f"error: {ref}:trainers/loop.py does not import trainers.augment")
    loop = loop.replace("from trainers.augment import", "from _baseline_augment import")
    return module("_baseline_loop", loop, f"{ref}:trainers/loop.py").train


def _model_and_optimizer(config: TrialConfig, num_classes: int, seed: int):
    torch.manual_seed(seed)
    model = create_model(config.model, num_classes, config.depth, config.width)
    sidestep_strided_1x1(model)  # as the trainer does on a CPU (trainers/onednn.py)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, optimizer


def measure_classic(config: TrialConfig, splits: Splits, threads: int, workers: int,
                    warmup_steps: int, seed: int = 0) -> dict[str, Any]:
    """A plain epoch: DataLoader of per-image PIL transforms into the same model and optimizer.

    The warm-up steps run on one pre-made batch (no DataLoader), so the timed
    epoch, worker start-up included as in any classic epoch, is the steady loop.
    """
    torch.set_num_threads(threads)
    policy = AugmentPolicy.from_strength(config.aug_strength, splits.train_x.shape[-1])
    transform = C.classic_transform(policy, splits.mean, splits.std, splits.train_x.shape[-1])
    dataset = C.PILImages(C.to_pil(splits.train_x), splits.train_y, transform)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model, optimizer = _model_and_optimizer(config, splits.num_classes, seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = model(xb.contiguous(memory_format=memory_format))
        loss = criterion(out, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    model.train()
    xb, yb = default_collate([dataset[i] for i in range(min(config.batch_size, len(dataset)))])
    for _ in range(warmup_steps):
        step(xb, yb)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    images, loss_sum = 0, torch.zeros(())
    t0 = time.perf_counter()
    for xb, yb in loader:
        loss_sum += step(xb, yb) * len(xb)
        images += len(xb)
    seconds = time.perf_counter() - t0
    return {"loop": "classic: DataLoader + PIL transforms + same model (plain loop)",
            "images": images, "seconds": seconds, "images_per_sec": images / max(seconds, 1e-9),
            "train_loss": loss_sum.item() / max(images, 1), "torch_threads": threads,
            "workers": workers}


def profile_ours(config: TrialConfig, splits: Splits, threads: int, steps: int,
                 warmup_steps: int, top: int = 8) -> dict[str, Any]:
    """Our training step rebuilt from the public pieces, timed phase by phase.

    The CPU runs ops synchronously, so wall time per phase is exact. The replica
    leaves out the scheduler step and the loss/accuracy sums (negligible).
    """
    torch.set_num_threads(threads)
    size = splits.train_x.shape[-1]
    policy = AugmentPolicy.from_strength(config.aug_strength, size)
    model, optimizer = _model_and_optimizer(config, splits.num_classes, config.seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    gen = torch.Generator().manual_seed(config.seed)
    n, batch = len(splits.train_x), min(config.batch_size, len(splits.train_x))
    per_chunk = max(1, AUGMENT_CHUNK // batch)  # as the trainer: a chunk of batches at once
    totals = dict.fromkeys(PHASES, 0.0)
    state = {"step": 0, "chunk": None, "y": None}

    def step(record: bool) -> None:
        t = [time.perf_counter()]
        k = state["step"] % per_chunk
        if k == 0:
            idx = torch.randint(0, n, (batch * per_chunk,), generator=gen)
            rows, state["y"] = splits.train_x[idx], splits.train_y[idx]
        t.append(time.perf_counter())
        if k == 0:
            state["chunk"] = augment_normalize(rows, policy, gen, splits.mean, splits.std,
                                               channels_last=True)
        x, y = state["chunk"][k * batch : (k + 1) * batch], state["y"][k * batch : (k + 1) * batch]
        state["step"] += 1
        t.append(time.perf_counter())
        loss = criterion(model(x).float(), y)
        t.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        t.append(time.perf_counter())
        if record:
            for name, a, b in zip(PHASES, t, t[1:]):
                totals[name] += b - a

    model.train()
    for _ in range(warmup_steps):
        step(False)
    for _ in range(steps):
        step(True)
    step_seconds = sum(totals.values())
    phases = [{"phase": name, "ms_per_step": 1000 * s / steps, "share": s / step_seconds}
              for name, s in totals.items()]

    from torch.profiler import ProfilerActivity, profile

    prof_steps = max(1, min(5, steps))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(prof_steps):
            step(False)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    all_self = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / prof_steps,
            "share": e.self_cpu_time_total / all_self, "calls_per_step": e.count / prof_steps}
           for e in events[:top]]
    return {"steps": steps, "batch": batch, "images_per_sec": steps * batch / step_seconds,
            "phases": phases, "top_ops": ops, "profiled_steps": prof_steps}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset (default: ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--images", type=int, default=5120, help="training images per side")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--aug-strength", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--workers", default="2,0", type=lambda s: [int(w) for w in s.split(",") if w],
                   help="DataLoader workers of the classic loop, comma-separated; the first is "
                        "the headline; \"\" skips the classic loop")
    p.add_argument("--baseline-ref", metavar="REF",
                   help="also time the trainer (loop.py and augment.py) as of git REF, e.g. HEAD, "
                        "interleaved with ours in this process; reports ours ÷ REF's")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each loop, interleaved; the median is reported")
    p.add_argument("--profile-steps", type=int, default=10, help="0 skips the profile")
    p.add_argument("--no-keep-memory", action="store_true",
                   help="leave glibc's default of returning freed memory (both loops)")
    C.add_measurement_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_at_start = list(os.getloadavg())
    # As the trainer does on a CPU, and for both sides (it is process-wide); before workers fork.
    kept = False if args.no_keep_memory else keep_freed_memory()
    ds = C.load(args.data)
    fraction = min(1.0, args.images / len(ds.train_x))
    splits = make_splits(ds, val_fraction=0.0, data_fraction=fraction, seed=args.seed)
    splits = dataclasses.replace(splits, val_x=splits.val_x[:0], val_y=splits.val_y[:0])
    config = TrialConfig(model="resnet", depth=args.depth, width=args.width, epochs=1,
                         batch_size=args.batch_size, aug_strength=args.aug_strength,
                         data_fraction=fraction, val_fraction=0.0, seed=args.seed)
    baseline = baseline_train(args.baseline_ref) if args.baseline_ref else None
    runs: list[list[dict[str, Any]]] = []
    for repeat in range(max(1, args.repeats)):  # interleaved, so a noisy neighbour hits every loop
        measures = [functools.partial(measure_ours, config, splits, args.threads,
                                      args.warmup_steps),
                    *(functools.partial(measure_classic, config, splits, args.threads, workers,
                                        args.warmup_steps, args.seed) for workers in args.workers)]
        order = list(range(len(measures)))
        if baseline is not None:  # beside ours, the pair taking turns to go first
            measures.insert(1, functools.partial(measure_ours, config, splits, args.threads,
                                                 args.warmup_steps, baseline,
                                                 f"ours at {args.baseline_ref}"))
            order = [*((1, 0) if repeat % 2 else (0, 1)), *range(2, len(measures))]
        measured = {i: C.quiet_run(measures[i], args.max_others, args.retries, args.retry_wait)
                    for i in order}
        runs.append([measured[i] for i in range(len(measures))])
    rows = [C.median_row(list(done)) for done in zip(*runs)]
    base = rows.pop(1) if baseline is not None else None
    ratio = rows[0]["images_per_sec"] / rows[1]["images_per_sec"] if len(rows) > 1 else None
    for row in rows[1:]:
        row["ours_over_this"] = rows[0]["images_per_sec"] / row["images_per_sec"]
    profile = (profile_ours(config, splits, args.threads, args.profile_steps, args.warmup_steps)
               if args.profile_steps > 0 else None)
    policy = AugmentPolicy.from_strength(config.aug_strength, splits.train_x.shape[-1])
    record = {
        "benchmark": "train_throughput",
        "command": shlex.join(["python", "benchmarks/train_throughput.py", *(argv or sys.argv[1:])]),
        "config": config.to_dict(),
        "keep_freed_memory": kept,
        "policy": dataclasses.asdict(policy),
        "classic_transform": repr(C.classic_transform(policy, splits.mean, splits.std)),
        "memory_format": "channels_last" if config.channels_last else "contiguous",
        "train_images": len(splits.train_x),
        "repeats": max(1, args.repeats),
        "data": ds.source,
        "rows": rows,
        "ours_over_classic": ratio,
        "baseline_ref": args.baseline_ref,
        "baseline": base,
        # each repeat's pair was measured back to back: the median of their ratios
        "ours_over_baseline": None if base is None else statistics.median(
            a / b for a, b in zip(rows[0]["runs_images_per_sec"], base["runs_images_per_sec"])),
        "profile": profile,
        "loadavg_at_start": load_at_start,
        "machine": C.machine(),
    }
    C.publish(args.out, "train_throughput", record, _markdown(record))
    return record


def _markdown(record: dict[str, Any]) -> str:
    m, cfg = record["machine"], record["config"]
    lines = [
        "## Training throughput (benchmark 2)",
        "",
        f"`{record['command']}`  ",
        (f"{m['cpu_model']}, {m['cpu_count']} CPUs, load (1/5/15 min) "
         f"{_load(record['loadavg_at_start'])} at start, {_load(m['loadavg_1_5_15'])} at end, "
         f"torch {m['versions']['torch']}, {m['time']}; {cfg['model']} depth {cfg['depth']} width "
         f"{cfg['width']}, batch {cfg['batch_size']}, AdamW, aug_strength {cfg['aug_strength']}, "
         f"{record['memory_format']} on both sides, {record['train_images']} training images; "
         f"median of {record['repeats']} interleaved runs per loop; glibc keeps freed memory: "
         f"{'yes' if record.get('keep_freed_memory') else 'no'}."),
        "",
        ("| loop | torch threads | workers | images per run | images/s (median) | runs "
         "| others' CPU share per run |"),
        "|---|---|---|---|---|---|---|",
    ]
    shown = [*record["rows"][:1], *([record["baseline"]] if record["baseline"] else []),
             *record["rows"][1:]]
    for r in shown:
        runs = ", ".join(C.fmt_rate(v) for v in r["runs_images_per_sec"])
        lines.append(f"| {r['loop']} | {r['torch_threads']} | {r['workers']} | {r['images']} | "
                     f"{C.fmt_rate(r['images_per_sec'])} | {runs} | {C.fmt_shares(r)} |")
    if record["baseline"]:
        pairs = ", ".join(f"{a / b:.3f}" for a, b in zip(record["rows"][0]["runs_images_per_sec"],
                                                         record["baseline"]["runs_images_per_sec"]))
        lines += ["", f"Ours ÷ ours at {record['baseline_ref']} (same process, interleaved; "
                      f"median of the runs' ratios {pairs}): **{record['ours_over_baseline']:.3f}x**."]
    if record["ours_over_classic"] is not None:
        lines += ["", f"Ours ÷ classic ({record['rows'][1]['workers']} workers): "
                      f"**{record['ours_over_classic']:.2f}x**" +
                  "".join(f"; ÷ classic with {r['workers']} workers: {r['ours_over_this']:.2f}x"
                          for r in record["rows"][2:]) + "."]
    prof = record["profile"]
    if prof:
        title = (f"Our step, replicated and timed by phase ({prof['steps']} steps of "
                 f"{prof['batch']}, {C.fmt_rate(prof['images_per_sec'])} images/s):")
        lines += ["", title, "", "| phase | ms/step | share |", "|---|---|---|"]
        lines += [f"| {p['phase']} | {p['ms_per_step']:.1f} | {p['share']:.0%} |"
                  for p in prof["phases"]]
        title = (f"Top operators by self CPU time (torch.profiler, {prof['profiled_steps']} "
                 "steps):")
        lines += ["", title, "", "| op | self ms/step | share | calls/step |", "|---|---|---|---|"]
        lines += [f"| `{o['op']}` | {o['self_ms_per_step']:.1f} | {o['share']:.0%} | "
                  f"{o['calls_per_step']:g} |" for o in prof["top_ops"]]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


if __name__ == "__main__":
    main()
