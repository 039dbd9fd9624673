"""Exports for use without cifarlab: ONNX checked in onnxruntime, and safe output paths."""
import pytest
import torch

import cifarlab
from cifarlab.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_transform_and_classifier_onnx_exports_agree_with_pytorch(capsys, sandbox):
    import onnxruntime as ort
    for kind, run in (("transform", sandbox / "T"), ("classify", sandbox / "C")):
        assert main([kind, "export", str(run), "--format", "onnx"]) == 0
        out = capsys.readouterr().out
        assert "onnxruntime agrees with PyTorch" in out and "held-out images" in out
        session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
        net = cifarlab.load(run)
        for batch in (1, 7):   # the batch dimension is dynamic
            x = torch.rand(batch, 3, 32, 32)
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
            want = net(x)
            assert got.shape == want.shape
            assert (got - want).abs().max() <= (1e-5 if kind == "transform" else 1e-4)
        assert not [p for p in run.iterdir() if "unchecked" in p.name]
        assert main([kind, "export", str(run), "--format", "onnx"]) == 2   # exists: --overwrite needed
        assert "--overwrite" in capsys.readouterr().err
