"""Does oneDNN compute strided 1x1 convolutions' weight gradients right, and does our sidestep?

For each kernel set (the CPU's own, and AVX2 through ``ONEDNN_MAX_CPU_ISA``),
torch thread count, input channel count and image size, a child process
computes the weight gradient of a 1x1, stride-2 convolution on channels-last
input three ways: plainly, with ``trainers.onednn.sidestep_strided_1x1``, and
in contiguous memory (the reference, a different kernel). Each cell says
``ok``, ``wrong`` (the largest error relative to the reference's largest
gradient, above 1e-4), ``crash`` (the child died of a signal) or ``hang``
(the child ran past ``--timeout``). Children, since the bug corrupts memory.

    python benchmarks/onednn_1x1.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _common as C  # noqa: E402

ISAS = ("default", "AVX2")
WAYS = ("plain", "sidestep")


def child(way: str, channels: int, size: int, threads: int) -> float:
    """The weight gradient's largest error, relative to the contiguous reference's largest value."""
    import torch

    from trainers.onednn import sidestep_strided_1x1

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, channels, size, size, generator=gen)
    weight = torch.randn(8 if channels < 8 else 2 * channels, channels, 1, 1, generator=gen)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        conv = torch.nn.Conv2d(channels, weight.shape[0], 1, stride=2, bias=False)
        conv.weight.data.copy_(weight)
        if way == "sidestep" and memory_format == torch.channels_last:
            sidestep_strided_1x1(conv)
        conv = conv.to(memory_format=memory_format)
        conv(x.contiguous(memory_format=memory_format)).square().sum().backward()
        grads.append(conv.weight.grad)
    return ((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item()


def cell(isa: str, way: str, channels: int, size: int, threads: int, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    command = [sys.executable, str(Path(__file__).resolve()), "--child", way, str(channels),
               str(size), str(threads)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return "hang"
    if proc.returncode != 0:
        return "crash" if proc.returncode < 0 else f"error {proc.returncode}"
    error = float(proc.stdout.strip().splitlines()[-1])
    return "ok" if error <= 1e-4 else f"wrong {error:.0%}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=C.positive_ints, default=[2, 4, 6, 8, 12, 16])
    p.add_argument("--sizes", type=C.positive_ints, default=[8, 16, 32, 64])
    p.add_argument("--threads", type=C.positive_ints, default=[1, 2])
    p.add_argument("--isas", default=",".join(ISAS),
                   help="comma-separated: default (the CPU's best) and/or an ONEDNN_MAX_CPU_ISA value")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds a cell may take")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", nargs=4, metavar=("WAY", "CHANNELS", "SIZE", "THREADS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        way, *numbers = args.child
        print(child(way, *map(int, numbers)))
        return {}
    rows = []
    for isa in args.isas.split(","):
        for threads in args.threads:
            for channels in args.channels:
                for size in args.sizes:
                    row = {"isa": isa, "threads": threads, "channels": channels, "size": size}
                    row.update({way: cell(isa, way, channels, size, threads, args.timeout)
                                for way in WAYS})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    record = {"benchmark": "onednn_1x1",
              "command": shlex.join(["python", "benchmarks/onednn_1x1.py", *(argv or sys.argv[1:])]),
              "rows": rows, "machine": C.machine()}
    C.publish(args.out, "onednn_1x1", record, _markdown(record))
    return record


def _markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = ["## oneDNN's strided 1x1 weight gradient, plain and sidestepped", "",
             f"`{record['command']}`  ",
             f"{m['cpu_model']}, torch {m['versions']['torch']}, {m['time']}. Input channels -> "
             "8 (or twice as many), 1x1, stride 2, batch 16, channels last; cells not `ok` only.",
             "", "| kernels | threads | channels | px | plain | sidestep |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['isa']} | {r['threads']} | {r['channels']} | {r['size']} | {r['plain']} | "
              f"{r['sidestep']} |" for r in record["rows"] if (r["plain"], r["sidestep"]) != ("ok", "ok")]
    n_bad = sum(r["plain"] != "ok" for r in record["rows"])
    n_side = sum(r["sidestep"] != "ok" for r in record["rows"])
    lines += ["", f"{len(record['rows'])} cells: plain not ok in {n_bad}, sidestepped not ok in {n_side}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
