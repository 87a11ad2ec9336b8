"""ONNX export (dasrlib.export): ONNX Runtime equals PyTorch within 1e-4 at two sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dasrlib.export import VERIFY_SIZES, export_all, main
from dasrlib.inference import upscale
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet

onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow  # three torch.export traces, about 15 s on 2 CPU cores


@pytest.fixture(scope="module")
def model() -> DASR:
    model = DASR(
        num_feat=8, num_block=2, predictor_feat=8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        model.experts.bank.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def v() -> torch.Tensor:
    return torch.rand(33, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exported(
    model: DASR, v: torch.Tensor, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("onnx")
    return out, export_all(model, out, v=v)


def _run(path: Path, **feeds: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in feeds.items()})


def test_manifest_records_differences_below_1e_4(exported: tuple[Path, dict[str, object]]) -> None:
    out, manifest = exported
    graphs = manifest["graphs"]
    assert set(graphs) == {"predictor", "sr_mixed", "sr_fused"}
    for entry in graphs.values():
        assert (out / entry["file"]).is_file()
        assert entry["max_abs_difference_vs_torch"] < 1e-4
        assert len(entry["verified_sizes"]) == 2
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert len({tuple(size) for size in VERIFY_SIZES}) == 2


@pytest.mark.parametrize("size", [(21, 30), (40, 17)])
def test_onnx_equals_pytorch_at_two_sizes(
    exported: tuple[Path, dict[str, object]], model: DASR, v: torch.Tensor, size: tuple[int, int]
) -> None:
    out, _ = exported
    lr = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        v_hat = model.predict_degradation(lr)
        a_hat = model.expert_weights(v_hat)
        automatic = model(lr).sr
        with_v = model(lr, v=v[None]).sr
    onnx_v, onnx_a = _run(out / "predictor.onnx", lr=lr)
    assert np.abs(onnx_v - v_hat.numpy()).max() < 1e-4
    assert np.abs(onnx_a - a_hat.numpy()).max() < 1e-4
    (mixed,) = _run(out / "sr_mixed.onnx", lr=lr, a=torch.from_numpy(onnx_a))
    assert mixed.shape == (1, 3, 4 * size[0], 4 * size[1])
    assert np.abs(mixed - automatic.numpy()).max() < 1e-4
    (fused,) = _run(out / "sr_fused.onnx", lr=lr)
    assert np.abs(fused - with_v.numpy()).max() < 1e-4
    clamped = upscale(lr, model, v=v, precision="fp32")
    assert np.abs(np.clip(fused, 0, 1) - clamped.numpy()).max() < 1e-4


def test_command_line_exports_a_plain_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "srresnet.safetensors"
    save_weights(SRResNet(num_feat=8, num_block=1), checkpoint)
    status = main(["--model", str(checkpoint), "--out", str(tmp_path / "onnx")])
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["manifest.json", "sr.onnx"]
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["graphs"]["sr"]["max_abs_difference_vs_torch"] < 1e-4
    assert "sr.onnx" in capsys.readouterr().out
