"""ONNX export of the DASR inference path (Sec. 3.1), with dynamic height and width.

Three graphs, each taking an RGB float32 image [1, 3, H, W] in [0, 1] of any size:

- ``predictor.onnx``: P and A, ``lr -> (v_hat [1, 33], a [1, N])``;
- ``sr_mixed.onnx``: the experts mixed inside the graph (Eq. 2), ``(lr, a [1, N]) -> sr``; with
  the predictor this runs DASR on any image;
- ``sr_fused.onnx`` (with an image): the expert network fused for that image's a, ``lr -> sr``,
  an ordinary SRResNet: one expert's cost, what a deployment per image (or per camera) runs.

A plain SR network exports as ``sr.onnx`` only. The graphs come from the ``torch.export``-based
exporter (``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes``), the default of torch
2.9+. ``manifest.json`` records the files, their inputs and outputs, the vector and weights a
fused graph was built for, and the largest ONNX Runtime vs PyTorch difference measured at two
sizes (``--no-verify`` skips that).

    python -m dasrlib.export --model CKPT --out DIR [--image IMG [--set NAME=VALUE ...]]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from dasrlib.cli_options import add_model_options
from dasrlib.degradation.edit import edit_vector, parse_edits
from dasrlib.device import DeviceUnavailableError, module_device
from dasrlib.inference import plan_upscale, predict_vector
from dasrlib.io import ImageReadError, atomic_write, atomic_write_text, read_image
from dasrlib.models.loading import choose_model, is_dasr

__all__ = [
    "VERIFY_SIZES",
    "export_all",
    "export_fused",
    "export_mixed",
    "export_predictor",
    "main",
    "onnx_max_difference",
]

logger = logging.getLogger(__name__)

DESCRIPTION = __doc__.split("\n\n")[0]  # the first paragraph, for --help

VERIFY_SIZES: tuple[tuple[int, int], ...] = ((24, 32), (37, 19))
"""(H, W) of the two random inputs on which ONNX Runtime is compared with PyTorch."""

_EXAMPLE_SIZE = (32, 40)  # traced example input; the exported graph keeps H and W symbolic


class _PredictorGraph(nn.Module):
    """lr -> (v_hat, a): P then A (Sec. 3.1)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        v_hat = self.model.predict_degradation(lr)
        return v_hat, self.model.expert_weights(v_hat)


class _MixedGraph(nn.Module):
    """(lr, a) -> sr: the experts mixed by a inside the graph (Eq. 2), then one network."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor, a: Tensor) -> Tensor:
        return self.model.super_resolve(lr, a[0])


def _export(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
) -> Path:
    """``torch.onnx.export`` (dynamo) with H and W of the first input dynamic; atomic write."""
    height = torch.export.Dim("height")
    width = torch.export.Dim("width")
    dynamic: list[dict[int, torch.export.Dim] | None] = [{2: height, 3: width}]
    dynamic += [None] * (len(example) - 1)
    module = module.eval()
    with atomic_write(path) as tmp:
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            dynamic_shapes=tuple(dynamic),
            input_names=input_names,
            output_names=output_names,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
    logger.info("wrote %s (%s -> %s)", path, input_names, output_names)
    return path


def _example_image(device: torch.device) -> Tensor:
    """The traced example input [1, 3, *_EXAMPLE_SIZE], drawn from a fixed-seed generator so that
    exporting leaves the global RNG alone."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, *_EXAMPLE_SIZE, generator=generator).to(device)


def _require_dasr(model: nn.Module) -> None:
    if not is_dasr(model):
        raise TypeError(f"{type(model).__name__} is not a DASR model (it has no predictor)")


def export_predictor(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write P + A as ONNX: ``lr [1, 3, H, W] -> v_hat [1, v_dim], a [1, N]``."""
    _require_dasr(model)
    example = (_example_image(module_device(model)),)
    return _export(
        _PredictorGraph(model),
        example,
        Path(path),
        input_names=["lr"],
        output_names=["v_hat", "a"],
    )


def export_mixed(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the in-graph mixing network as ONNX: ``lr [1, 3, H, W], a [1, N] -> sr``."""
    _require_dasr(model)
    if getattr(model, "mixing", "weights") != "weights":
        raise ValueError(f"in-graph mixing is exported for mixing='weights', not {model.mixing!r}")
    device = module_device(model)
    num_experts = int(model.num_experts)
    example = (
        _example_image(device),
        torch.full((1, num_experts), 1.0 / num_experts, device=device),
    )
    return _export(
        _MixedGraph(model), example, Path(path), input_names=["lr", "a"], output_names=["sr"]
    )


def export_fused(
    model: nn.Module, path: str | os.PathLike[str], *, v: Tensor | None = None
) -> Path:
    """Write the per-image network as ONNX: ``lr [1, 3, H, W] -> sr [1, 3, sH, sW]``.

    DASR: the experts fused for ``v`` [v_dim] (required), i.e. ``fuse(A(v))``. A plain SR
    network is exported as it is (``v`` must be None).
    """
    device = module_device(model)
    example = (_example_image(device),)
    if is_dasr(model) and v is None:
        raise ValueError("exporting a fused DASR network needs the degradation vector v")
    plan = plan_upscale(example[0], model, v=v, precision="fp32", device=device)
    network = plan.network
    if not isinstance(network, nn.Module):
        raise TypeError(f"{type(model).__name__} has no single fused network to export")
    return _export(network, example, Path(path), input_names=["lr"], output_names=["sr"])


def onnx_max_difference(
    path: str | os.PathLike[str],
    reference: nn.Module,
    inputs: Sequence[Tensor],
) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs, for ``inputs`` (CPU provider)."""
    try:
        import onnxruntime
    except ImportError as error:  # a dev dependency (pyproject [dev]); export works without it
        raise ImportError(
            "comparing against ONNX Runtime needs the onnxruntime package "
            "(pip install onnxruntime, or the [dev] extra of dasrlib)"
        ) from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    feeds = {
        name: tensor.detach().cpu().numpy() for name, tensor in zip(names, inputs, strict=True)
    }
    got = session.run(None, feeds)
    device = module_device(reference)
    with torch.no_grad():
        expected = reference.eval()(*(tensor.to(device) for tensor in inputs))
    expected_list = list(expected) if isinstance(expected, tuple) else [expected]
    return max(
        float((torch.from_numpy(g) - e.float().cpu()).abs().max())
        for g, e in zip(got, expected_list, strict=True)
    )


def export_all(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    v: Tensor | None = None,
    verify: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, object]:
    """Export every graph that applies to ``model`` into ``out_dir``; write ``manifest.json``.

    DASR: predictor.onnx and sr_mixed.onnx, plus sr_fused.onnx when ``v`` is given. A plain SR
    network: sr.onnx. With ``verify``, ONNX Runtime is compared with PyTorch on random inputs
    of the `VERIFY_SIZES` (drawn from ``generator``) and the largest difference is recorded.
    Returns the manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, h, w, generator=generator) for h, w in VERIFY_SIZES]
    entries: dict[str, dict[str, object]] = {}

    def record(name: str, path: Path, reference: nn.Module, with_a: bool = False) -> None:
        entry: dict[str, object] = {"file": path.name}
        if verify:
            diffs = []
            for img in images:
                inputs = [img]
                if with_a:  # the weights A(P(img)) the mixed graph gets in use
                    with torch.no_grad():
                        v_hat = model.predict_degradation(img.to(module_device(model)))
                        inputs.append(model.expert_weights(v_hat))
                diffs.append(onnx_max_difference(path, reference, inputs))
            entry["max_abs_difference_vs_torch"] = max(diffs)
            entry["verified_sizes"] = [list(size) for size in VERIFY_SIZES]
        entries[name] = entry

    if is_dasr(model):
        predictor_path = export_predictor(model, out / "predictor.onnx")
        record("predictor", predictor_path, _PredictorGraph(model))
        mixed_path = export_mixed(model, out / "sr_mixed.onnx")
        record("sr_mixed", mixed_path, _MixedGraph(model), with_a=True)
        if v is not None:
            path = export_fused(model, out / "sr_fused.onnx", v=v)
            plan = plan_upscale(images[0], model, v=v, precision="fp32")
            assert isinstance(plan.network, nn.Module)
            record("sr_fused", path, plan.network)
            assert plan.v is not None and plan.a is not None
            entries["sr_fused"]["v"] = [round(float(x), 6) for x in plan.v]
            entries["sr_fused"]["a"] = [round(float(x), 6) for x in plan.a]
    else:
        path = export_fused(model, out / "sr.onnx")
        record("sr", path, model)
    manifest: dict[str, object] = {
        "graphs": entries,
        "input": "float32 RGB [1, 3, H, W] in [0, 1]; H and W dynamic",
        "scale": int(getattr(model, "scale", 0)) or None,
        "torch": torch.__version__,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m dasrlib.export`` / ``dasr export`` (the shared model options:
    `dasrlib.cli_options.add_model_options`, on the CPU and in fp32 by default)."""
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image", help="fuse the experts for this image's predicted degradation")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="edit the predicted degradation before fusing (see dasr upscale -h)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    add_model_options(
        parser, device="cpu", precision="fp32", precision_note="; of the prediction for --image"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Export the graphs; 2 for a usage error (model, options), 1 when the input image fails."""
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out!r} is a file, not a folder")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = choose_model(args.model, official_paths=args.official, device=args.device).model
        v = None
        if args.image is not None:
            _require_dasr(model)
            v = predict_vector(read_image(args.image), model, precision=args.precision)
            if args.set:
                v = edit_vector(v, parse_edits(args.set), level=args.level)
        elif args.set:
            raise ValueError("--set edits the degradation of an --image; give --image too")
        manifest = export_all(model, args.out, v=v, verify=not args.no_verify)
    except ImageReadError as error:  # the input image failed, not the command line
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, ImportError, DeviceUnavailableError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    graphs = manifest["graphs"]
    assert isinstance(graphs, dict)
    for entry in graphs.values():
        difference = entry.get("max_abs_difference_vs_torch")
        check = (
            "" if difference is None else f" (ONNX Runtime vs torch: max |diff| {difference:.2e})"
        )
        print(f"{Path(args.out) / entry['file']}{check}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dasrlib.export``: export a checkpoint's graphs (the same as ``dasr export``)."""
    parser = argparse.ArgumentParser(prog="python -m dasrlib.export", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
