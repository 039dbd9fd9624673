"""`transform apply` as a streaming job: outputs equal the model's, every engine alike, a re-run
resumes without redoing or losing a file, and unreadable files are listed."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.transform.apply import apply_folder


@pytest.fixture
def tree(sandbox):
    """data/ plus a nested folder, a non-32x32 image and two unreadable files."""
    src = sandbox / "data"
    (src / "cat" / "deeper").mkdir()
    shutil.copy(src / "cat" / "000.png", src / "cat" / "deeper" / "again.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(src / "wide.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    (src / "empty.jpg").write_bytes(b"")
    return src


def expected_png(run, path):
    from cifarlab.data.sources import fit_to_size, read_image
    with torch.inference_mode():
        out = cifarlab.load(run)(fit_to_size(read_image(path), 32)[None].float() / 255)
    return out.clamp(0, 1).mul(255).round().to(torch.uint8)[0, 0].numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_outputs_equal_the_model_and_failures_are_listed(sandbox, tree, workers):
    dst = sandbox / f"out{workers}"
    result = apply_folder(sandbox / "T", tree, dst, batch_size=7, workers=workers, quiet=True)
    images = sorted(p for p in tree.rglob("*") if p.is_file())
    assert result.images == len(images) and result.unreadable == 2 and result.written == len(images) - 2
    for path in images:
        if path.name in ("broken.png", "empty.jpg"):
            assert not (dst / path.relative_to(tree)).with_suffix(".png").exists()
            continue
        written = np.asarray(Image.open((dst / path.relative_to(tree)).with_suffix(".png")))
        assert np.array_equal(written, expected_png(sandbox / "T", path)), path
    failures = (dst / "apply-failures.txt").read_text().splitlines()
    assert sorted(failures) == sorted(str(tree / n) for n in ("broken.png", "empty.jpg"))
    summary = json.loads((dst / "apply-summary.json").read_text())
    assert summary["written"] == result.written and summary["workers"] == workers


def test_engines_write_identical_files(sandbox, tree):
    apply_folder(sandbox / "T", tree, sandbox / "a", workers=0, quiet=True)
    apply_folder(sandbox / "T", tree, sandbox / "b", workers=2, batch_size=5, quiet=True)
    pngs = sorted(p.relative_to(sandbox / "a") for p in (sandbox / "a").rglob("*.png"))
    assert pngs == sorted(p.relative_to(sandbox / "b") for p in (sandbox / "b").rglob("*.png"))
    assert all((sandbox / "a" / p).read_bytes() == (sandbox / "b" / p).read_bytes() for p in pngs)


def test_a_rerun_resumes_without_redoing_or_losing_a_file(sandbox, tree):
    dst = sandbox / "out"
    first = apply_folder(sandbox / "T", tree, dst, workers=0, quiet=True)
    outputs = sorted(dst.rglob("*.png"))
    lost = outputs[::3]                      # as if the job had been killed before writing these
    for path in lost:
        path.unlink()
    stale = dst / "cat" / ".000.tmp.999-dead.png"
    stale.write_bytes(b"half a file")        # what a SIGKILL mid-write leaves
    kept = {p: p.stat().st_mtime_ns for p in outputs if p not in lost}
    again = apply_folder(sandbox / "T", tree, dst, workers=2, quiet=True)
    assert again.written == len(lost) and again.existing == first.written - len(lost)
    assert sorted(dst.rglob("*.png")) == outputs and not stale.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())   # nothing redone
