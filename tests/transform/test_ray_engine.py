"""The Ray engine writes the same files as the local one, on a local 2-CPU Ray instance
(skipped when Ray is not installed: pip install "cifarlab[ray]"). Ray starts in a few
seconds, so one instance serves the module; its worker logs are printed when a test fails."""
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from cifarlab.errors import CifarlabError
from cifarlab.transform.apply import apply_folder
from cifarlab.transform.engines import LocalEngine, RayEngine

# the fixture tree holds unreadable files on purpose; the warning's text is checked in
# test_outputs_equal_the_model_and_failures_are_listed
pytestmark = [pytest.mark.filterwarnings(r"ignore:skipped \d+ unreadable image:UserWarning"),
              # Ray Data warns of its own deprecated settings when it copies its context; cifarlab sets none
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture
def tree(sandbox):
    """A few dozen images in nested folders, one of another size and one that is not an image."""
    src = sandbox / "data"
    (src / "cat" / "deeper").mkdir()
    shutil.copy(src / "cat" / "000.png", src / "cat" / "deeper" / "again.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(src / "wide.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    return src


def files_of(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "apply-summary.json"}


def test_an_unreachable_ray_address_is_one_line_naming_it(sandbox, tree):
    with socket.socket() as s:          # a free port: nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = RayEngine(address=f"127.0.0.1:{port}", connect_timeout=2)
    assert not ray.is_initialized()
    with pytest.raises(CifarlabError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        apply_folder(sandbox / "T", tree, sandbox / "out", engine=engine, quiet=True)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _print_worker_logs():
    from pathlib import Path
    logs = Path("/tmp/ray/session_latest/logs")
    for path in sorted(logs.glob("worker-*.err")) + sorted(logs.glob("raylet*.err")):
        text = path.read_text(errors="replace")[-3000:]
        if text.strip():
            print(f"---- {path}\n{text}")


def test_ray_writes_the_same_files_as_the_local_engine(sandbox, tree, local_ray):
    try:
        _same_files(sandbox, tree)
    except BaseException:
        _print_worker_logs()   # the Ray workers' own output, for a failure inside them
        raise


def _same_files(sandbox, tree):
    for fmt, size in (("png", 8), ("npy", 10)):
        local = apply_folder(sandbox / "T", tree, sandbox / f"local-{fmt}", batch_size=size, shard_size=size,
                             output_format=fmt, engine=LocalEngine(2), quiet=True)
        on_ray = apply_folder(sandbox / "T", tree, sandbox / f"ray-{fmt}", batch_size=size, shard_size=size,
                              output_format=fmt, engine=RayEngine(), quiet=True)
        assert (on_ray.written, on_ray.unreadable, on_ray.engine) == (local.written, 1, "ray")
        assert local.written > 24
        ray_files, local_files = files_of(sandbox / f"ray-{fmt}"), files_of(sandbox / f"local-{fmt}")
        assert sorted(ray_files) == sorted(local_files) and ray_files == local_files, fmt


def test_ray_workers_keep_one_network_a_checkpoint():
    """The workers' cache is keyed by the weights: another checkpoint gets its own network."""
    import torch

    from cifarlab.transform.engines import _checkpoint_key
    ckpt = {"model": "sepnet", "model_kwargs": {}, "in_shape": [3, 32, 32], "out_shape": [1, 28, 28],
            "state_dict": {"w": torch.zeros(3, 4)}}
    other = dict(ckpt, state_dict={"w": torch.zeros(3, 4).index_fill_(1, torch.tensor([2]), 1e-7)})
    assert _checkpoint_key(ckpt) == _checkpoint_key(dict(ckpt, state_dict={"w": torch.zeros(3, 4)}))
    assert _checkpoint_key(ckpt) != _checkpoint_key(other)
    assert _checkpoint_key(ckpt) != _checkpoint_key(dict(ckpt, out_shape=[3, 28, 28]))
