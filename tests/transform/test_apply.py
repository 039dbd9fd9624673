"""`transform apply` as a streaming job: outputs equal the model's, every engine alike, a re-run
resumes without redoing or losing a file, and unreadable files are listed."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.transform.apply import apply_folder

# the fixture tree holds unreadable files on purpose; the warning's text is checked in
# test_outputs_equal_the_model_and_failures_are_listed
pytestmark = pytest.mark.filterwarnings(r"ignore:skipped \d+ unreadable image:UserWarning")


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
    with pytest.warns(UserWarning, match=rf"skipped 2 unreadable image\(s\), listed in .*{workers}.apply-failures\.txt$"):
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


# ---- uint8 end to end

def test_uint8_outputs_are_the_rounded_float_outputs(sandbox):
    """The rounding rule, on a batch large enough to be computed in chunks."""
    from cifarlab.transform.artifact import UINT8_CHUNK
    net = cifarlab.load(sandbox / "T")
    images = torch.randint(0, 256, (2 * UINT8_CHUNK + 5, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = net(images.float() / 255).clamp(0, 1).mul(255).round().to(torch.uint8)
        assert torch.equal(net.to_uint8(images), want)
        assert torch.equal(net(images), net(images.float() / 255))   # the chunked uint8 path: the same values


# ---- a list of files

def test_a_list_of_files_mirrors_their_common_folder(sandbox, tree):
    listing = sandbox / "list.txt"
    listing.write_text("# inputs\ndata/cat/000.png\n\n" + str(tree / "cat" / "deeper" / "again.png") + "\n"
                       "data/dog/001.png\ndata/missing.png\n")
    dst = sandbox / "out"
    result = apply_folder(sandbox / "T", listing, dst, workers=0, quiet=True)
    assert (result.images, result.written, result.unreadable) == (4, 3, 1)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*.png")) == [
        "cat/000.png", "cat/deeper/again.png", "dog/001.png"]
    assert (dst / "apply-failures.txt").read_text() == f"{tree / 'missing.png'}\n"
    written = np.asarray(Image.open(dst / "dog" / "001.png"))
    assert np.array_equal(written, expected_png(sandbox / "T", tree / "dog" / "001.png"))


def test_a_list_refuses_a_dst_inside_a_folder_of_its_inputs(sandbox, tree):
    from cifarlab.errors import CifarlabError
    listing = sandbox / "list.txt"
    listing.write_text("data/cat/000.png\ndata/dog/000.png\n")
    with pytest.raises(CifarlabError, match="holds listed inputs"):
        apply_folder(sandbox / "T", listing, tree / "cat" / "out", workers=0, quiet=True)
    with pytest.raises(CifarlabError, match="is an image file"):
        apply_folder(sandbox / "T", tree / "cat" / "000.png", sandbox / "out", workers=0, quiet=True)
    assert not (tree / "cat" / "out").exists() and not (sandbox / "out").exists()


# ---- tensor shards

def test_shards_hold_the_png_pixels_and_resume_shard_by_shard(sandbox, tree):
    from cifarlab.errors import CifarlabError
    from cifarlab.transform.shards import load_shard
    apply_folder(sandbox / "T", tree, sandbox / "png", workers=0, quiet=True)
    dst = sandbox / "npy"
    first = apply_folder(sandbox / "T", tree, dst, workers=2, output_format="npy", shard_size=10, quiet=True)
    files = sorted(str(p) for p in tree.rglob("*") if p.is_file())
    assert first.images == len(files) and first.written == len(files) - 2 and first.unreadable == 2
    arrays = sorted(dst.glob("shard-*.npy"))
    assert len(arrays) == -(-len(files) // 10)
    rows = []
    for path in arrays:
        images, sources = load_shard(path)
        assert images.dtype == np.uint8 and images.shape[1:] == (1, 28, 28) and len(images) == len(sources)
        for image, source in zip(images, sources):
            png = (sandbox / "png" / Path(source).relative_to(tree)).with_suffix(".png")
            assert np.array_equal(image[0], np.asarray(Image.open(png))), source
        rows += sources
    assert sorted(rows) == [f for f in files if not f.endswith(("broken.png", "empty.jpg"))]
    assert sorted((dst / "apply-failures.txt").read_text().splitlines()) == sorted(
        str(tree / n) for n in ("broken.png", "empty.jpg"))

    (dst / "shard-00001.json").unlink()          # as if killed between writing shard 1 and its index
    (dst / ".shard-00002.tmp.999-dead.npy").write_bytes(b"half")
    kept = {p: p.stat().st_mtime_ns for p in arrays if p.name != "shard-00001.npy"}
    again = apply_folder(sandbox / "T", tree, dst, workers=0, output_format="npy", shard_size=10, quiet=True)
    assert again.existing == len(files) - 10 and again.written == len(load_shard(dst / "shard-00001.npy")[1])
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert not list(dst.glob(".*tmp*")) and again.unreadable == 2   # earlier shards' failures still listed
    with pytest.raises(CifarlabError, match="shards of another job"):
        apply_folder(sandbox / "T", tree, dst, workers=0, output_format="npy", shard_size=7, quiet=True)


def test_the_ray_engine_without_ray_says_how_to_install_it(sandbox, tree, monkeypatch):
    import sys
    from cifarlab.errors import CifarlabError
    from cifarlab.transform.engines import RayEngine
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CifarlabError, match=r'pip install "cifarlab\[ray\]"'):
        apply_folder(sandbox / "T", tree, sandbox / "out", engine=RayEngine(), quiet=True)


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_a_sigkill_mid_job_leaves_no_partial_file_and_a_rerun_finishes(sandbox, fmt):
    """A real SIGKILL of the command (and its workers) part-way, then a re-run: every output is
    whole and equal to an uninterrupted job's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    src = sandbox / "many"
    for i in range(400):
        (src / str(i % 4)).mkdir(parents=True, exist_ok=True)
        shutil.copy(sandbox / "data" / "cat" / f"{i % 8:03d}.png", src / str(i % 4) / f"{i:03d}.png")
    options = ["--output-format", fmt, "--shard-size", "16", "--batch-size", "4", "--workers", "2", "--quiet"]
    command = [sys.executable, "-m", "cifarlab", "transform", "apply", str(sandbox / "T"), str(src)]
    dst = sandbox / "killed"
    job = subprocess.Popen(command + [str(dst)] + options, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pattern = "*.png" if fmt == "png" else "shard-*.json"
    deadline = time.monotonic() + 60
    def finished():   # outputs in place; a killed writer's temporaries (".NAME.tmp.PID-HEX.png") are not outputs
        return [p for p in dst.rglob(pattern) if not p.name.startswith(".")]
    enough = 20 if fmt == "png" else 3   # of 400 PNGs, or of 25 shards: early enough to land mid-job
    while len(finished()) < enough and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    done = len(finished())
    assert 0 < done < (400 if fmt == "png" else 25), "the kill came before or after the job"
    if fmt == "png":
        for path in finished():
            Image.open(path).load()                       # whole: a half-written PNG does not decode
    subprocess.run(command + [str(dst)] + options, check=True, capture_output=True)
    # the uninterrupted job in this process (the same code as the command's; no second start-up)
    apply_folder(sandbox / "T", src, sandbox / "clean", batch_size=4, workers=2, quiet=True, output_format=fmt,
                 shard_size=16)
    ours = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*")
            if p.is_file() and p.name != "apply-summary.json"}
    clean = {str(p.relative_to(sandbox / "clean")): p.read_bytes() for p in (sandbox / "clean").rglob("*")
             if p.is_file() and p.name != "apply-summary.json"}
    assert ours == clean                                  # nothing lost, nothing half-written, no temporaries
