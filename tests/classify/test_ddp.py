"""A 2-process torchrun run on the CPU (gloo) finishes and writes one run folder."""
import json
import os
import subprocess
import sys


def test_two_process_torchrun_writes_one_run_folder(tiny_folder, tmp_path):
    out = tmp_path / "runs" / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cifarlab", "classify", "train", "--recipe", "baseline", "--data", str(tiny_folder),
               "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--logger", "none",
               "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(tmp_path / "runs") == ["ddp"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["epochs"] == 2
    assert (out / "model.pt2").is_file() and (out / "last.pt").is_file()
    assert done.stdout.strip().splitlines() == [str(out)]  # only rank 0 speaks
