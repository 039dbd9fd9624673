"""Every command on every class of damaged input: exit code 2, one `error:` line, no traceback,
no crafted code run, and no file created, changed or removed anywhere in the sandbox.

The sandbox (see conftest.py) holds `data/` (a tiny ImageFolder tree), `T/` (a transform run)
and `C/` (a classify run). Each case damages one thing, runs one command in-process through
the CLI's `main`, and compares the whole sandbox before and after."""
import json
import os
import shutil

import pytest
import torch

from cifarlab.cli import main


class Crafted:
    """A pickle that would create MARKER when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- damage to a run folder: (name, files it touches, function(run, sandbox) -> run path)

def _missing(run, box):
    return box / "no-such-run"


def _a_file(run, box):
    (box / "a-file").write_text("not a run")
    return box / "a-file"


def _truncate(name):
    def damage(run, box):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:len(data) // 3])
        return run
    return damage


def _foreign(name):
    def damage(run, box):
        torch.save({"weights": torch.zeros(3)}, run / name)
        return run
    return damage


def _crafted(name):
    def damage(run, box):
        torch.save({"format": "cifarlab-transform/1", "payload": Crafted(box / "MARKER")}, run / name)
        return run
    return damage


def _no_state_dict(run, box):
    ckpt = torch.load(run / "model.pt", weights_only=True)
    del ckpt["state_dict"]
    torch.save(ckpt, run / "model.pt")
    return run


def _other_kind(run, box):
    other = box / ("C" if run.name == "T" else "T")
    shutil.copy(other / "model.pt", run / "model.pt")
    return run


def _config_text(text):
    def damage(run, box):
        (run / "config.json").write_text(text)
        return run
    return damage


def _config_types(run, box):
    config = json.loads((run / "config.json").read_text())
    config["lr"] = "fast"
    (run / "config.json").write_text(json.dumps(config))
    return run


def _interrupted_before_first_epoch(run, box):
    for name in ("model.pt", "last.pt", "model.pt2", "metrics.json"):
        (run / name).unlink()
    return run


RUN_DAMAGES = {
    "missing folder": (_missing, "any"),
    "a file, not a folder": (_a_file, "any"),
    "model.pt truncated": (_truncate("model.pt"), "model"),
    "model.pt foreign": (_foreign("model.pt"), "model"),
    "model.pt crafted pickle": (_crafted("model.pt"), "model"),
    "model.pt without state_dict": (_no_state_dict, "model"),
    "model.pt of the other kind": (_other_kind, "model"),
    "config.json not JSON": (_config_text("{not json"), "config"),
    "config.json a list": (_config_text("[1, 2]"), "config"),
    "config.json wrong types": (_config_types, "config"),
    "last.pt truncated": (_truncate("last.pt"), "last"),
    "last.pt foreign": (_foreign("last.pt"), "last"),
    "last.pt crafted pickle": (_crafted("last.pt"), "last"),
    "interrupted before the first epoch": (_interrupted_before_first_epoch, "model"),
}

# command -> (which run, argv with RUN / DATA / BOX placeholders, what it reads)
RUN_COMMANDS = {
    "transform eval": ("T", ["transform", "eval", "RUN", "--data", "DATA"], {"any", "model"}),
    "transform export": ("T", ["transform", "export", "RUN", "--out", "BOX/out.pt2"], {"any", "model"}),
    "transform apply": ("T", ["transform", "apply", "RUN", "DATA", "BOX/applied"], {"any", "model"}),
    "transform bench": ("T", ["transform", "bench", "RUN", "--images", "16", "--batch-sizes", "8",
                              "--repeats", "1", "--variants", "plain", "--quiet"], {"any", "model", "config"}),
    "transform train --resume": ("T", ["transform", "train", "--resume", "RUN", "--quiet"],
                                 {"any", "model", "config", "last"}),
    "classify eval": ("C", ["classify", "eval", "RUN", "--data", "DATA"], {"any", "model"}),
    "classify predict": ("C", ["classify", "predict", "RUN", "DATA/cat/000.png"], {"any", "model"}),
    "classify export": ("C", ["classify", "export", "RUN", "--out", "BOX/out.onnx"], {"any", "model"}),
    "classify train --resume": ("C", ["classify", "train", "--resume", "RUN", "--quiet"],
                                {"any", "model", "config", "last"}),
}

RUN_CASES = [(command, damage) for command, (_, _, reads) in RUN_COMMANDS.items()
             for damage, (_, touches) in RUN_DAMAGES.items() if touches in reads]


def run_cli(capsys, argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_error_line(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], err
    assert "weights_only=False" not in err   # PyTorch's advice to run the pickle is never passed on


@pytest.mark.parametrize("command, damage", RUN_CASES, ids=[f"{c} / {d}" for c, d in RUN_CASES])
def test_a_damaged_run_folder_gets_one_line_and_changes_nothing(capsys, sandbox, snapshot, command, damage):
    which, argv, _ = RUN_COMMANDS[command]
    run = RUN_DAMAGES[damage][0](sandbox / which, sandbox)
    before = snapshot(sandbox)
    places = {"RUN": str(run), "DATA": str(sandbox / "data"), "BOX": str(sandbox)}
    argv = [places.get(a, a) for a in argv]
    argv = [a.replace("BOX/", str(sandbox) + "/").replace("DATA/", str(sandbox / "data") + "/") for a in argv]
    code, err = run_cli(capsys, argv)
    assert_one_error_line(code, err)
    assert not (sandbox / "MARKER").exists(), "the crafted pickle ran"
    assert snapshot(sandbox) == before


# ---- damaged data: (name, function(sandbox) -> data path)

def _data_missing(box):
    return box / "no-such-data"


def _data_a_file(box):
    return box / "data" / "cat" / "000.png"


def _data_empty(box):
    (box / "empty").mkdir()
    return box / "empty"


def _data_no_images(box):
    (box / "junk").mkdir()
    (box / "junk" / "notes.txt").write_text("hello")
    return box / "junk"


def _data_corrupt_images(box):
    for cls in ("a", "b"):
        (box / "broken" / cls).mkdir(parents=True)
        (box / "broken" / cls / "x.png").write_bytes(b"\x89PNG not really")
    return box / "broken"


def _data_flat(box):
    return box / "data" / "cat"   # images without class subfolders


def _data_one_class(box):
    (box / "one").mkdir()
    shutil.copytree(box / "data" / "cat", box / "one" / "cat")
    return box / "one"


DATA_DAMAGES = {"missing": _data_missing, "a file": _data_a_file, "empty folder": _data_empty,
                "no image files": _data_no_images, "only corrupt images": _data_corrupt_images,
                "unlabelled (flat) folder": _data_flat, "one class": _data_one_class}
DATA_COMMANDS = {
    "transform train": (["transform", "train", "--data", "DATA", "--out", "BOX/new", "--epochs", "1", "--quiet"],
                        {"missing", "a file", "empty folder", "no image files", "only corrupt images"}),
    "transform eval": (["transform", "eval", "T", "--data", "DATA"],
                       {"missing", "a file", "empty folder", "no image files", "only corrupt images"}),
    "transform apply": (["transform", "apply", "T", "DATA", "BOX/applied"],
                        {"missing", "a file", "empty folder", "no image files"}),
    "classify train": (["classify", "train", "--data", "DATA", "--out", "BOX/new", "--epochs", "1", "--quiet"],
                       set(DATA_DAMAGES)),
    "classify eval": (["classify", "eval", "C", "--data", "DATA"], set(DATA_DAMAGES)),
    "classify predict": (["classify", "predict", "C", "DATA"],
                         {"missing", "empty folder", "no image files", "only corrupt images"}),
}
DATA_CASES = [(command, damage) for command, (_, which) in DATA_COMMANDS.items() for damage in DATA_DAMAGES
              if damage in which]


@pytest.mark.parametrize("command, damage", DATA_CASES, ids=[f"{c} / {d}" for c, d in DATA_CASES])
def test_damaged_data_gets_one_line_and_changes_nothing(capsys, sandbox, snapshot, command, damage):
    data = DATA_DAMAGES[damage](sandbox)
    before = snapshot(sandbox)
    argv, _ = DATA_COMMANDS[command]
    places = {"DATA": str(data), "T": str(sandbox / "T"), "C": str(sandbox / "C")}
    argv = [places.get(a, a).replace("BOX/", str(sandbox) + "/") for a in argv]
    code, err = run_cli(capsys, argv)
    assert_one_error_line(code, err)
    assert snapshot(sandbox) == before, "a failed command left, changed or removed files"
    assert not (sandbox / "new").exists() and not (sandbox / "applied").exists()
