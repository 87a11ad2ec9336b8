"""Fast repeated inference: the complete DASR path in one precision and layout, graph-captured.

DASR's inference path (Sec. 3.1) is P, A, the mixing matmul (Eq. 2) and ONE expert with the
mixed weights. `FastDASR` runs exactly that per image in a chosen dtype (float32, bfloat16,
float16: the module is converted, no autocast) and memory format (channels-last activations with
channels-last kernels: the bank is reordered once, `dasrlib.models.mixed.channels_last_flat`, so
the mixing matmul writes kernels already in the layout the convolutions read). The network reads
its weights as views of the mixed flat vector; nothing is built per call.

`GraphedSR` captures any such callable for one input shape into a CUDA graph (predictor +
weighting + mixing + network: one replay, no per-layer launches from Python); the mixed vector
then lives at a fixed address of the graph's memory pool: the static buffer the network reads.
On a CPU it runs the callable eagerly. `compile_for_shape` picks graph capture, torch.compile or
eager; `GraphCache` keeps one graph per input shape for repeated same-size inputs (video frames,
equal tiles). `PreparedNetwork` gives a plain SR network the same dtype/layout treatment, so a
baseline is timed like for like.

All of these take and return float32 NCHW images in [0, 1] ([B, 3, H, W] -> [B, 3, sH, sW],
not clamped) and snapshot the model's weights when built: rebuild after changing the model.
Reduced precision can overflow on some inputs; `dasrlib.inference.upscale` checks for that and
falls back to float32, these wrappers do not.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dasrlib.device import module_device
from dasrlib.models.dasr import DASR
from dasrlib.models.mixed import ExpertBank, MixedWeights, channels_last_flat

__all__ = [
    "COMPILE_MODES",
    "PRECISION_DTYPES",
    "FastDASR",
    "GraphCache",
    "GraphedSR",
    "PreparedNetwork",
    "accelerate",
    "compile_for_shape",
    "prepare",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "tf32": torch.float32,  # TF32 is a backend switch (torch.backends), not a dtype
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
COMPILE_MODES = ("eager", "cudagraph", "compile")

SRCallable = Callable[[Tensor], Tensor]


def resolve_dtype(precision: str | torch.dtype) -> torch.dtype:
    """fp32 / tf32 -> float32, bf16 -> bfloat16, fp16 -> float16 (a dtype passes through)."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISION_DTYPES.values():
            raise ValueError(f"unsupported dtype {precision}; expected float32, bfloat16, float16")
        return precision
    if precision not in PRECISION_DTYPES:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {list(PRECISION_DTYPES)}"
        )
    return PRECISION_DTYPES[precision]


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class PreparedNetwork(nn.Module):
    """A copy of a plain SR network in ``dtype`` and memory format; float32 in and out.

    lr [B, 3, H, W] float32 -> sr [B, 3, sH, sW] float32 (contiguous). The baseline twin of
    `FastDASR`: the same conversions, so the two are compared like for like.
    """

    def __init__(
        self, network: nn.Module, *, dtype: torch.dtype = torch.float32, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.dtype = resolve_dtype(dtype)
        self.channels_last = channels_last
        self.network = copy.deepcopy(network).eval().to(dtype=self.dtype)
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.scale = getattr(network, "scale", None)

    def forward(self, lr: Tensor) -> Tensor:
        x = lr.to(dtype=self.dtype, memory_format=_memory_format(self.channels_last))
        sr = self.network(x)
        return sr.to(dtype=torch.float32, memory_format=torch.contiguous_format)


class FastDASR(nn.Module):
    """The complete DASR inference path (Sec. 3.1) in one dtype and memory format.

    Per image: v_hat = P(lr) (in ``dtype``), a = A(v_hat) (float32), flat = a @ bank (Eq. 2, one
    matmul over all layers, in ``dtype``), then the expert topology reading its kernels as views
    of ``flat`` (channels-last views when ``channels_last``). lr [B, 3, H, W] float32 in [0, 1]
    -> sr [B, 3, sH, sW] float32, each image with its own a (a batch loops over its images).

    ``predictor_dtype`` (default: ``dtype``) runs P alone in another dtype, e.g. bfloat16 P
    with a float32 network: P only yields v_hat, a global average over the image, so its
    rounding mostly averages out, while it costs about a tenth of the network (an option,
    measured by benchmarks/inference.py; not the default).

    ``model`` must mix by parameters (``mixing="weights"``). The predictor and the bank are
    copied (converted) when built; ``model`` itself is not changed.
    """

    def __init__(
        self,
        model: DASR,
        *,
        dtype: torch.dtype | str = torch.float32,
        channels_last: bool = False,
        predictor_dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__()
        if model.mixing != "weights" or not isinstance(model.experts, ExpertBank):
            raise ValueError(
                f"FastDASR needs a DASR that mixes parameters (mixing='weights'), "
                f"got mixing={model.mixing!r}"
            )
        self.dtype = resolve_dtype(dtype)
        self.channels_last = channels_last
        self.scale = model.scale
        memory_format = _memory_format(channels_last)
        self.predictor_dtype = (
            self.dtype if predictor_dtype is None else resolve_dtype(predictor_dtype)
        )
        self.predictor = copy.deepcopy(model.predictor).eval().to(dtype=self.predictor_dtype)
        self.predictor = self.predictor.to(memory_format=memory_format)
        self.weighting = copy.deepcopy(model.weighting).eval().float()
        # The parameter-free expert topology (MixedConv2d layers carry only their slots).
        self.network = copy.deepcopy(model.network).eval()
        bank = model.experts.bank.detach()
        if channels_last:
            bank = channels_last_flat(model.experts.layout, bank)
        self.register_buffer("bank", bank.to(dtype=self.dtype, copy=True), persistent=False)

    def mixed_flat(self, a: Tensor) -> Tensor:
        """The mixed parameters for a [N]: flat [P] in ``dtype`` (Eq. 2)."""
        return a.to(self.bank.dtype) @ self.bank

    def adapt(self, image: Tensor) -> Tensor:
        """P, A and the mixing for one image [1, 3, H, W] (already converted): flat [P]."""
        if self.predictor_dtype != image.dtype:
            image = image.to(self.predictor_dtype)
        v_hat = self.predictor(image).float()
        return self.mixed_flat(self.weighting(v_hat)[0])

    def forward(self, lr: Tensor) -> Tensor:
        x = lr.to(dtype=self.dtype, memory_format=_memory_format(self.channels_last))
        outputs = []
        for index in range(x.shape[0]):
            image = x[index : index + 1]
            mixed = MixedWeights.shared(self.adapt(image), channels_last=self.channels_last)
            outputs.append(self.network(image, mixed))
        sr = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return sr.to(dtype=torch.float32, memory_format=torch.contiguous_format)


def prepare(
    model: nn.Module, *, precision: str | torch.dtype = "fp32", channels_last: bool = False
) -> nn.Module:
    """`FastDASR` for a parameter-mixing `DASR`, `PreparedNetwork` for any other SR network."""
    dtype = resolve_dtype(precision)
    if isinstance(model, DASR):
        return FastDASR(model, dtype=dtype, channels_last=channels_last)
    return PreparedNetwork(model, dtype=dtype, channels_last=channels_last)


def _capturable_autocast() -> contextlib.AbstractContextManager[object]:
    """Inside an active CUDA autocast: the same autocast with its weight-cast cache off (cached
    casts made during a capture must not outlive it, see torch.cuda.graph); else nothing."""
    if not torch.is_autocast_enabled("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)


class GraphedSR:
    """``fn`` captured into a CUDA graph for inputs shaped like ``example`` (CPU: eager).

    ``fn`` must be a pure function of its input tensor without host synchronisation (no
    ``.item()``, no data-dependent Python branching): `FastDASR`, `PreparedNetwork` and plain SR
    networks are. The capture runs ``warmup`` calls on a side stream first (cuDNN picks its
    algorithms there). A call copies the input into the static input buffer, replays the graph
    and returns the output: a fresh tensor when ``clone_output`` (the default), else the static
    output buffer itself, which the next call overwrites. Calls without grad.
    """

    def __init__(
        self, fn: SRCallable, example: Tensor, *, warmup: int = 3, clone_output: bool = True
    ) -> None:
        self.fn = fn
        self.shape = tuple(example.shape)
        self.dtype = example.dtype
        self.device = example.device
        self.clone_output = clone_output
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_input: Tensor | None = None
        self.static_output: Tensor | None = None
        if example.device.type != "cuda":
            logger.info("GraphedSR: %s has no CUDA graphs; running eagerly", example.device)
            return
        with torch.cuda.device(example.device):
            self._capture(example, warmup)

    def _capture(self, example: Tensor, warmup: int) -> None:
        static_input = example.detach().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), _capturable_autocast(), torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                self.fn(static_input)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), _capturable_autocast(), torch.cuda.graph(graph):
            static_output = self.fn(static_input)
        self.graph, self.static_input, self.static_output = graph, static_input, static_output

    @property
    def captured(self) -> bool:
        """True when calls replay a CUDA graph (False: eager fallback)."""
        return self.graph is not None

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape) != self.shape or x.dtype != self.dtype or x.device != self.device:
            raise ValueError(
                f"GraphedSR was captured for {self.shape} {self.dtype} on {self.device}, "
                f"got {tuple(x.shape)} {x.dtype} on {x.device}"
            )
        if self.graph is None:
            with torch.no_grad():
                return self.fn(x)
        assert self.static_input is not None and self.static_output is not None
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone() if self.clone_output else self.static_output


def accelerate(
    model: nn.Module,
    *,
    precision: str | torch.dtype = "fp16",
    channels_last: bool = True,
    graphs: bool = True,
    max_graphs: int = 4,
) -> SRCallable:
    """The fastest repeated-inference callable for ``model`` on its device: `prepare` (dtype and
    layout) and, on a GPU with ``graphs``, a `GraphCache` (one CUDA graph per input shape).

    Call it outside autocast (the dtype is the model's own). float32 [B, 3, H, W] in [0, 1] ->
    float32 [B, 3, sH, sW]. For `dasrlib.inference.upscale` on repeated same-size inputs, or on
    tiles of equal size, with its own overflow check around it.
    """
    prepared = prepare(model, precision=precision, channels_last=channels_last)
    if graphs and module_device(prepared).type == "cuda":
        return GraphCache(prepared, max_graphs=max_graphs)

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return prepared(x)

    return run


def compile_for_shape(
    fn: SRCallable,
    example: Tensor,
    *,
    mode: str = "cudagraph",
    compile_mode: str = "max-autotune-no-cudagraphs",
) -> SRCallable:
    """A fast callable for repeated inputs shaped like ``example``.

    ``mode``: ``"cudagraph"`` (`GraphedSR`; eager on a CPU), ``"compile"`` (``torch.compile``
    with ``compile_mode``, compiled now by one call on ``example``, shapes static), or
    ``"eager"`` (``fn`` under no_grad).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {COMPILE_MODES}")
    if mode == "cudagraph":
        return GraphedSR(fn, example)
    if mode == "compile":
        compiled = torch.compile(fn, mode=compile_mode, dynamic=False)

        def run_compiled(x: Tensor) -> Tensor:
            with torch.no_grad():
                return compiled(x)

        run_compiled(example)
        return run_compiled

    def run_eager(x: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(x)

    return run_eager


class GraphCache:
    """One `GraphedSR` per input shape, built on first use; at most ``max_graphs`` (least
    recently used dropped first). On a CPU it calls ``fn`` eagerly.

    For repeated same-size inference (frames of a video, equal tiles). Each graph keeps its own
    activation memory, so GPU memory grows with the number of shapes kept.
    """

    def __init__(self, fn: SRCallable, *, max_graphs: int = 4) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.fn = fn
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple[object, ...], GraphedSR] = OrderedDict()

    def __call__(self, x: Tensor) -> Tensor:
        if x.device.type != "cuda":
            with torch.no_grad():
                return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device)
        graphed = self.graphs.get(key)
        if graphed is None:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            graphed = GraphedSR(self.fn, x)
            self.graphs[key] = graphed
        else:
            self.graphs.move_to_end(key)
        return graphed(x)
