"""Benchmark 1: augmentation throughput, our batched pipeline vs. the classic PIL one.

Both sides run the torch_reference recipe (RandomCrop 32 pad 4, horizontal flip,
ColorJitter 0.2, RandAugment 2 ops at magnitude 9 of 30, RandomErasing 0.25,
batch 128) over the same number of CIFAR-10 training images, after a warm-up:

* ours: ``trainers.augment.augment_normalize`` on uint8 images gathered from
  memory, augmented, converted and normalised to channels-last in one call per
  ``--chunk`` images (512, as the trainer does: it augments several batches at
  once), in one process, once per entry of ``--threads`` (default 1 and 2 torch
  threads: on a 2-core machine that others share, two threads collapse whenever
  a core is taken, since every small op waits for both), and through a DataLoader
  with ``--workers`` workers that each augment whole chunks (the classic side's
  parallelism, with our batched ops inside);
* classic: torchvision v1 transforms on PIL images through a DataLoader with
  ``--workers`` workers (torch gives each worker one thread), from PIL images in
  memory (augmentation only), and from the JPEG ImageFolder on disk (decode too).

Both sides run with glibc told to keep freed memory (``trainers.memory``), as
the trainer runs; ``--no-keep-memory`` measures both without it.

    python benchmarks/augment_throughput.py --images 10240
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
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
from trainers.augment import AugmentPolicy, augment_normalize
from trainers.data import make_splits
from trainers.loop import AUGMENT_CHUNK
from trainers.memory import keep_freed_memory

# The torch_reference recipe in our terms: RandAugment magnitude 9 of 30 is 0.3.
POLICY = AugmentPolicy(flip_p=0.5, translate_pad=4, jitter=0.2, erase_p=0.25,
                       randaug_p=1.0, randaug_ops=2, randaug_magnitude=0.3)


def _index_batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    # One permutation per pass over the data, sliced into batches, as the trainer does;
    # draws with replacement when a batch is larger than the data (tiny test sets).
    while batch > n:
        yield torch.randint(0, n, (batch,), generator=gen)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


def _timed(step, warmup: int, calls: int) -> float:
    """Seconds for ``calls`` calls of ``step`` after ``warmup`` untimed ones; checks the output."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(calls):
        out = step()
    seconds = time.perf_counter() - t0
    assert torch.isfinite(out).all()
    return seconds


def measure_ours(train_x: torch.Tensor, mean, std, policy: AugmentPolicy, batches: int,
                 batch: int, warmup: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of gather + ``augment_normalize`` (to normalised channels-last floats)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    indices = _index_batches(len(train_x), batch, gen)

    def step() -> torch.Tensor:
        return augment_normalize(train_x[next(indices)], policy, gen, mean, std, channels_last=True)

    seconds = _timed(step, warmup, batches)
    return _rate(f"ours: batched augment_normalize, {batch} images per call", batches * batch,
                 seconds, torch_threads=threads, workers=0, side="ours")


def measure_kornia(train_x: torch.Tensor, mean, std, batches: int, batch: int, warmup: int,
                   threads: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of kornia's batched augmentation library doing the same recipe, in-process.

    kornia.augmentation draws per-sample parameters too; its RandAugment(n=2, m=9)
    and ColorJitter follow torchvision's. The normalisation and layout are ours.
    """
    import kornia.augmentation as K

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pipeline = K.AugmentationSequential(
        K.RandomCrop((train_x.shape[2], train_x.shape[3]), padding=POLICY.translate_pad),
        K.RandomHorizontalFlip(p=POLICY.flip_p),
        K.ColorJitter(POLICY.jitter, POLICY.jitter, POLICY.jitter, p=1.0),
        K.auto.RandAugment(n=POLICY.randaug_ops, m=round(POLICY.randaug_magnitude * 30)),
        K.RandomErasing(p=POLICY.erase_p),
    )
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    indices = _index_batches(len(train_x), batch, gen)

    def step() -> torch.Tensor:
        x = pipeline(train_x[next(indices)].float().div_(255))
        return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)

    seconds = _timed(step, warmup, batches)
    return _rate(f"library: kornia.augmentation, {batch} images per call", batches * batch,
                 seconds, torch_threads=threads, workers=0, side="library")


class AugmentedChunks(Dataset):
    """Item i: ``chunk`` random training images, augmented and normalised in one call.

    Our pipeline behind a DataLoader, so that it runs in worker processes like the
    classic one; each item draws its images and augmentation from its own seed.
    The images go into a ring of shared-memory slots made before the workers fork,
    and the item is the slot's number: a fresh shared-memory tensor per item (what
    a DataLoader does by default) costs as much as augmenting it at these rates,
    since every one of its pages faults in both processes.
    """

    def __init__(self, train_x: torch.Tensor, mean, std, policy: AugmentPolicy, chunk: int,
                 count: int, seed: int, slots: int) -> None:
        self.train_x, self.mean, self.std, self.policy = train_x, mean, std, policy
        self.chunk, self.count, self.seed = chunk, count, seed
        self.slots = slots
        self.ring = torch.empty((slots * chunk, *train_x.shape[1:]),
                                memory_format=torch.channels_last).share_memory_()

    def slot(self, k: int) -> torch.Tensor:
        return self.ring[k * self.chunk : (k + 1) * self.chunk]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        idx = torch.randint(0, len(self.train_x), (self.chunk,), generator=gen)
        augment_normalize(self.train_x[idx], self.policy, gen, self.mean, self.std,
                          out=self.slot(i % self.slots))
        return i % self.slots, i


def measure_ours_workers(train_x: torch.Tensor, mean, std, policy: AugmentPolicy, chunks: int,
                         chunk: int, warmup: int, workers: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of our pipeline in ``workers`` DataLoader workers, one chunk per item.

    A DataLoader keeps at most ``prefetch_factor`` (2) items per worker in flight, so
    a ring of 2 x workers + 2 slots is never overwritten while its chunk is in use.
    """
    dataset = AugmentedChunks(train_x, mean, std, policy, chunk, warmup + chunks, seed,
                              slots=2 * workers + 2)
    result = measure_classic(f"ours: batched augment_normalize in DataLoader workers, {chunk} "
                             "images per item", dataset, chunks, None, warmup, workers, 1, seed)
    return {**result, "images": chunks * chunk, "images_per_sec": chunks * chunk / result["seconds"],
            "side": "ours"}


def measure_classic(name: str, dataset: Dataset, batches: int, batch: int, warmup: int,
                    workers: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of a DataLoader over ``dataset``; the main process only takes batches.

    Timing starts after ``warmup`` batches, when the workers run and the consumer
    has drained the prefetch queue, so it measures the steady-state rate.
    """
    torch.set_num_threads(threads)
    if batch is None:  # every item is a whole batch already
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    else:
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
    if isinstance(dataset, AugmentedChunks):
        xb = dataset.slot(xb)  # the slot's number: our chunk is in the ring
    assert torch.isfinite(xb).all()
    return _rate(name, batches * (batch or 1), seconds, torch_threads=threads, workers=workers,
                 side="classic")


def _rate(name: str, images: int, seconds: float, **settings: Any) -> dict[str, Any]:
    return {"pipeline": name, "images": images, "seconds": seconds,
            "images_per_sec": images / max(seconds, 1e-9), **settings}


def stage_breakdown(train_x: torch.Tensor, mean, std, policy: AugmentPolicy, batch: int,
                    threads: int, reps: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """ms per call of each stage of our pipeline, each timed alone on the same images.

    Informational: it names where our time goes. Stages are looked up by name in
    ``trainers.augment``; one that is renamed or gone is left out, not an error.
    """
    import trainers.augment as A

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(train_x), (batch,), generator=gen)
    x = train_x[idx]
    h, w = x.shape[2:]

    def colour():
        c = A._Colour(A._pixels(warped, x), 1 / 255)
        c.jitter(policy.jitter, gen)
        for r in rounds:
            c.round(r, h, w)
        return c

    try:
        rounds = A._plan_rounds(policy, batch, gen, x.device)
        warped = A._geometry(x, policy, rounds, gen)
        done = colour().finish(mean, std).view(x.shape)
    except (AttributeError, TypeError):
        return []
    stages = {
        "gather from the dataset": lambda: train_x[idx],
        "plan (random draws)": lambda: A._plan_rounds(policy, batch, gen, x.device),
        "geometry (crop, flip, RandAugment's): one gather": lambda: A._geometry(x, policy, rounds, gen),
        "colour (jitter, RandAugment's)": colour,
        "finish: colour map + normalise": lambda: colour_done.finish(mean, std),
        "erasing": lambda: A._erase(done.clone(), policy.erase_p, gen),
        "channels_last": lambda: done.contiguous(memory_format=torch.channels_last),
    }
    colour_done = colour()
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
    p.add_argument("--batch-size", type=int, default=128, help="classic DataLoader batch")
    p.add_argument("--chunk", type=int, default=AUGMENT_CHUNK,
                   help=f"images per call of ours (default {AUGMENT_CHUNK}, as the trainer)")
    p.add_argument("--no-keep-memory", action="store_true",
                   help="leave glibc's default of returning freed memory (both pipelines)")
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each pipeline, interleaved; the median is reported")
    p.add_argument("--threads", default="1,2", type=lambda s: [int(t) for t in s.split(",")],
                   help="torch threads of our pipeline, comma-separated (one row each)")
    p.add_argument("--classic-threads", type=int, default=2,
                   help="torch threads of the classic main process (its workers get 1 each)")
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader workers (classic, and ours in workers; 0 skips the latter)")
    p.add_argument("--no-disk", action="store_true", help="skip the ImageFolder-from-disk run")
    p.add_argument("--kornia", action="store_true",
                   help="also time kornia.augmentation on the same recipe (pip install kornia)")
    C.add_measurement_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_at_start = list(os.getloadavg())
    kept = False if args.no_keep_memory else keep_freed_memory()  # before the workers fork
    batches = max(1, math.ceil(args.images / args.batch_size))
    chunks = max(1, math.ceil(args.images / args.chunk))
    ds = C.load(args.data)
    splits = make_splits(ds, val_fraction=0.0, seed=args.seed)  # the trainer's mean and std
    transform = C.classic_transform(POLICY, splits.mean, splits.std, ds.image_size)
    pipelines = {
        f"ours{threads}": functools.partial(
            lambda rep, threads: measure_ours(splits.train_x, splits.mean, splits.std, POLICY,
                                              chunks, args.chunk, args.warmup_batches,
                                              threads, args.seed + rep), threads=threads)
        for threads in args.threads
    }
    if args.workers:
        pipelines["ours_workers"] = lambda rep: measure_ours_workers(
            splits.train_x, splits.mean, splits.std, POLICY, chunks, args.chunk,
            args.warmup_batches, args.workers, args.seed + rep)
    if args.kornia:
        pipelines["kornia"] = lambda rep: measure_kornia(
            splits.train_x, splits.mean, splits.std, chunks, args.chunk, args.warmup_batches,
            max(args.threads), args.seed + rep)
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
    rows = [C.median_row(done) for done in runs.values()]
    ours_rows = [r for r in rows if r["side"] == "ours"]
    classic_rows = [r for r in rows if r["side"] == "classic"]
    others = classic_rows + [r for r in rows if r["side"] == "library"]
    ratios = [{"ours": o["pipeline"], "ours_threads": o["torch_threads"], "ours_workers": o["workers"],
               "classic": c["pipeline"], "ratio": o["images_per_sec"] / c["images_per_sec"]}
              for o in ours_rows for c in others]
    in_process = [r for r in ours_rows if r["workers"] == 0]
    best_threads = max(in_process, key=lambda r: r["images_per_sec"])["torch_threads"]
    record = {
        "benchmark": "augment_throughput",
        "command": " ".join(["python", "benchmarks/augment_throughput.py", *(argv or sys.argv[1:])]),
        "policy": dataclasses.asdict(POLICY),
        "classic_transform": repr(transform),
        "batch_size": args.batch_size,
        "chunk": args.chunk,
        "keep_freed_memory": kept,
        "warmup_batches": args.warmup_batches,
        "repeats": max(1, args.repeats),
        "ours_threads": args.threads,
        "data": ds.source,
        "rows": rows,
        "ratios": ratios,
        "image_folder": str(folder) if folder is not None and not args.no_disk else None,
        "ours_stages": stage_breakdown(splits.train_x, splits.mean, splits.std, POLICY,
                                       args.chunk, best_threads, seed=args.seed),
        "ours_stages_threads": best_threads,
        "loadavg_at_start": load_at_start,
        "machine": C.machine(),
    }
    C.publish(args.out, "augment_throughput", record, _markdown(record))
    return record


def _markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "## Augmentation throughput (benchmark 1)",
        "",
        f"`{record['command']}`  ",
        (f"{m['cpu_model']}, {m['cpu_count']} CPUs, load (1/5/15 min) "
         f"{_load(record['loadavg_at_start'])} at start, {_load(m['loadavg_1_5_15'])} at end, "
         f"torch {m['versions']['torch']}, {m['time']}; classic batch {record['batch_size']}, "
         f"ours {record['chunk']} images per call; {record['warmup_batches']} warm-up batches; "
         f"median of {record['repeats']} interleaved runs per pipeline; glibc keeps freed memory: "
         f"{'yes' if record['keep_freed_memory'] else 'no'}."),
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
    lines += [f"| ours ({_how(r)}) ÷ {r['classic']} | {r['ratio']:.1f}x |" for r in record["ratios"]]
    if record["ours_stages"]:
        title = (f"Our stages, each timed alone on {record['chunk']} images "
                 f"({record['ours_stages_threads']} thread(s)):")
        lines += ["", title, "", "| stage | ms per call |", "|---|---|"]
        lines += [f"| {r['stage']} | {r['ms_per_batch']:.2f} |" for r in record["ours_stages"]]
    return "\n".join(lines) + "\n"


def _how(ratio: dict[str, Any]) -> str:
    if ratio.get("ours_workers"):
        return f"{ratio['ours_workers']} workers"
    return f"in-process, {ratio['ours_threads']} thread(s)"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


if __name__ == "__main__":
    main()
