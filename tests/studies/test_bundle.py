"""Model bundles: written by final.py, loaded with weights_only=True, used by predict.py and export.py."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from studies import export, final, predict
from trainers.bundle import FORMAT, VERSION, load_bundle, make_bundle
from trainers.config import TrialConfig
from trainers.data import load_dataset, make_splits
from trainers.errors import UserError
from trainers.loop import evaluate, train

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"format", "version", "state_dict", "config", "classes", "mean", "std", "image_size", "ema",
          "tta_flip", "seed", "test_acc", "provenance", "plugins"}
CLASSES = tuple(f"class{i}" for i in range(10))


@pytest.fixture(scope="module")
def final_run(tiny_cifar, tmp_path_factory) -> Path:
    """studies/final.py's folder after a 1-epoch, 2-seed run on tiny_cifar."""
    tmp = tmp_path_factory.mktemp("final")
    assert final.main(["--config", "torch_reference", "--preset", "smoke", "--epochs", "1", "--seeds", "2",
                       "--data", str(tiny_cifar), "--results", str(tmp / "results"),
                       "--cache-dir", str(tmp / "cache")]) == 0
    return tmp / "results" / "final" / "torch_reference-smoke"


@pytest.fixture(scope="module")
def trained(tiny_cifar, tmp_path_factory) -> SimpleNamespace:
    """A folder with one bundle of a small model that has learned the colours, with EMA weights
    and flip TTA (so the Classifier's flip averaging is what gets checked)."""
    tmp = tmp_path_factory.mktemp("trained")
    dataset = load_dataset(tiny_cifar, cache_dir=tmp / "cache")
    splits = make_splits(dataset, val_fraction=0.0)
    config = TrialConfig(model="lenet5", depth=5, width=6, epochs=2, batch_size=32, lr=1e-2,
                         warmup_epochs=0.0, aug_ops="flip", ema_decay=0.9, tta_flip=True,
                         val_fraction=0.0, eval_batch_size=64)
    result = train(config, splits, threads=2)
    test = evaluate(result.model, dataset.test_x, dataset.test_y, splits, config)
    folder = tmp / "final" / "lenet"
    folder.mkdir(parents=True)
    torch.save(make_bundle(result.model, config, dataset.classes, splits.mean, splits.std, seed=0,
                           test_acc=test["acc"], provenance={"note": "test"}, plugins=[]),
               folder / "model_seed0.pt")
    (folder / "metrics.json").write_text(json.dumps({"runs": [{"seed": 0, "test_acc": test["acc"]}]}))
    return SimpleNamespace(folder=folder, model=result.model, dataset=dataset, splits=splits,
                           config=config, pred=test["pred"], images=tiny_cifar / "test")


def _lines(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def _one_line_error(capsys, rc: int, after_model_line: bool = False) -> str:
    """stderr holds one line, the error (after predict.py's `model: ...` line where it got that far)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if after_model_line:
        assert lines[0].startswith("model: "), err
        lines = lines[1:]
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- the bundle


def test_final_run_writes_bundles_that_load_with_weights_only(final_run):
    metrics = json.loads((final_run / "metrics.json").read_text())
    config = json.loads((final_run / "config.json").read_text())
    for run in metrics["runs"]:
        path = final_run / f"model_seed{run['seed']}.pt"
        assert run["checkpoint"] == str(path)
        blob = torch.load(path, weights_only=True)
        assert set(blob) == FIELDS
        assert (blob["format"], blob["version"]) == (FORMAT, VERSION)
        assert blob["classes"] == list(CLASSES)
        assert len(blob["mean"]) == len(blob["std"]) == 3
        assert all(0 < m < 1 for m in blob["mean"]) and all(0 < s < 1 for s in blob["std"])
        assert (blob["image_size"], blob["ema"], blob["tta_flip"]) == (32, False, False)
        assert (blob["seed"], blob["test_acc"], blob["plugins"]) == (run["seed"], run["test_acc"], [])
        assert blob["config"] == {**config, "seed": run["seed"]}
        assert blob["provenance"]["study"] == "torch_reference-smoke"
        assert blob["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0]
        assert all(isinstance(v, torch.Tensor) for v in blob["state_dict"].values())
        bundle = load_bundle(path)
        assert bundle.config == TrialConfig.from_dict(blob["config"])
        assert bundle.classes == CLASSES and bundle.seed == run["seed"]
        logits = bundle.classifier()(torch.rand(3, 3, 32, 32))
        assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_a_bundle_refuses_what_weights_only_would_not_load(trained):
    with pytest.raises(TypeError, match=r"provenance\['where'\] holds a PosixPath"):
        make_bundle(trained.model, trained.config, CLASSES, (0.5,) * 3, (0.25,) * 3, seed=0,
                    test_acc=None, provenance={"where": Path("x")}, plugins=[])


def test_classifier_is_evaluate_as_one_module(trained):
    bundle = load_bundle(trained.folder / "model_seed0.pt")
    assert bundle.ema and bundle.tta_flip
    with torch.no_grad():
        logits = bundle.classifier()(trained.dataset.test_x.float() / 255)
    assert torch.equal(logits.argmax(1), trained.pred)


# ---------------------------------------------------------------- predict.py


def test_predict_prints_what_evaluate_predicts(trained, capsys):
    assert predict.main(["--model", str(trained.folder), str(trained.images), "--batch-size", "33"]) == 0
    out, err = capsys.readouterr()
    rows = _lines(out)
    files = sorted(trained.images.rglob("*.png"))
    assert [Path(r[0]) for r in rows] == files  # the loaders' order: class folders, then files
    assert all(len(r) == 3 and r[1] in CLASSES and 0 < float(r[2]) <= 1 for r in rows)
    assert [CLASSES.index(r[1]) for r in rows] == trained.pred.tolist()
    assert len(set(trained.pred.tolist())) > 1  # a model that tells classes apart
    # The probabilities are the softmax of evaluate's logits: normalise, model, average with the mirror.
    x = trained.dataset.test_x.float() / 255
    mean, std = (torch.tensor(v)[:, None, None] for v in (trained.splits.mean, trained.splits.std))
    x = (x - mean) / std
    with torch.no_grad():
        trained.model.eval()
        probs = ((trained.model(x) + trained.model(x.flip(3))) / 2).softmax(1).max(1).values
    assert [float(r[2]) for r in rows] == pytest.approx(probs.tolist(), abs=1e-4)
    assert "model_seed0.pt" in err and "flip TTA" in err


def test_predict_top_k(trained, capsys):
    image = sorted(trained.images.rglob("*.png"))[0]
    assert predict.main(["--model", str(trained.folder), str(image)]) == 0
    top1 = _lines(capsys.readouterr().out)
    assert predict.main(["--model", str(trained.folder), str(image), str(trained.images / "class1"),
                         "--top", "3"]) == 0
    rows = _lines(capsys.readouterr().out)
    assert len(rows) == 11 and all(len(r) == 7 for r in rows)
    assert rows[0][:3] == top1[0]
    for row in rows:
        names, probs = row[1::2], [float(p) for p in row[2::2]]
        assert len(set(names)) == 3 and set(names) <= set(CLASSES)
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 2e-4


def test_folders_are_walked_for_images_only(trained, tmp_path, capsys):
    images = sorted(trained.images.rglob("*.png"))
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    shutil.copy(images[0], tmp_path / "b" / "deeper" / "x.PNG")
    shutil.copy(images[1], tmp_path / "a.png")
    shutil.copy(images[2], tmp_path / ".hidden" / "c.png")
    shutil.copy(images[3], tmp_path / "b" / ".d.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert predict.main(["--model", str(trained.folder), str(tmp_path)]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [r[0] for r in rows] == [str(tmp_path / "a.png"), str(tmp_path / "b" / "deeper" / "x.PNG")]


def test_seed_choice(final_run, tiny_cifar, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(final_run, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    for run in metrics["runs"]:
        run["test_acc"] = {0: 0.2, 1: 0.9}[run["seed"]]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    image = str(tiny_cifar / "test" / "class0" / "0000.png")

    assert predict.main(["--model", str(folder), image]) == 0
    assert "model_seed1.pt" in capsys.readouterr().err  # the best test accuracy
    assert predict.main(["--model", str(folder), "--seed", "0", image]) == 0
    assert "model_seed0.pt" in capsys.readouterr().err
    assert predict.main(["--model", str(folder / "model_seed0.pt"), image]) == 0  # one file
    assert "model_seed0.pt" in capsys.readouterr().err
    err = _one_line_error(capsys, predict.main(["--model", str(folder), "--seed", "7", image]))
    assert "no model_seed7.pt" in err and "seeds there: 0, 1" in err


def _bare_state_dict(path: Path) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a model at all\n" * 20)


def _foreign_pickle(path: Path) -> None:
    torch.save({"format": FORMAT, "path": Path("x")}, path)  # a Path: weights_only will not build it


def _newer(path: Path) -> None:
    torch.save({"format": FORMAT, "version": VERSION + 1}, path)


@pytest.mark.parametrize("write, expected", [
    (_bare_state_dict, "holds bare weights (a checkpoint from an older studies/final.py)"),
    (_garbage, "corrupt, truncated or not a torch.save file"),
    (_foreign_pickle, "Python objects beyond tensors and plain data"),
    (_newer, f"bundle version {VERSION + 1}, newer than this code reads"),
], ids=["bare state_dict", "garbage", "foreign pickle", "newer version"])
def test_not_a_bundle_is_one_line(write, expected, trained, tmp_path, capsys):
    path = tmp_path / "model_seed0.pt"
    write(path)
    with pytest.raises(UserError, match="model_seed0.pt"):
        load_bundle(path)
    for model in (path, tmp_path):  # the file, and the folder that holds it
        err = _one_line_error(capsys, predict.main(["--model", str(model), str(trained.images)]))
        assert str(path) in err and expected in err


@pytest.mark.parametrize("case, expected", [
    ("no such model", "no such folder or file"),
    ("empty folder", "holds no model bundle (model_seed*.pt); run studies/final.py first"),
    ("no such image", "no such image file or folder"),
    ("no images", "no images (.bmp, .gif"),
    ("undecodable image", "cannot decode image"),
    ("top above classes", "--top 11: the model has only 10 classes"),
    ("seed with a file", "--seed picks a file in a --model folder"),
])
def test_predict_errors_are_one_line(case, expected, trained, tmp_path, capsys):
    model, images, extra = str(trained.folder), [str(trained.images)], []
    if case == "no such model":
        model = str(tmp_path / "nope")
    elif case == "empty folder":
        model = str(tmp_path)
    elif case == "no such image":
        images = [str(tmp_path / "nope.png")]
    elif case == "no images":
        (tmp_path / "readme.txt").write_text("hi")
        images = [str(tmp_path)]
    elif case == "undecodable image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
        images = [str(tmp_path / "broken.png")]
    elif case == "top above classes":
        extra = ["--top", "11"]
    elif case == "seed with a file":
        model, extra = str(trained.folder / "model_seed0.pt"), ["--seed", "0"]
    rc = predict.main(["--model", model, *images, *extra])
    assert expected in _one_line_error(capsys, rc, after_model_line=case == "undecodable image")


# ---------------------------------------------------------------- export.py


def _real_and_random(trained) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)  # batch sizes other than the trace's 2
    return [trained.dataset.test_x[:37].float() / 255, torch.rand(5, 3, 32, 32, generator=gen),
            torch.rand(1, 3, 32, 32, generator=gen)]


def test_torchscript_export_matches_the_eager_model(trained, tmp_path, capsys):
    out = tmp_path / "model.ts"
    assert export.main(["--model", str(trained.folder), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "torchscript" in printed and "N x 3 x 32 x 32" in printed and "class9" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["model.ts"]  # written atomically: no leftovers
    eager = load_bundle(trained.folder / "model_seed0.pt").classifier()
    extra = {"tunebench.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still loadable
        scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["tunebench.json"])["classes"] == list(CLASSES)
    with torch.no_grad():
        for x in _real_and_random(trained):
            torch.testing.assert_close(scripted(x), eager(x), atol=1e-4, rtol=0)


def _onnx_packages():
    """onnxruntime, once onnx and onnxscript are known to import; a skip where they are missing,
    except in CI, whose test extra installs them."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            why = f"{name} is not installed (pip install -e '.[export]'), so the ONNX export is not checked"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{why}; the test extra should have installed it", pytrace=False)
            pytest.skip(why)
    return module


def test_onnx_export_matches_the_eager_model(trained, tmp_path, capsys):
    ort = _onnx_packages()
    out = tmp_path / "model.onnx"
    assert export.main(["--model", str(trained.folder), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote onnx model" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["tunebench"])
    assert meta["classes"] == list(CLASSES) and meta["image_size"] == 32
    eager = load_bundle(trained.folder / "model_seed0.pt").classifier()
    with torch.no_grad():
        for x in _real_and_random(trained):
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            torch.testing.assert_close(got, eager(x), atol=1e-4, rtol=0)


def test_onnx_without_its_packages_says_what_to_install(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "_ONNX_PACKAGES", ("onnx", "no_such_package_here"))
    rc = export.main(["--model", str(trained.folder), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = _one_line_error(capsys, rc)
    assert "pip install no_such_package_here" in err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- a plugin's model

PLUGIN = '''
from torch import nn

from trainers.models import register_model


@register_model("bundle_plugin_net", depths=(1,), default_depth=1, default_width=8, widths_hint=(8,),
                has_drop_path=False, description="tests/studies/test_bundle.py: a conv and a linear head")
def bundle_plugin_net(num_classes, depth, width):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))
'''


def test_a_plugin_model_needs_its_plugin(trained, tmp_path, capsys):
    from trainers.models import create_model
    from trainers.plugins import load_plugins

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    images = trained.images / "class3"
    # Without --plugin, in a fresh process (the registry is per process): one line naming the plugin.
    folder = tmp_path / "final" / "plugged"
    folder.mkdir(parents=True)
    load_plugins([str(plugin)])  # once per process, as predict.py's --plugin does it
    config = TrialConfig(model="bundle_plugin_net", depth=1, width=8, val_fraction=0.0)
    model = create_model("bundle_plugin_net", 10, depth=1, width=8)
    torch.save(make_bundle(model, config, CLASSES, (0.5,) * 3, (0.25,) * 3, seed=0, test_acc=None,
                           provenance={}, plugins=[str(plugin)]), folder / "model_seed0.pt")
    proc = subprocess.run([sys.executable, str(ROOT / "studies" / "predict.py"), "--model", str(folder),
                           str(images)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "model 'bundle_plugin_net' is not registered" in proc.stderr
    assert f"--plugin {plugin.resolve()}" in proc.stderr
    # With it: predictions, and an export.
    assert predict.main(["--model", str(folder), "--plugin", str(plugin), str(images)]) == 0
    rows = _lines(capsys.readouterr().out)
    assert len(rows) == 10 and all(r[1] in CLASSES for r in rows)
    out = tmp_path / "plugged.ts"
    assert export.main(["--model", str(folder), "--plugin", str(plugin), "--format", "torchscript",
                        "--out", str(out)]) == 0
    assert out.is_file()
