"""The command line: one-line errors for user mistakes, and the commands' happy paths."""
import json

import pytest
import torch
import torchvision.transforms.v2.functional as F

from cifarlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["transform", "train", "--pipeline", "resize:28x28,blur"], "error: unknown pipeline step 'blur'; valid steps:"),
    (["transform", "train", "--pipeline", "random_crop:24"], "is random: a network can only learn"),
    (["transform", "train", "--model", "vgg"], "error: unknown transform model 'vgg'; valid models:"),
    (["transform", "train", "--lr", "-0.1"], "error: --lr must be a positive number"),
    (["transform", "train", "--batch-size", "0"], "error: --batch-size must be a positive integer"),
    (["transform", "train", "--data", "/no/such/folder"], "error: data folder '/no/such/folder' does not exist"),
    pytest.param(["transform", "train", "--device", "cuda"], "error: device 'cuda' is not present here; available: cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["transform", "eval", "/no/such/run"], "error: run folder '/no/such/run' does not exist"),
    (["transform", "export", "."], "error: no checkpoint at"),
])
def test_user_mistakes_get_one_line_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_empty_folder_and_corrupt_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "transform", "train", "--data", str(tmp_path))
    assert code == 2 and "holds no images" in err
    (tmp_path / "model.pt").write_text("not a checkpoint")
    code, _, err = run(capsys, "transform", "eval", str(tmp_path))
    assert code == 2 and "unreadable or corrupt" in err


def test_help_everywhere(capsys):
    for argv in (["--help"], ["run", "--help"], ["transform", "--help"], ["transform", "train", "--help"],
                 ["transform", "apply", "--help"], ["transform", "compare", "--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "Usage:" in out


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    """A run whose network holds the exact operator: quick, and its outputs are known."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["transform", "train", "--data", "sample", "--init", "exact", "--epochs", "1", "--lr", "1e-9",
                 "--logger", "none", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_config_that_rebuilds_the_run(exact_run):
    config = json.loads((exact_run / "config.json").read_text())
    assert config["pipeline"] == "resize:28x28,grayscale,hflip,vflip" and config["init"] == "exact"
    assert config["model"] == "sepnet" and config["lr"] == 1e-9


def test_eval_reports_metrics_json(capsys, exact_run):
    code, out, _ = run(capsys, "transform", "eval", str(exact_run), "--data", "sample")
    assert code == 0
    scores = json.loads(out)
    assert scores["cosine_accuracy"] == 1.0 and float(scores["psnr"]) > 100


def test_apply_writes_pngs_in_the_same_tree_and_refuses_src(capsys, exact_run, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    F.to_pil_image(image).save(src / "a" / "one.png")
    (src / "a" / "bad.jpg").write_bytes(b"broken")
    code, out, err = run(capsys, "transform", "apply", str(exact_run), str(src), str(tmp_path / "dst"))
    assert code == 0 and "wrote 1 image(s)" in out and "skipped 1" in out
    written = F.pil_to_tensor(__import__("PIL.Image").Image.open(tmp_path / "dst" / "a" / "one.png"))
    expected = F.vflip(F.hflip(F.rgb_to_grayscale(F.resize(image.float() / 255, [28, 28], antialias=True))))
    assert written.shape == (1, 28, 28)
    assert (written.float() / 255 - expected).abs().max() <= 1 / 255 + 1e-6
    code, _, err = run(capsys, "transform", "apply", str(exact_run), str(src), str(src / "out"))
    assert code == 2 and "refusing to write into the source folder" in err


def test_resume_of_a_corrupt_run_is_refused(capsys, exact_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((exact_run / "config.json").read_text())
    (broken / "last.pt").write_bytes(b"truncated")
    code, _, err = run(capsys, "transform", "train", "--resume", str(broken), "--quiet")
    assert code == 2 and "is unreadable or corrupt" in err
