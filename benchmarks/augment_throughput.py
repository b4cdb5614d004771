"""Benchmark 1: augmentation throughput, our batched pipeline vs. the classic PIL one.

Both sides run the torch_reference recipe (RandomCrop 32 pad 4, horizontal flip,
ColorJitter 0.2, RandAugment 2 ops at magnitude 9 of 30, RandomErasing 0.25,
batch 128) over the same number of CIFAR-10 training images, after a warm-up:

* ours: ``trainers.augment.augment`` on uint8 batches gathered from memory,
  converted, augmented and normalised as the trainer does, in one process, once
  per entry of ``--threads`` (default 1 and 2 torch threads: on a 2-core machine
  that others share, two threads collapse whenever a core is taken, since every
  small op waits for both);
* classic: torchvision v1 transforms on PIL images through a DataLoader with
  ``--workers`` workers (torch gives each worker one thread), from PIL images in
  memory (augmentation only), and from the JPEG ImageFolder on disk (decode too).

    python benchmarks/augment_throughput.py --images 10240
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import ImageFolder

from benchmarks import _common as C
from trainers.augment import AugmentPolicy, augment
from trainers.data import make_splits

# The torch_reference recipe in our terms: RandAugment magnitude 9 of 30 is 0.3.
POLICY = AugmentPolicy(flip_p=0.5, translate_pad=4, jitter=0.2, erase_p=0.25,
                       randaug_p=1.0, randaug_ops=2, randaug_magnitude=0.3)


def _index_batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    # One permutation per pass over the data, sliced into batches, as the trainer does.
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


def measure_ours(train_x: torch.Tensor, mean, std, policy: AugmentPolicy, batches: int,
                 batch: int, warmup: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of gather + uint8->float + ``augment`` + normalise + channels_last."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    indices = _index_batches(len(train_x), batch, gen)

    def step() -> torch.Tensor:
        x = train_x[next(indices)].float().div_(255)
        x = augment(x, policy, gen)
        return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(batches):
        out = step()
    seconds = time.perf_counter() - t0
    assert torch.isfinite(out).all()
    return _rate("ours: batched augment on uint8 tensors", batches * batch, seconds,
                 torch_threads=threads, workers=0)


def measure_classic(name: str, dataset: Dataset, batches: int, batch: int, warmup: int,
                    workers: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of a DataLoader over ``dataset``; the main process only takes batches.

    Timing starts after ``warmup`` batches, when the workers run and the consumer
    has drained the prefetch queue, so it measures the steady-state rate.
    """
    torch.set_num_threads(threads)
    sampler = RandomSampler(dataset, num_samples=(warmup + batches) * batch,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        drop_last=True)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        xb, _ = next(it)
    seconds = time.perf_counter() - t0
    del it  # shuts the workers down before the next measurement
    assert torch.isfinite(xb).all()
    return _rate(name, batches * batch, seconds, torch_threads=threads, workers=workers)


def _rate(name: str, images: int, seconds: float, **settings: Any) -> dict[str, Any]:
    return {"pipeline": name, "images": images, "seconds": seconds,
            "images_per_sec": images / max(seconds, 1e-9), **settings}


def stage_breakdown(train_x: torch.Tensor, mean, std, policy: AugmentPolicy, batch: int,
                    threads: int, reps: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """ms per batch of each stage of our pipeline, each timed alone on the same batch.

    Informational: it names where our time goes. Stages are looked up by name in
    ``trainers.augment``; one that is renamed or gone is left out, not an error.
    """
    import trainers.augment as A

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_x), generator=gen)[:batch]
    x = train_x[idx].float().div_(255)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    stages = {
        "gather + uint8->float": lambda: train_x[idx].float().div_(255),
        "random_translate": lambda: A.random_translate(x, policy.translate_pad, gen),
        "random_flip": lambda: A.random_flip(x, policy.flip_p, gen),
        "rand_augment": lambda: A.rand_augment(x, policy.randaug_ops, policy.randaug_magnitude,
                                               gen, policy.randaug_p),
        "color_jitter": lambda: A.color_jitter(x, policy.jitter, gen),
        "random_erasing": lambda: A.random_erasing(x, policy.erase_p, gen),
        "normalise + channels_last": lambda: ((x - mean_t) / std_t).contiguous(
            memory_format=torch.channels_last),
    }
    rows = []
    for name, fn in stages.items():
        try:
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            ms = 1000 * (time.perf_counter() - t0) / reps
        except (AttributeError, TypeError):
            continue
        rows.append({"stage": name, "ms_per_batch": ms})
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset (default: ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--images", type=int, default=10240, help="images timed per pipeline and run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each pipeline, interleaved; the median is reported")
    p.add_argument("--threads", default="1,2", type=lambda s: [int(t) for t in s.split(",")],
                   help="torch threads of our pipeline, comma-separated (one row each)")
    p.add_argument("--classic-threads", type=int, default=2,
                   help="torch threads of the classic main process (its workers get 1 each)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (classic)")
    p.add_argument("--no-disk", action="store_true", help="skip the ImageFolder-from-disk run")
    C.add_measurement_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_at_start = list(os.getloadavg())
    batches = max(1, math.ceil(args.images / args.batch_size))
    ds = C.load(args.data)
    splits = make_splits(ds, val_fraction=0.0, seed=args.seed)  # the trainer's mean and std
    transform = C.classic_transform(POLICY, splits.mean, splits.std, ds.image_size)
    pipelines = {
        f"ours{threads}": functools.partial(
            lambda rep, threads: measure_ours(splits.train_x, splits.mean, splits.std, POLICY,
                                              batches, args.batch_size, args.warmup_batches,
                                              threads, args.seed + rep), threads=threads)
        for threads in args.threads
    }
    in_memory = C.PILImages(C.to_pil(splits.train_x), splits.train_y, transform)
    pipelines["memory"] = lambda rep: measure_classic(
        "classic: PIL transforms, PIL images in memory", in_memory, batches, args.batch_size,
        args.warmup_batches, args.workers, args.classic_threads, args.seed + rep)
    folder = C.image_folder_train_dir(ds)
    if folder is not None and not args.no_disk:
        on_disk = ImageFolder(str(folder), transform=transform)
        pipelines["disk"] = lambda rep: measure_classic(
            "classic: PIL transforms, ImageFolder from disk (JPEG decode)", on_disk, batches,
            args.batch_size, args.warmup_batches, args.workers, args.classic_threads, args.seed + rep)
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in pipelines}
    for rep in range(max(1, args.repeats)):  # interleaved, so a noisy neighbour hits all sides
        for key, measure in pipelines.items():
            runs[key].append(C.quiet_run(functools.partial(measure, rep), args.max_others,
                                         args.retries, args.retry_wait))
    rows = []
    for key, done in runs.items():
        median = statistics.median(r["images_per_sec"] for r in done)
        rows.append({**done[0], "images_per_sec": median, "seconds": done[0]["images"] / median,
                     "runs_images_per_sec": [r["images_per_sec"] for r in done],
                     "runs_others_cpu_share": [r["others_cpu_share"] for r in done],
                     "runs_attempts": [r["attempts"] for r in done]})
    ours_rows = [r for r in rows if r["workers"] == 0]
    classic_rows = [r for r in rows if r["workers"] != 0]
    ratios = [{"ours_threads": o["torch_threads"], "classic": c["pipeline"],
               "ratio": o["images_per_sec"] / c["images_per_sec"]}
              for o in ours_rows for c in classic_rows]
    best_threads = max(ours_rows, key=lambda r: r["images_per_sec"])["torch_threads"]
    record = {
        "benchmark": "augment_throughput",
        "command": " ".join(["python", "benchmarks/augment_throughput.py", *(argv or sys.argv[1:])]),
        "policy": dataclasses.asdict(POLICY),
        "classic_transform": repr(transform),
        "batch_size": args.batch_size,
        "warmup_batches": args.warmup_batches,
        "repeats": max(1, args.repeats),
        "ours_threads": args.threads,
        "data": ds.source,
        "rows": rows,
        "ratios": ratios,
        "image_folder": str(folder) if folder is not None and not args.no_disk else None,
        "ours_stages": stage_breakdown(splits.train_x, splits.mean, splits.std, POLICY,
                                       args.batch_size, best_threads, seed=args.seed),
        "ours_stages_threads": best_threads,
        "loadavg_at_start": load_at_start,
        "machine": C.machine(),
    }
    markdown = _markdown(record)
    print(markdown)
    paths = C.write_outputs(args.out or C.default_out(), "augment_throughput", record, markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return record


def _markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "## Augmentation throughput (benchmark 1)",
        "",
        f"`{record['command']}`  ",
        (f"{m['cpu_model']}, {m['cpu_count']} CPUs, load (1/5/15 min) "
         f"{_load(record['loadavg_at_start'])} at start, {_load(m['loadavg_1_5_15'])} at end, "
         f"torch {m['versions']['torch']}, {m['time']}; batch {record['batch_size']}, "
         f"{record['warmup_batches']} warm-up batches; median of {record['repeats']} "
         "interleaved runs per pipeline."),
        "",
        ("| pipeline | torch threads | workers | images per run | images/s (median) | runs "
         "| others' CPU share per run |"),
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        runs = ", ".join(C.fmt_rate(v) for v in r["runs_images_per_sec"])
        lines.append(f"| {r['pipeline']} | {r['torch_threads']} | {r['workers']} | {r['images']} | "
                     f"{C.fmt_rate(r['images_per_sec'])} | {runs} | {C.fmt_shares(r)} |")
    lines += ["", "| ours ÷ classic | ratio |", "|---|---|"]
    lines += [f"| ours, {r['ours_threads']} thread(s) ÷ {r['classic']} | {r['ratio']:.1f}x |"
              for r in record["ratios"]]
    if record["ours_stages"]:
        title = (f"Our stages, each timed alone on one batch ({record['ours_stages_threads']} "
                 "thread(s)):")
        lines += ["", title, "", "| stage | ms/batch |", "|---|---|"]
        lines += [f"| {r['stage']} | {r['ms_per_batch']:.2f} |" for r in record["ours_stages"]]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


if __name__ == "__main__":
    main()
