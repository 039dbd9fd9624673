"""The benchmark's mechanics on a tiny workload: every contender runs, the outputs are
well-formed, --compat prints the reference lines, bad input gives one-line errors.
No timing is asserted: the numbers depend on the machine and its load."""
import json
import re

import pytest
import torch

from cifarlab.bench import run_benchmark, run_compat
from cifarlab.bench.compat import MODEL_LINE, SEQUENTIAL_LINE
from cifarlab.cli import main
from cifarlab.models.exact import exact_separable_net
from cifarlab.pipeline import Pipeline
from cifarlab.transform import TransformConfig, train

TINY = ["--images", "64", "--batch-sizes", "1,16", "--repeats", "1", "--device", "cpu", "--quiet"]
CONTENDERS = {"sequential", "sequential-functional", "memory-copy-whole", "memory-copy", "batched-torchvision",
              "model-fast", "exact-operator", "dataloader-floor", "model-reference"}


@pytest.fixture(scope="session")
def trained_run(subset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-runs") / "tiny"
    config = TransformConfig(data=str(subset_path), time_budget=5, logger="none", device="cpu")
    return train(config, out=str(out), quiet=True)


@pytest.fixture(scope="session")
def benched(trained_run):
    results = run_benchmark(trained_run, images=64, batch_sizes="1,16", devices="cpu", repeats=1, quiet=True)
    return trained_run, results


def test_every_contender_runs_at_every_batch_size(benched):
    _, results = benched
    rows = results["rows"]
    assert results["complete"] and {r["contender"] for r in rows} == CONTENDERS
    for contender in CONTENDERS - {"sequential", "sequential-functional", "memory-copy-whole"}:
        assert {r["batch_size"] for r in rows if r["contender"] == contender} == {1, 16}, contender
    assert {r["variant"] for r in rows if r["contender"] == "model-fast"} == {"plain", "checked", "uint8", "channels_last", "onnxruntime"}
    for r in rows:
        assert r["median"] > 0 and r["low"] <= r["median"] <= r["high"] and len(r["samples"]) == 1


def test_every_model_path_reports_its_psnr(benched):
    _, results = benched
    for r in results["rows"]:
        if r["contender"] in ("model-fast", "model-reference", "exact-operator"):
            assert r["psnr"] > 20, r
    exact = next(r for r in results["rows"] if r["contender"] == "exact-operator")
    assert exact["psnr"] > 100  # the exact operator is the pipeline to float precision


def test_outputs_are_written_and_well_formed(benched):
    run_dir, _ = benched
    data = json.loads((run_dir / "bench.json").read_text())
    facts = data["machine"]
    assert data["images"] == 64 and data["repeats"] == 1 and data["batch_sizes"] == [1, 16]
    assert {"cpu", "cpu_cores", "torch_threads", "torch"} <= facts.keys() and data["peak_rss_mb"] > 0
    assert all({"goal", "value", "target", "met"} <= g.keys() for g in data["goals"])
    md = (run_dir / "bench.md").read_text()
    assert "| device | batch size | sequential (s) |" in md and "| CPU | 16 |" in md
    assert "memory-copy" in md and "PSNR" in md
    assert (run_dir / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Inference benchmark" in (run_dir / "report.md").read_text()


def test_exact_operator_matches_the_pipeline():
    pipeline = Pipeline.parse()
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(exact_separable_net(pipeline)(x), pipeline(x), atol=1e-5)


def test_compat_prints_the_reference_lines(trained_run, capsys):
    run_compat(trained_run, images=32, batch_sizes="1,16", devices="cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    number = r"\d+(\.\d+)?(e-?\d+)?"
    assert re.fullmatch(rf"Sequential transforming each image took: {number} on CPU\.", lines[0])
    assert [re.fullmatch(rf"Using a model with batch_size: (\d+) took {number} on cpu\.", line).group(1)
            for line in lines[1:]] == ["1", "16"]
    assert SEQUENTIAL_LINE.startswith("Sequential transforming") and "{bs}" in MODEL_LINE


def test_cli_compat_mode(trained_run, capsys):
    assert main(["transform", "bench", str(trained_run), "--compat", *TINY]) == 0
    assert capsys.readouterr().out.count("Using a model with batch_size:") == 2


def test_interrupted_benchmark_writes_what_it_measured(trained_run, tmp_path, monkeypatch):
    import shutil

    import cifarlab.bench.runner as runner
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    real = runner.Bench.time_together

    def time_then_interrupt(self, device, source, entries):
        if any(e.contender == "batched-torchvision" for e in entries):
            raise KeyboardInterrupt
        return real(self, device, source, entries)

    monkeypatch.setattr(runner.Bench, "time_together", time_then_interrupt)
    assert main(["transform", "bench", str(run_dir), *TINY]) == 130
    data = json.loads((run_dir / "bench.json").read_text())
    assert data["complete"] is False and data["rows"]
    assert "INCOMPLETE" in (run_dir / "bench.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "0,16"], "batch sizes must be positive integers"),
    (["--batch-sizes", "a"], "batch sizes must be positive integers"),
    (["--device", "cpu,tpu"], "unknown device 'tpu'"),
    (["--repeats", "0"], "--repeats must be a positive integer"),
])
def test_bad_options_give_one_line_errors(trained_run, capsys, args, message):
    assert main(["transform", "bench", str(trained_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_absent_device_names_the_available_ones(trained_run, capsys):
    absent = next(d for d in ("cuda", "mps") if d not in __import__("cifarlab.devices").devices.available_devices())
    assert main(["transform", "bench", str(trained_run), "--device", absent]) == 2
    assert "available: cpu" in capsys.readouterr().err


def test_run_folder_without_model(tmp_path, capsys):
    assert main(["transform", "bench", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_model_whose_input_does_not_fit_the_data(trained_run, tmp_path, capsys):
    import shutil

    from cifarlab.models.separable import SeparableNet
    from cifarlab.checkpoints import save_checkpoint
    from cifarlab.transform.artifact import checkpoint
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    net = SeparableNet((3, 64, 64), (1, 28, 28))
    save_checkpoint(run_dir / "model.pt", checkpoint("sepnet", {}, net, (3, 64, 64), (1, 28, 28),
                                                     Pipeline.parse().spec, {}))
    assert main(["transform", "bench", str(run_dir), *TINY]) == 2
    assert "the model takes images of shape (3, 64, 64)" in capsys.readouterr().err


def test_rounds_interleave_the_contenders_and_rotate_their_order():
    from cifarlab.bench.timing import measure_rounds
    calls = []
    passes = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = measure_rounds(passes, repeats=3, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # one warm-up each
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t.samples) == 3 for t in timings.values())


def test_ratios_within_a_group_are_taken_round_by_round():
    from cifarlab.bench.timing import paired_ratio
    model = {"round_group": 7, "samples": [1.0, 10.0, 3.0], "median": 3.0}
    floor = {"round_group": 7, "samples": [1.0, 10.0, 1.0], "median": 1.0}
    assert paired_ratio(model, floor) == 1.0  # a slow spell (round 2) hit both alike
    assert paired_ratio({**model, "round_group": 8}, floor) == 3.0  # timed apart: ratio of medians
    assert paired_ratio(model, None) is None


def test_model_and_its_floors_share_rounds(benched):
    _, results = benched
    rows = results["rows"]
    for size in (1, 16):
        group = {r["round_group"] for r in rows if r["batch_size"] == size and r["source"] == "resident"}
        assert len(group) == 1, size
        protocol = {r["round_group"] for r in rows if r["batch_size"] == size
                    and r["contender"] in ("dataloader-floor", "model-reference")}
        assert len(protocol) == 1 and protocol != group
    whole = next(r for r in rows if r["contender"] == "memory-copy-whole")
    assert whole["round_group"] == next(r["round_group"] for r in rows if r["batch_size"] == 16
                                        and r["contender"] == "model-fast")


def test_channels_last_variant_leaves_the_plain_model_alone():
    from types import SimpleNamespace

    from cifarlab.bench.variants import build_variant
    model = torch.nn.Conv2d(3, 1, 3)
    workload = SimpleNamespace(inputs=torch.rand(2, 3, 8, 8), stored=None)
    variant = build_variant("channels_last", model, workload, torch.device("cpu"))
    assert model.weight.is_contiguous()  # the plain model keeps its layout
    assert variant.model.weight.is_contiguous(memory_format=torch.channels_last)
    assert variant.images.is_contiguous(memory_format=torch.channels_last)


def test_host_source_path_runs_every_contender(trained_run):
    """The data-from-host loop (used on GPUs) driven on the CPU, where transfers are no-ops:
    no GPU here, but its bookkeeping still has to hold."""
    from cifarlab.bench.runner import Bench, _measure_device, open_run
    model, workload = open_run(trained_run, 32)
    bench = Bench(workload, repeats=1, quiet=True)
    _measure_device(bench, model, None, workload, torch.device("cpu"), (16,), ("plain", "uint8"), None,
                    sources=("resident", "host"))
    host = {(r["contender"], r["variant"]) for r in bench.rows if r["source"] == "host"}
    assert host >= {("memory-copy-whole", None), ("memory-copy", None), ("batched-torchvision", None),
                    ("model-fast", "plain"), ("model-fast", "uint8"), ("dataloader-floor", None)}
    assert all(r["psnr"] > 20 for r in bench.rows if r["contender"] == "model-fast")


def _row(contender, device, source, batch, samples, variant=None, group=1, **extra):
    return {"contender": contender, "device": device, "source": source, "batch_size": batch, "variant": variant,
            "samples": samples, "median": sorted(samples)[len(samples) // 2], "round_group": group, **extra}


def test_gpu_goals_are_ratios_against_the_transfer_floors():
    """Synthetic rows (no GPU here): the goals a GPU run would be judged by."""
    from cifarlab.bench.goals import evaluate_goals
    rows = [_row("memory-copy", "cuda", "host", 1024, [0.010, 0.020, 0.010], group=1),
            _row("model-fast", "cuda", "host", 1024, [0.012, 0.024, 0.012], "plain", group=1, kept=True),
            _row("model-fast", "cuda", "host", 1024, [0.004, 0.008, 0.004], "uint8", group=1, kept=True),
            _row("memory-copy", "cuda", "resident", 1024, [0.001, 0.001, 0.001], group=2),
            _row("model-fast", "cuda", "resident", 1024, [0.002, 0.002, 0.002], "plain", group=2, kept=True)]
    goals = {g["goal"]: g for g in evaluate_goals(rows, [1024])}
    host = goals["cuda, data from the host, batch 1024: model / host-to-device copy"]
    assert host["value"] == pytest.approx(0.4) and host["met"]  # the fastest kept variant: uint8
    resident = goals["cuda, data resident on the device, batch 1024: model / device-to-device copy"]
    assert resident["value"] == pytest.approx(2.0) and not resident["met"]
    u8 = goals["cuda, uint8 input from host, batch 1024: model / float32 transfer"]
    assert u8["value"] == pytest.approx(0.4) and u8["met"]


def test_thread_settings_are_recorded_with_the_machine(monkeypatch):
    from cifarlab.bench.timing import machine_facts
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    facts = machine_facts([torch.device("cpu")])
    assert facts["thread_env"]["OMP_WAIT_POLICY"] == "ACTIVE" and facts["torch_threads"] == torch.get_num_threads()


def test_half_row_runs_the_network_in_float16(trained_run):
    """The artifact converts its input to float32 (its contract); the half row must time the
    network itself in float16 (on a GPU the wrapped call failed: float16 weights, float32 input)."""
    from cifarlab.bench.variants import half_precision
    from cifarlab.transform.artifact import build_from_checkpoint, read_checkpoint
    model = build_from_checkpoint(read_checkpoint(trained_run / "model.pt")).eval()
    x = torch.rand(4, *model.in_shape)
    with torch.inference_mode():
        out = half_precision(model)(x)
        assert out.dtype == torch.float16
        assert (out.float() - model(x)).abs().max() < 1e-2
        assert next(model.parameters()).dtype == torch.float32  # the float row's model is left alone


def test_exact_operator_row_holds_rotations_and_refuses_non_linear_pipelines():
    """`transform bench`'s exact-operator contender: a rotation by a non-right angle is linear
    but not separable; it gets the Kronecker/dense form. A non-linear pipeline has none."""
    from cifarlab.errors import CifarlabError
    from cifarlab.models.exact import exact_operator_net
    rotate = Pipeline.parse("rotate:30,resize:28x28,grayscale")
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(exact_operator_net(rotate)(x), rotate(x), atol=1e-5)
    with pytest.raises(CifarlabError, match="not linear"):
        exact_operator_net(Pipeline.parse("adjust_gamma:0.7,resize:28x28"))
