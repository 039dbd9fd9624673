import json

import pytest
import torch

import cifarlab.cli
from cifarlab.classify import build_from_checkpoint, load_run
from cifarlab.classify.artifact import read_checkpoint
from cifarlab.errors import CifarlabError
from cifarlab.imagefiles import encode_png

RUN_FILES = ["config.json", "model.pt", "last.pt", "model.pt2", "metrics.json", "curves.png", "confusion.png",
             "report.md"]


def test_run_folder_holds_every_artifact(trained_run):
    for name in RUN_FILES:
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("test_accuracy", "per_class_accuracy", "train_seconds", "epochs", "parameters",
                "train_images_per_second"):
        assert key in metrics
    assert metrics["export"] == "model.pt2" and set(metrics["per_class_accuracy"]) == {"cat", "dog", "ship"}


def test_export_loads_in_plain_pytorch_and_gives_the_same_logits(trained_run):
    program = torch.export.load(str(trained_run / "model.pt2")).module()
    model = load_run(trained_run)
    for n in (1, 5):
        x = torch.rand(n, 3, 32, 32)
        assert torch.allclose(program(x), model(x), atol=1e-5)


def test_cifarlab_load_returns_the_classifier(trained_run):
    import cifarlab
    model = cifarlab.load(trained_run)
    assert model.classes == ["cat", "dog", "ship"] and model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_checkpoint_loads_with_weights_only_and_checks_its_input(trained_run):
    ckpt = torch.load(trained_run / "model.pt", weights_only=True)
    assert ckpt["format"] == "cifarlab-classify/1"
    model = build_from_checkpoint(ckpt)
    assert not model.training and model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert torch.allclose(model(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)), model(torch.ones(1, 3, 32, 32)))
    for bad, message in [(torch.rand(2, 3, 64, 64), "64"), (torch.rand(3, 32, 32), "batch"),
                         (torch.rand(2, 1, 32, 32), "3 channels"), (torch.ones(2, 3, 32, 32, dtype=torch.int32), "dtype")]:
        with pytest.raises(CifarlabError, match=message):
            model(bad)


def test_non_classify_checkpoints_are_refused(tmp_path):
    torch.save({"format": "cifarlab-transform/1"}, tmp_path / "model.pt")
    with pytest.raises(CifarlabError, match="not a checkpoint written by 'cifarlab classify train'"):
        read_checkpoint(tmp_path / "model.pt")


def test_eval_and_predict_commands(trained_run, tmp_path, capsys, make_folder):
    data = make_folder(tmp_path / "other", classes=("ship", "cat", "dog"), per_class=4, seed=5)
    assert cifarlab.cli.main(["classify", "eval", str(trained_run), "--data", str(data), "--split", "train"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 12 and set(result["per_class_accuracy"]) == {"cat", "dog", "ship"}

    big = tmp_path / "big.png"
    big.write_bytes(encode_png(torch.randint(0, 255, (3, 90, 60), dtype=torch.uint8).numpy()))
    assert cifarlab.cli.main(["classify", "predict", str(trained_run), str(big), "--top-k", "2", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert len(item["top"]) == 2 and item["top"][0][1] >= item["top"][1][1]


def test_scoring_on_the_cpu_runs_batches_of_256_and_matches_one_batch(trained_run):
    from cifarlab.classify.trainer import evaluate
    model = load_run(trained_run)
    images, labels = torch.randint(0, 256, (600, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 3, (600,))
    sizes = []
    hook = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    result = evaluate(model, images, labels, torch.device("cpu"))
    hook.remove()
    whole = evaluate(model, images, labels, torch.device("cpu"), batch_size=600)
    assert sizes == [256, 256, 88]
    assert torch.equal(result["predictions"], whole["predictions"])
    assert result["loss"] == pytest.approx(whole["loss"], abs=1e-5)
