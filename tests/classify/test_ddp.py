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


NAN_ON_RANK_ONE = """
import sys
from pathlib import Path

import torch
from cifarlab.classify import ddp
from cifarlab.classify.artifact import build_classifier
from cifarlab.classify.config import ClassifyConfig
from cifarlab.classify.trainer import Trainer, TrainingDiverged
from cifarlab.data import ImageSet

torch.manual_seed(0)
d, device = ddp.setup(torch.device("cpu"))
classes = ["a", "b", "c"]
images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
config = ClassifyConfig(recipe="baseline", model="baseline_cnn", batch_size=8, epochs=2, device="cpu")
trainer = Trainer(config, build_classifier(config.model, {}, classes), ImageSet(images, torch.arange(32) % 3, classes),
                  device, d)
if d.rank == 1:  # this process alone sees a non-finite loss
    trainer.loss_fn = lambda logits, y: torch.nn.functional.cross_entropy(logits, y) * float("nan")
try:
    trainer.train_epoch()
    outcome = "finished"
except TrainingDiverged as e:
    outcome = str(e)
(Path(sys.argv[1]) / f"rank{d.rank}.txt").write_text(outcome)  # files: the ranks share one stdout
ddp.leave(d, 0)
"""


def test_a_nan_on_one_process_stops_every_process(tmp_path):
    script = tmp_path / "nan_on_rank_one.py"
    script.write_text(NAN_ON_RANK_ONE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    written = sorted(p.name for p in tmp_path.glob("rank*.txt"))
    assert done.returncode == 0, f"results written: {written}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "rank0.txt").read_text() == ("the training loss became non-finite on another process at "
                                                    "epoch 1: lower --lr (the best checkpoint so far is intact)")
    assert (tmp_path / "rank1.txt").read_text() == ("the training loss became nan at epoch 1: lower --lr "
                                                    "(the best checkpoint so far is intact)")


def test_ctrl_c_under_torchrun_saves_the_run(tiny_folder, tmp_path):
    """A terminal's Ctrl-C reaches torchrun and every worker: rank 0 still writes a complete,
    resumable run folder."""
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cifarlab", "classify", "train", "--recipe", "baseline", "--data", str(tiny_folder),
               "--epochs", "100000", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--logger", "none",
               "--out", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 90
        while not (out / "last.pt").exists() and time.time() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pt").exists(), "training never saved a first epoch"
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by"] == "interrupted" and metrics["processes"] == 2, err[-2000:]
    assert (out / "model.pt").is_file() and (out / "model.pt2").is_file()
    assert f"--resume {out}" in err
