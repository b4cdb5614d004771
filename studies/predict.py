"""Classify images with a model from a final run.

    python studies/predict.py --model results/final/STUDY photo.jpg more_photos/ [--top 3]

Prints one line per image, ``path<TAB>class<TAB>probability`` (``--top K``:
K class/probability pairs, most probable first). ``--model`` is a
RESULTS/final/STUDY folder written by studies/final.py (the seed with the best
test accuracy, or ``--seed S``) or one model_seed*.pt file. Folders are walked
recursively for image files; hidden files are skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import cli
from trainers.errors import UserError

_CHECKPOINT = re.compile(r"model_seed(\d+)\.pt")


def add_model_options(parser: cli.Parser) -> None:
    """``--model``, ``--seed`` and ``--plugin``: which bundle, shared with studies/export.py."""
    parser.add_argument("--model", type=Path, required=True, metavar="FOLDER|FILE",
                        help="a RESULTS/final/STUDY folder written by studies/final.py, or one "
                        "model_seed*.pt file in it")
    parser.add_argument("--seed", type=int, metavar="S", help="use model_seed{S}.pt of the folder "
                        "(default: the seed with the best test accuracy in its metrics.json)")
    cli.add_plugin(parser)


def _seeds(folder: Path) -> dict[int, Path]:
    found = {}
    for path in folder.iterdir():
        match = _CHECKPOINT.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _best_seed(folder: Path, seeds: dict[int, Path]) -> int:
    """The seed with the best ``test_acc`` among the folder's runs (metrics.json: JSON only)."""
    metrics = folder / "metrics.json"
    available = ", ".join(map(str, seeds))
    if not metrics.is_file():
        if len(seeds) == 1:
            return next(iter(seeds))
        raise UserError(f"{str(folder)!r} has no metrics.json to pick the best seed from; "
                        f"pass --seed (seeds there: {available})")
    try:
        runs = json.loads(metrics.read_text(encoding="utf-8"))["runs"]
        scored = [(float(r["test_acc"]), -int(r["seed"])) for r in runs
                  if int(r["seed"]) in seeds and r.get("test_acc") is not None]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{str(metrics)!r} cannot be read ({type(err).__name__}: {err}); "
                        f"pass --seed (seeds there: {available})") from None
    if not scored:
        raise UserError(f"{str(metrics)!r} has no test accuracy for the seeds there ({available}); "
                        "pass --seed")
    return -max(scored)[1]  # the best accuracy; on a tie, the lowest seed


def find_model(model: Path, seed: int | None) -> Path:
    """The bundle file that ``--model`` and ``--seed`` name.

    Raises:
        UserError: no such folder or file, a folder without model_seed*.pt
            files, an unknown seed (the available ones are listed), or
            ``--seed`` with a file.
    """
    if model.is_file():
        if seed is not None:
            raise UserError(f"--seed picks a file in a --model folder, but {str(model)!r} is a file; "
                            "pass its folder, or leave --seed out")
        return model
    if not model.is_dir():
        raise UserError(f"--model {str(model)!r}: no such folder or file; pass a RESULTS/final/STUDY "
                        "folder written by studies/final.py")
    seeds = _seeds(model)
    if not seeds:
        raise UserError(f"--model {str(model)!r} holds no model bundle (model_seed*.pt); "
                        "run studies/final.py first")
    if seed is None:
        seed = _best_seed(model, seeds)
    if seed not in seeds:
        raise UserError(f"--seed {seed}: no model_seed{seed}.pt in {str(model)!r}; "
                        f"seeds there: {', '.join(map(str, seeds))}")
    return seeds[seed]


def open_model(args: Any) -> Any:
    """Imports the plugins, then loads the bundle ``--model``/``--seed`` name (trainers.bundle.Bundle)."""
    from trainers.bundle import load_bundle
    from trainers.plugins import load_plugins

    load_plugins(args.plugin)
    return load_bundle(find_model(args.model, args.seed))


def describe(bundle: Any) -> str:
    """One line about a bundle: file, architecture, seed, test accuracy, flags."""
    c = bundle.config
    acc = f", test accuracy {bundle.test_acc:.4f}" if bundle.test_acc is not None else ""
    flags = "".join([", EMA weights" if bundle.ema else "", ", flip TTA" if bundle.tta_flip else ""])
    return (f"{bundle.path} ({c.model}-{c.depth or 'default'} width {c.width or 'default'}, "
            f"{bundle.image_size}px, seed {bundle.seed}{acc}{flags})")


def find_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders walked recursively for image files (sorted, hidden ones skipped).

    Raises:
        UserError: a path that does not exist, or no images at all.
    """
    from trainers.data import IMAGE_SUFFIXES

    images: list[Path] = []
    for path in inputs:
        if path.is_file():
            images.append(path)
        elif path.is_dir():
            images += sorted(p for p in path.rglob("*")
                             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                             and not any(part.startswith(".") or part == "__MACOSX"
                                         for part in p.relative_to(path).parts))
        else:
            raise UserError(f"{str(path)!r}: no such image file or folder")
    if not images:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                        f"{', '.join(repr(str(p)) for p in inputs)}")
    return images


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    add_model_options(parser)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER",
                        help="image files, and folders searched recursively for images")
    parser.add_argument("--top", type=cli.positive_int, default=1, metavar="K",
                        help="print the K most probable classes per image (default: 1)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64,
                        help="images per forward pass (default: 64)")
    return parser


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from trainers.bundle import predict

    bundle = open_model(args)
    if args.top > len(bundle.classes):
        raise UserError(f"--top {args.top}: the model has only {len(bundle.classes)} classes")
    images = find_images(args.images)
    print(f"model: {describe(bundle)}", file=sys.stderr)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        for path, ranked in predict(bundle, images, top=args.top, batch_size=args.batch_size,
                                    device=device):
            print("\t".join([str(path), *(f"{name}\t{p:.4f}" for name, p in ranked)]), flush=True)
    except BrokenPipeError:  # the reader (`| head`, say) has had enough: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
