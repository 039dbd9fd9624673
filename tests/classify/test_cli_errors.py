"""Bad input gives one line on stderr, `error: ...`, and exit status 2."""
import pytest

import cifarlab.cli


def run(capsys, *args):
    code = cifarlab.cli.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize("args,expected", [
    (["--recipe", "turbo"], "valid recipes: baseline, seed004, fast, airbench94"),
    (["--model", "vgg"], "valid models: baseline_cnn, deep_cnn, fastnet"),
    (["--optimizer", "lion"], "valid: adam, adamw, sgd"),
    (["--schedule", "step"], "valid: none, plateau, onecycle, cosine"),
    (["--augment", "blur"], "valid: crop, flip, rotate, cutout"),
    (["--activation", "swish", "--model", "deep_cnn"], "valid activations: relu, leaky_relu, elu, gelu"),
])
def test_unknown_names_list_the_valid_ones(capsys, tiny_folder, tmp_path, args, expected):
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder), "--out", str(tmp_path / "r"), *args)
    assert code == 2 and line.startswith("error: ") and expected in line


def test_flat_folder_without_labels_is_refused(capsys, tiny_folder, tmp_path):
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder / "cat"), "--out", str(tmp_path / "r"))
    assert code == 2 and "needs labelled images" in line and "flat folder" in line


def test_sample_is_refused(capsys, tmp_path):
    code, line = run(capsys, "classify", "train", "--data", "sample", "--out", str(tmp_path / "r"))
    assert code == 2 and "'sample' is unlabelled" in line


def test_one_fold_is_refused(capsys, tiny_folder, tmp_path):
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--folds", "1",
                     "--out", str(tmp_path / "s"))
    assert code == 2 and "--folds must be at least 2" in line


def test_more_folds_than_images_is_refused(capsys, tiny_folder, tmp_path):
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--folds", "99",
                     "--out", str(tmp_path / "s"))
    assert code == 2 and "more than the 36 images" in line


def test_a_grid_that_does_not_parse_says_where(capsys, tiny_folder, tmp_path):
    code, line = run(capsys, "classify", "search", "--data", str(tiny_folder), "--grid", "lr=0.1;weight_decay=x",
                     "--out", str(tmp_path / "s"))
    assert code == 2 and "part 2 ('weight_decay=x')" in line and "not a number" in line


def test_missing_run_folder_and_non_image(capsys, trained_run, tmp_path):
    code, line = run(capsys, "classify", "eval", str(tmp_path / "nope"), "--data", "sample")
    assert code == 2 and "does not exist" in line
    (tmp_path / "notes.txt").write_text("hello")
    code, line = run(capsys, "classify", "predict", str(trained_run), str(tmp_path / "notes.txt"))
    assert code == 2 and "not a readable image" in line


def test_pretrained_offline_or_with_the_wrong_model_is_one_line(capsys, tiny_folder, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)  # offline, even in CI
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder), "--pretrained", "--model", "fastnet",
                     "--out", str(tmp_path / "r"))
    assert code == 2 and "resnet18_tv" in line
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder), "--pretrained",
                     "--out", str(tmp_path / "r"))
    assert code == 2 and "ImageNet weights" in line and "TORCH_HOME" in line


@pytest.mark.parametrize("spec", ["24", "40:0.5", "24:1.5", "big:half", "24:"])
def test_a_bad_progressive_resizing_spec_says_what_is_expected(capsys, tiny_folder, tmp_path, spec):
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder), "--out", str(tmp_path / "r"),
                     "--progressive", spec)
    assert code == 2 and "--progressive must be SIZE:SHARE" in line and repr(spec) in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--weight-decay", "inf", "--weight-decay must be a finite number >= 0, got inf"),
    ("--weight-decay", "nan", "--weight-decay must be a finite number >= 0, got nan"),
    ("--weight-decay", "-1", "--weight-decay must be a finite number >= 0, got -1"),
    ("--lr", "inf", "--lr must be a positive number, got inf"),
])
def test_a_number_that_is_not_finite_is_refused(capsys, tiny_folder, tmp_path, flag, value, expected):
    code, line = run(capsys, "classify", "train", "--data", str(tiny_folder), "--out", str(tmp_path / "r"),
                     flag, value)
    assert code == 2 and line == f"error: {expected}"
    assert not (tmp_path / "r").exists()
