"""The sidestep of oneDNN's strided 1x1 weight-gradient bug (trainers/onednn.py)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.onednn import sidestep_strided_1x1

ROOT = Path(__file__).resolve().parents[2]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 1, stride=2, bias=False),  # affected
        nn.Conv2d(6, 8, 1, stride=(2, 1)),  # affected, uneven stride, with a bias
        nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 3x3: a sound kernel
        nn.Conv2d(16, 32, 1, stride=2),  # 16 channels: a full block, sound
        nn.Conv2d(32, 8, 1),  # stride 1: sound
        nn.Conv2d(8, 8, 1, stride=2, groups=2),  # grouped: another kernel
    )


def test_rewrites_only_the_affected_layers_and_keeps_outputs_gradients_and_weights():
    plain, patched = _net(), _net()
    assert sidestep_strided_1x1(patched) == 2
    assert [m.stride for m in patched] == [(1, 1), (1, 1), (2, 2), (2, 2), (1, 1), (2, 2)]
    assert patched.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(patched.state_dict().values(),
                                                plain.state_dict().values()))
    x = torch.randn(4, 3, 33, 30)  # odd and even sides: the output sizes must match too
    out_plain, out_patched = plain(x), patched(x)
    assert out_patched.shape == out_plain.shape == (4, 8, 2, 2)
    torch.testing.assert_close(out_patched, out_plain)
    out_plain.square().sum().backward()
    out_patched.square().sum().backward()
    for a, b in zip(plain.parameters(), patched.parameters()):
        torch.testing.assert_close(b.grad, a.grad)
    # A deep copy (the EMA model is one) subsamples too; a second call finds nothing left to do.
    torch.testing.assert_close(copy.deepcopy(patched)(x), out_plain.detach())
    assert sidestep_strided_1x1(patched) == 0


def test_with_avx2_kernels_the_sidestepped_weight_gradient_is_right(tmp_path):
    """oneDNN's AVX2 kernel gets 4 -> 8 channels, stride 2, channels last wrong (2 threads) or
    crashes (1 thread) at 16 px; benchmarks/onednn_1x1.py's children compute it sidestepped too."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "onednn_1x1.py"), "--isas", "AVX2",
                           "--channels", "4", "--sizes", "16", "--threads", "1,2", "--timeout", "60",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "onednn_1x1.json").read_text())["rows"]
    assert [(r["threads"], r["sidestep"]) for r in rows] == [(1, "ok"), (2, "ok")], rows


def test_a_width_4_resnet_trains_the_same_in_channels_last_with_avx2_kernels():
    """The trainer end to end: a ResNet at width 4 has 4 -> 8 stride-2 shortcuts. Channels last
    (the CPU default) must give the contiguous run's losses, not a hang, a crash or other ones."""
    script = (
        "import torch\n"
        "from trainers.config import TrialConfig\n"
        "from trainers.data import Splits\n"
        "from trainers.loop import train\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8, generator=g)\n"
        "y = torch.arange(64) % 4\n"
        "s = Splits(train_x=x, train_y=y, val_x=x[:16], val_y=y[:16], classes=tuple('abcd'),"
        " mean=(0.5,) * 3, std=(0.25,) * 3)\n"
        "for cl in (False, True):\n"
        "    cfg = TrialConfig(depth=10, width=4, epochs=2, batch_size=16, aug_strength=0.0,"
        " channels_last=cl)\n"
        "    print([round(h['train_loss'], 4) for h in train(cfg, s, threads=2).history])\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    contiguous, channels_last = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert len(contiguous) == 2
    assert channels_last == pytest.approx(contiguous, rel=1e-3)
