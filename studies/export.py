"""Export a final run's model to TorchScript or ONNX, normalisation included.

    python studies/export.py --model results/final/STUDY --format onnx --out model.onnx

The exported model takes float images ``N x 3 x H x W`` in [0, 1] at the
bundle's image size (any batch size N) and returns logits, one per class, with
the bundle's normalisation and flip averaging inside. The class names, image
size and normalisation statistics travel in the file's metadata (TorchScript:
the extra file ``tunebench.json``; ONNX: metadata_props). ONNX export needs
``pip install 'tunebench[export]'`` (onnx, onnxscript; onnxruntime to run it).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import cli
from studies.predict import add_model_options, describe, open_model
from trainers.errors import UserError

FORMATS = ("torchscript", "onnx")
_EXAMPLE_BATCH = 2  # not 0 or 1, which tracing and torch.export would specialise on
_ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx.export's (dynamo) exporter needs both


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    add_model_options(parser)
    parser.add_argument("--format", choices=FORMATS, required=True, help="torchscript or onnx")
    parser.add_argument("--out", type=Path, required=True, help="file to write")
    return parser


def metadata(bundle: Any) -> dict[str, Any]:
    """What a user of the exported file needs to know, JSON-ready."""
    return {"format": "tunebench-export", "input": "float32 N x 3 x H x W in [0, 1], RGB",
            "output": "logits", "image_size": bundle.image_size, "classes": list(bundle.classes),
            "mean": list(bundle.mean), "std": list(bundle.std), "tta_flip": bundle.tta_flip,
            "ema": bundle.ema, "seed": bundle.seed, "test_acc": bundle.test_acc,
            "model": bundle.config.model, "config": bundle.config.to_dict()}


def export_torchscript(classifier: Any, example: Any, out: Path, meta: dict[str, Any]) -> None:
    """Traces ``classifier`` on ``example`` and saves it (batch size stays free)."""
    import torch

    with warnings.catch_warnings():
        # Deprecated in favour of torch.export, but still what libtorch (C++) and
        # older runtimes load; the trace of these feed-forward models is exact.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(classifier, example, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"tunebench.json": json.dumps(meta)})


def export_onnx(classifier: Any, example: Any, out: Path, meta: dict[str, Any]) -> None:
    """Exports ``classifier`` to ONNX with a dynamic batch axis (input ``image``, output ``logits``).

    Raises:
        UserError: a package the exporter needs is not installed.
    """
    missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                        "(or pip install 'tunebench[export]')")
    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(classifier, (example,), input_names=["image"],
                                    output_names=["logits"], dynamic_shapes={"x": {0: batch}},
                                    dynamo=True, external_data=False, verbose=False)
    program.model.metadata_props["tunebench"] = json.dumps(meta)
    program.save(str(out), external_data=False)


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from studies.files import atomic_path

    bundle = open_model(args)
    if args.out.is_dir():
        raise UserError(f"--out {str(args.out)!r} is a folder; pass a file name")
    print(f"model: {describe(bundle)}")
    classifier = bundle.classifier("cpu")
    size = bundle.image_size
    example = torch.rand(_EXAMPLE_BATCH, 3, size, size)
    write = export_torchscript if args.format == "torchscript" else export_onnx
    with torch.no_grad(), atomic_path(args.out) as tmp:
        write(classifier, example, tmp, metadata(bundle))
    classes = ", ".join(bundle.classes)
    print(f"wrote {args.format} model {args.out}: input float32 N x 3 x {size} x {size} in [0, 1] "
          f"(RGB; normalisation{' and flip averaging' if bundle.tta_flip else ''} inside), "
          f"output logits N x {len(bundle.classes)} over classes: {classes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
