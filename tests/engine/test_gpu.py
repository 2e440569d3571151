"""GPU smoke tests (``make test-gpu``): one short training run and one prediction on CUDA in each of
the GPU code paths, each compared with the same run on the CPU within a stated tolerance. Skipped
without CUDA; the DDP test needs two GPUs. Nobody here has run them on a GPU yet."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toy import ToyTask, toy_data, toy_model
from volslice.config import TrainConfig
from volslice.engine import Trainer
from volslice.runs import load_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
HERE = Path(__file__).parent

# (config changes, tolerance on the validation score and weights against the CPU run)
MODES = {
    "fp32": (dict(amp="off"), 1e-4),
    "fp16 autocast + grad scaler": (dict(amp="fp16"), 2e-2),
    "bf16 autocast": (dict(amp="bf16"), 3e-2),
    "channels-last": (dict(amp="off", channels_last=True), 1e-4),
    "torch.compile": (dict(amp="off", compile=True), 1e-3),
    "pinned memory + loader workers": (dict(amp="off", workers=2), 1e-4),
}


def run(tmp_path, device, **changes):
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=2, batch_size=8, lr=1e-2, warmup_epochs=1.0, progress=False,
                      seed=3, device=device, **{"workers": 0, **changes})
    trainer = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(32, seed=1), cfg, tmp_path)
    history = trainer.fit()
    weights = {k: v.float().cpu() for k, v in load_checkpoint(tmp_path / "last.pt")["model"].items()}
    return history[-1]["val_score"], weights


@pytest.mark.parametrize("mode", list(MODES))
def test_cuda_training_and_prediction_match_the_cpu(tmp_path, mode):
    changes, tolerance = MODES[mode]
    cpu_score, cpu_weights = run(tmp_path / "cpu", "cpu", **{k: v for k, v in changes.items() if k == "workers"})
    gpu_score, gpu_weights = run(tmp_path / "gpu", "cuda", **changes)
    assert math.isfinite(gpu_score)
    assert gpu_score == pytest.approx(cpu_score, rel=tolerance, abs=tolerance)
    for key, value in cpu_weights.items():
        torch.testing.assert_close(gpu_weights[key], value, rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_over_nccl_trains_the_same_model_as_one_gpu(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from toy import ToyTask, toy_data, toy_model\n"
        "from volslice.config import TrainConfig\n"
        "from volslice.engine import Trainer\n"
        "out, batch = sys.argv[1], int(sys.argv[2])\n"
        "cfg = TrainConfig(out_dir=out, epochs=2, batch_size=batch, lr=1e-2, workers=0, progress=False, amp='off',"
        " seed=5, device='auto')\n"
        "Trainer(toy_model(), ToyTask(), toy_data(), toy_data(30, seed=1), cfg, out).fit()\n")
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "8"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                    str(tmp_path / "two"), "4"], check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert two["step"] == one["step"]
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5)
