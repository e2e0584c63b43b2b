"""Export round-trips: torch.export (.pt2) and ONNX artefacts reload without PuRL and match the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from purl.errors import ConfigError, OutputError, PurlError
from purl.export import ExportError, export_model
from purl.models import build_model
from purl.pruning.channels import channel_graph, keep_from_fraction, prune_channels

torch.set_num_threads(1)

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))

FRESH = textwrap.dedent(
    """
    import json, sys
    import torch
    import onnxruntime as ort
    x = torch.load(sys.argv[1], weights_only=True)
    want = torch.load(sys.argv[2], weights_only=True)
    program = torch.export.load(sys.argv[3]).module()
    with torch.no_grad():
        got_pt2 = program(x)
    sess = ort.InferenceSession(sys.argv[4], providers=["CPUExecutionProvider"])
    got_onnx = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    extra = sorted(m for m in sys.modules if m.split(".")[0] in ("purl", "baselines", "envs", "agents"))
    print(json.dumps({"pt2": float((got_pt2 - want).abs().max()), "onnx": float((got_onnx - want).abs().max()),
                      "shape": list(got_onnx.shape), "purl_modules": extra}))
    """
)


@pytest.fixture(scope="module")
def slim() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet-20", input_shape=(1, 8, 8), num_classes=10).eval()
    graph = channel_graph(model, X)
    return prune_channels(model, X, keep_from_fraction(graph.groups, 0.5)).eval()


def test_export_round_trips_in_fresh_process(slim: nn.Module, tmp_path: Path) -> None:
    result = export_model(slim, X, tmp_path / "out", name="resnet20-slim")
    assert set(result.paths) == {"pt2", "onnx"} and all(d <= 1e-4 for d in result.max_abs_diff.values())
    meta = json.loads((tmp_path / "out" / "resnet20-slim.json").read_text())
    assert meta["granularity"] == "channel" and meta["params"] == sum(p.numel() for p in slim.parameters())
    x = torch.randn(5, 1, 8, 8)  # a batch size never seen at export: the batch dimension is dynamic
    with torch.no_grad():
        want = slim(x)
    torch.save(x, tmp_path / "x.pt")
    torch.save(want, tmp_path / "want.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(tmp_path / "x.pt"), str(tmp_path / "want.pt"),
         result.paths["pt2"], result.paths["onnx"]],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["purl_modules"] == []  # only torch and onnxruntime were needed
    assert report["shape"] == [5, 10]
    assert report["pt2"] < 1e-4 and report["onnx"] < 1e-4


def test_weight_granularity_exports_masked_dense_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet-5", input_shape=(1, 8, 8), num_classes=10).eval()
    with torch.no_grad():  # 90% unstructured sparsity: zeros at full shape
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                w[w.abs() < w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0
    x = torch.randn(3, 1, 8, 8)
    result = export_model(model, x, tmp_path, granularity="weight", formats=["pt2"])
    assert "NOT faster" in result.note
    assert "NOT faster" in json.loads((tmp_path / "model.json").read_text())["note"]
    loaded = torch.export.load(result.paths["pt2"]).module()
    state = loaded.state_dict()
    assert state["conv2.weight"].shape == model.conv2.weight.shape  # dense shape, zeros stored
    assert (state["conv2.weight"] == 0).float().mean() >= 0.89


def test_bad_requests_are_one_line(slim: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="export formats must be a non-empty subset of pt2, onnx"):
        export_model(slim, X, tmp_path, formats=["tflite"])
    with pytest.raises(ConfigError, match="export granularity must be one of weight, channel"):
        export_model(slim, X, tmp_path, granularity="block")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write exports to"):
        export_model(slim, X, blocker / "sub")


def test_failed_export_keeps_previous_artefact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(2, 4)
    first = export_model(model, x, tmp_path)
    before = {f: Path(p).read_bytes() for f, p in first.paths.items()}

    def boom(*args: object, **kwargs: object) -> None:
        Path(args[2]).write_bytes(b"half-written")  # the exporter dies after writing part of the file
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(PurlError, match=r"^onnx export failed: RuntimeError: exporter crashed$"):
        export_model(nn.Sequential(nn.Linear(4, 2)), x, tmp_path)
    assert {f: Path(p).read_bytes() for f, p in first.paths.items()} == before  # nothing replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx", "model.pt2"]


def test_mismatching_artefact_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    import purl.export as ex

    real = ex.load_program
    monkeypatch.setattr(ex, "load_program", lambda p: (lambda x: real(p)(x) + 1.0))
    with pytest.raises(ExportError, match="differs from the model by 1"):
        export_model(model, torch.randn(2, 4), tmp_path, formats=["pt2"])


def test_purl_prune_at_weight_granularity_exports_the_masked_dense_model_and_says_it_is_not_faster(
        run_cli, tmp_path: Path) -> None:
    import json

    import numpy as np
    import onnxruntime as ort

    from purl.checkpoint import load_checkpoint, load_weights
    from purl.config import config_from_dict
    from purl.models import build_model

    out = tmp_path / "out"
    result = run_cli("prune", "--config", "configs/quick.yaml", "-q", "--device", "cpu", "-o", str(out),
                     f"cache_dir={tmp_path / 'cache'}", "pretrain.epochs=3", "finetune.max_steps=5")
    assert result.rc == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert "NOT faster" in results["export_note"] and set(results["exports"]) == {"pt2", "onnx"}
    assert "NOT faster" in result.out
    payload = load_checkpoint(out / "pruned.pt")
    config = config_from_dict(payload["config"])
    model = build_model(config.model.name, input_shape=(1, 8, 8), num_classes=10, **config.model.kwargs).eval()
    load_weights(model, payload)
    session = ort.InferenceSession(str(out / "pruned.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], model(x).numpy(),
                                   atol=1e-4)
    program = torch.export.load(str(out / "pruned.pt2")).module()
    zeros = sum(int((p == 0).sum()) for p in program.parameters())
    assert zeros >= 0.9 * results["total_params"] * results["achieved_sparsity"]  # the zeros travel at full shape
