"""One test per class of defect found by trying bad inputs and faults (issue 13), each with the
issue's reproduction; docs/reliability.md lists them."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabError
from cifarlab.io import write_bytes, write_text
from cifarlab.runs import RunFolder


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- code execution ---------------------------------------------------------------------------

def test_pt2_files_hold_no_pickled_sample_inputs(sandbox):
    with zipfile.ZipFile(sandbox / "T" / "model.pt2") as archive:
        sizes = {info.filename.split("/", 1)[1]: info.file_size for info in archive.infolist()}
    assert sizes["data/sample_inputs/model.pt"] == 0
    program = torch.export.load(str(sandbox / "T" / "model.pt2")).module()
    assert program(torch.rand(3, 3, 32, 32)).shape == (3, 1, 28, 28)


# ---- data loss ---------------------------------------------------------------------------------

def test_export_never_overwrites_a_checkpoint_or_any_file_without_asking(capsys, sandbox):
    run = sandbox / "T"
    photo = sandbox / "photo.png"
    photo.write_bytes(b"a photo")
    checkpoint = (run / "model.pt").read_bytes()
    for out, message in [(run / "model.pt", "must end in .pt2"), (photo, "must end in .pt2"),
                         (sandbox / "data", "is a folder"), (run / "model.pt2", "add --overwrite")]:
        code, _, err = cli(capsys, "transform", "export", run, "--out", out)
        assert code == 2 and message in err
    code, _, err = cli(capsys, "transform", "export", run, "--out", run / "model.pt", "--overwrite")
    assert code == 2
    assert (run / "model.pt").read_bytes() == checkpoint and photo.read_bytes() == b"a photo"
    assert cli(capsys, "transform", "export", run, "--overwrite")[0] == 0


def test_apply_never_writes_over_an_input_nor_twice_to_one_output(capsys, sandbox):
    a, b = sandbox / "data" / "cat" / "000.png", sandbox / "data" / "dog" / "000.png"
    (sandbox / "t" / "src" / "src").mkdir(parents=True)
    (sandbox / "t" / "src" / "img.png").write_bytes(a.read_bytes())
    (sandbox / "t" / "src" / "src" / "img.png").write_bytes(b.read_bytes())
    code, _, err = cli(capsys, "transform", "apply", sandbox / "T", sandbox / "t" / "src", sandbox / "t")
    assert code == 2 and "inside the source folder" in err
    assert (sandbox / "t" / "src" / "img.png").read_bytes() == a.read_bytes()

    (sandbox / "s").mkdir()
    (sandbox / "s" / "x.png").write_bytes(a.read_bytes())
    Image.open(b).save(sandbox / "s" / "x.jpg")
    code, out, _ = cli(capsys, "transform", "apply", sandbox / "T", sandbox / "s", sandbox / "d")
    assert code == 0 and "wrote 2" in out
    assert sorted(p.name for p in (sandbox / "d").glob("*.png")) == ["x.jpg.png", "x.png.png"]
    code, out, _ = cli(capsys, "transform", "apply", sandbox / "T", sandbox / "s", sandbox / "d")
    assert code == 0 and "wrote 0" in out and "kept 2 existing" in out     # a re-run resumes, not rewrites
    code, out, _ = cli(capsys, "transform", "apply", sandbox / "T", sandbox / "s", sandbox / "d", "--overwrite")
    assert "wrote 2" in out


def test_one_out_folder_is_claimed_by_exactly_one_process(tmp_path):
    winners, errors = [], []

    def claim():
        try:
            winners.append(RunFolder.create(tmp_path / "CC"))
        except CifarlabError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(errors) == 7
    write_text(tmp_path / "CC" / "config.json", "{}")
    winners[0].release()
    with pytest.raises(CifarlabError, match="already exists and is not empty"):
        RunFolder.create(tmp_path / "CC")


def test_a_folder_in_use_is_refused_by_a_second_process(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", per_class=4)
    with RunFolder.create(tmp_path / "CC"):
        result = subprocess.run([sys.executable, "-m", "cifarlab", "classify", "train", "--data", str(data),
                                 "--epochs", "1", "--out", str(tmp_path / "CC"), "--quiet"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "in use by another cifarlab process" in result.stderr
    assert not (tmp_path / "CC" / "config.json").exists()


def test_classify_eval_never_replaces_training_artifacts(capsys, sandbox):
    run = sandbox / "C"
    confusion = (run / "confusion.png").read_bytes()
    assert cli(capsys, "classify", "eval", run, "--data", sandbox / "data", "--out", run)[0] == 0
    assert (run / "confusion.png").read_bytes() == confusion
    assert (run / "eval.json").is_file() and (run / "eval-confusion.png").is_file()
    code, _, err = cli(capsys, "classify", "eval", run, "--data", sandbox / "data", "--out", run)
    assert code == 2 and "--overwrite" in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_write_bytes_is_atomic_follows_the_umask_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    old = os.umask(0o077)
    try:
        path = write_bytes(tmp_path / "d" / "a.png", b"x" * 70000)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x" * 70000 and path.stat().st_mode & 0o777 == 0o600

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(CifarlabError, match="cannot write .*a.png.*No space left on device"):
        write_bytes(tmp_path / "d" / "a.png", b"y")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.png"]   # no temporary file left
    assert path.read_bytes() == b"x" * 70000                                    # the old file intact


def test_runs_apply_and_exports_are_readable_by_others_under_the_usual_umask(sandbox):
    for path in [sandbox / "T" / "model.pt", sandbox / "T" / "report.md", sandbox / "C" / "model.pt2"]:
        assert path.stat().st_mode & 0o044 == 0o044, path   # the fixtures ran under umask 022


# ---- resume -----------------------------------------------------------------------------------

def test_resume_keeps_the_saved_limits_and_continues(capsys, tmp_path, make_folder):
    data = make_folder(tmp_path / "data", per_class=4)
    run = tmp_path / "F"
    assert cli(capsys, "transform", "train", "--data", data, "--epochs", "2", "--time-budget", "1000",
               "--patience", "1000", "--init", "random", "--out", run, "--quiet", "--logger", "none")[0] == 0
    assert cli(capsys, "transform", "train", "--resume", run, "--epochs", "3", "--quiet")[0] == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["time_budget"]) == (3, 1000)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
    assert cli(capsys, "transform", "train", "--resume", run, "--quiet")[0] == 0   # nothing new: the caps stay
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["time_budget"]) == (3, 1000)


@pytest.mark.parametrize("kind, extra", [("transform", ["--pipeline", "vflip", "--lr", "0.5", "--model", "conv2"]),
                                         ("classify", ["--lr", "0.5", "--recipe", "seed004"])])
def test_resume_refuses_the_options_it_would_ignore(capsys, sandbox, kind, extra):
    run = sandbox / ("T" if kind == "transform" else "C")
    code, _, err = cli(capsys, kind, "train", "--resume", run, *extra, "--data", "other", "--out", sandbox / "x")
    assert code == 2 and "cannot change on resume" in err
    for flag in [e for e in extra if e.startswith("--")] + ["--data", "--out"]:
        assert flag in err


# ---- tracebacks for user mistakes ---------------------------------------------------------------

def test_the_python_api_converts_other_float_precisions_and_takes_an_empty_batch(sandbox):
    for name, shape in [("T", (1, 28, 28)), ("C", (3,))]:
        net = cifarlab.load(sandbox / name)
        x = torch.rand(4, 3, 32, 32)
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            out = net(x.to(dtype))
            assert out.dtype == torch.float32 and out.shape == (4, *shape)
        assert torch.allclose(net(x.double()), net(x), atol=1e-5)
        assert net(torch.rand(0, 3, 32, 32)).shape == (0, *shape)
        with pytest.raises(CifarlabError, match="uint8 images or float images"):
            net(torch.ones(1, 3, 32, 32, dtype=torch.int32))


def write_png16(path: Path, value: int, size: int = 32) -> Path:
    Image.fromarray(np.full((size, size), value, np.uint16)).save(path)
    return path


def test_16_bit_images_are_scaled_not_clipped(capsys, sandbox):
    from cifarlab.data.sources import read_image
    grey = write_png16(sandbox / "grey16.png", 30000)
    assert Image.open(grey).mode.startswith("I")
    assert read_image(grey).unique().tolist() == [117]          # round(30000 * 255 / 65535)
    code, out, _ = cli(capsys, "classify", "predict", sandbox / "C", grey, sandbox / "data" / "cat" / "000.png")
    assert code == 0 and len(out.splitlines()) == 2


def test_a_checkpoint_without_its_weights_is_named_damaged(sandbox):
    ckpt = torch.load(sandbox / "T" / "model.pt", weights_only=True)
    del ckpt["state_dict"]
    torch.save(ckpt, sandbox / "T" / "model.pt")
    with pytest.raises(CifarlabError, match="damaged: its 'state_dict' is missing"):
        cifarlab.load(sandbox / "T")


# ---- silent wrong results -----------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["transform", "train", "--pipeline", "rotate:nan"], "finite number"),
    (["transform", "train", "--pipeline", "adjust_gamma:inf"], "finite number"),
    (["transform", "train", "--pipeline", "resize:100000"], "from 1 to 256"),
    (["transform", "train", "--pipeline", "adjust_brightness:0"], "same output for every image"),
    (["classify", "train", "--augment", "rotate:"], "empty amount"),
    (["classify", "train", "--augment", "crop:nan"], "from 0 to 16"),
    (["classify", "train", "--augment", "cutout:2.5"], "whole number"),
])
def test_nonsense_step_arguments_are_refused(capsys, sandbox, argv, message):
    code, _, err = cli(capsys, *argv, "--data", sandbox / "data", "--out", sandbox / "x", "--epochs", "1")
    assert code == 2 and message in err, err
    assert not (sandbox / "x").exists()


@pytest.mark.parametrize("scale, shift, message", [(255, 0, "scaled 0-255"), (2, -1, "normalised")])
def test_float_images_outside_0_1_are_refused_by_the_classifier_and_on_request_by_the_transform(
        sandbox, scale, shift, message):
    x = torch.rand(8, 3, 32, 32) * scale + shift
    with pytest.raises(CifarlabError, match=message):
        cifarlab.load(sandbox / "C")(x)
    transform = cifarlab.load(sandbox / "T")
    assert transform(x).shape == (8, 1, 28, 28)   # the documented contract: not checked on the hot path
    for mode in ("first", "full"):
        transform.range_check = mode
        with pytest.raises(CifarlabError, match=message):
            transform(x)
    assert transform(torch.rand(8, 3, 32, 32)).shape == (8, 1, 28, 28)


# ---- faults ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["transform", "classify"])
def test_sigterm_saves_like_ctrl_c_and_leaves_no_temporary_file(tmp_path, make_folder, kind):
    data = make_folder(tmp_path / "data", per_class=16)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cifarlab", kind, "train", "--data", str(data), "--epochs", "100000",
               "--out", str(run), "--logger", "none", "--quiet"] + (["--patience", "100000", "--init", "random"] * (kind == "transform"))
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)   # polls for the event (the first saved state), bounded by the deadline
        assert (run / "last.pt").exists(), "the run never saved its first epoch"
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_by"] == "interrupted"
    assert not [p for p in run.iterdir() if ".tmp." in p.name]


def test_stale_temporary_files_of_a_killed_process_are_removed_when_the_folder_is_opened(sandbox):
    stale = sandbox / "T" / ".last.tmp.12345-abcd.pt"
    stale.write_bytes(b"")
    with RunFolder.open(sandbox / "T"):
        assert not stale.exists()


# ---- unclear messages ---------------------------------------------------------------------------

def test_messages_name_the_right_thing(capsys, sandbox):
    code, _, err = cli(capsys, "transform", "train", "--data", sandbox / "data", "--model-args", "hidden=abc",
                       "--out", sandbox / "x")
    assert "option 'hidden' must be an integer, got 'abc'" in err
    code, _, err = cli(capsys, "transform", "train", "--resume", sandbox / "C")
    assert "belongs to a classify run" in err
    code, _, err = cli(capsys, "transform", "export", sandbox / "T", "--out", sandbox / "data")
    assert "is a folder" in err and ".tmp." not in err
    with pytest.raises(CifarlabError, match="is a file, not a run folder"):
        cifarlab.load(sandbox / "data" / "cat" / "000.png")
    (sandbox / "blocker").write_text("a file where a folder should be")
    with pytest.raises(CifarlabError) as error:
        write_text(sandbox / "blocker" / "report.md", "x")
    assert "report.md" in str(error.value) and ".tmp." not in str(error.value)
    code, out, _ = cli(capsys, "classify", "predict", sandbox / "C", sandbox / "data" / "cat")
    assert code == 0 and len(out.splitlines()) == len(list((sandbox / "data" / "cat").iterdir()))


@pytest.mark.parametrize("kind", ["transform", "classify"])
def test_a_budget_too_small_for_one_epoch_says_so_and_leaves_nothing(capsys, sandbox, kind):
    extra = ["--init", "random"] if kind == "transform" else []   # the operator would need no epoch at all
    code, _, err = cli(capsys, kind, "train", "--data", sandbox / "data", "--time-budget", "1e-9",
                       "--batch-size", "2", "--out", sandbox / "new", "--logger", "none", *extra)
    assert code == 2 and "before the first epoch finished" in err
    assert not (sandbox / "new").exists()
