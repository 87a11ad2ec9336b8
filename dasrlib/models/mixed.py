"""Mixed convolution (Sec. 3.1, Eq. 2): N expert kernels stored flat, mixed in one matmul.

The expert parameters of every convolution layer live in ONE tensor ``bank`` of shape [N, P]
(P = all weights and biases of one expert, in the order of a plain expert's state dict). Mixing the
experts for weighting factors ``a`` is therefore a single matmul over all layers:

    mixed[B, P] = a[B, N] @ bank[N, P]      (Eq. 2: W_C = sum_i a_i W_i^C, b_C = sum_i a_i b_i^C)

Each `MixedConv2d` of an expert topology owns no parameters; it knows the slice of the flat vector
that holds its weight and bias, and is called with a `MixedWeights` that says which flat vector to
read and how to apply it:

- shared (``flat`` is [P]): one weight set for the whole batch, a plain ``F.conv2d``. This is also
  the path of a batch of one image, and of `DASR.fuse`.
- per sample (``flat`` is [B, P]): every sample has its own kernels. Implementations
  (`PER_SAMPLE_IMPLS`), all exact up to float rounding:
  ``"grouped"``: the batch folded into channels, one grouped convolution with ``groups=B``;
  ``"grouped_cl"``: the same grouped convolution on channels-last activations: the batch is
  folded into the channel dimension of an (H, W, B * C) layout, which every layer's output
  and `PixelShuffle` keep, so the fold is a free view after the first layer (cuDNN's and
  oneDNN's NHWC grouped kernels);
  ``"bmm"``: im2col (``F.unfold``) and one batched matmul per layer;
  ``"expert_sum"``: by linearity, conv(x, sum_i a_i W_i) = sum_i a_i conv(x, W_i): one dense
  convolution with the N experts' kernels stacked on the output channels, then a per-sample
  weighted sum (N times the multiply-adds, but large dense GEMMs; needs the raw ``a`` and bank).

Channels-last: a flat vector may store every kernel in (out, kh, kw, in) order instead
(`channels_last_flat`, applied once to the bank); ``MixedWeights(channels_last=True)`` then reads
each weight as a channels-last view, so convolutions on channels-last activations need no
per-call weight transpose (`dasrlib.accel`).

Per layer (`MixedWeights.layers`, the training path): `ExpertBank.mix_layers` evaluates Eq. 2 layer
by layer on per-layer views of the bank (one ``torch.split``), so each layer reads its own mixed
(weight, bias) pair whole. Slicing every layer out of one [B, P] tensor instead costs, in the
backward pass, a zero-filled [B, P] gradient per slice (two per layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PER_SAMPLE_IMPLS",
    "ConvSlot",
    "ExpertBank",
    "MixedConv2d",
    "MixedWeights",
    "LayerParams",
    "PixelShuffle",
    "apply_layer",
    "channels_last_flat",
    "conv_layout",
    "flatten_expert_state",
    "layout_numel",
    "split_layers",
    "unflatten_expert_state",
]

PER_SAMPLE_IMPLS = ("grouped", "grouped_cl", "bmm", "expert_sum")

# One layer's flat parameters: weight [..., out * in * k * k] and bias [..., out] (or None).
LayerParams = tuple[Tensor, Tensor | None]


@dataclass(frozen=True)
class MixedWeights:
    """The parameters one forward pass of a mixed network reads (Eq. 2).

    ``flat``: [P] (shared by the whole batch) or [B, P] (one row per sample); None for
    ``impl="expert_sum"``, which instead uses ``coefficients`` [B, N] and ``bank`` [N, P].
    ``layers``: the same parameters per layer (`split_layers`, `ExpertBank.mix_layers`), indexed
    by ``ConvSlot.index``; when given, layers read these instead of slicing ``flat``.
    ``channels_last``: the kernels in ``flat`` / ``bank`` are stored in (out, kh, kw, in) order
    (`channels_last_flat`) and are read as channels-last views.
    """

    flat: Tensor | None
    impl: str = "grouped"
    coefficients: Tensor | None = None
    bank: Tensor | None = None
    channels_last: bool = False
    layers: tuple[LayerParams, ...] | None = None

    @staticmethod
    def shared(flat: Tensor, *, channels_last: bool = False) -> MixedWeights:
        """One flat parameter vector [P] for every sample of the batch."""
        if flat.ndim != 1:
            raise ValueError(f"shared mixed weights must be 1-D [P], got shape {tuple(flat.shape)}")
        return MixedWeights(flat=flat, impl="shared", channels_last=channels_last)


@dataclass(frozen=True)
class ConvSlot:
    """Where one convolution layer's weight and bias sit in the flat expert vector; ``index``:
    the layer's position in the layout (its entry in ``MixedWeights.layers``)."""

    index: int
    name: str
    weight_shape: tuple[int, int, int, int]
    weight_offset: int
    bias_offset: int | None

    @property
    def weight_numel(self) -> int:
        out_c, in_c, kh, kw = self.weight_shape
        return out_c * in_c * kh * kw

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]


class MixedConv2d(nn.Module):
    """A convolution whose kernel and bias are read from a `MixedWeights` (Eq. 2); no parameters.

    Input [B, C_in, H, W] -> [B, C_out, H', W']. Same geometry as ``nn.Conv2d(in_channels,
    out_channels, kernel_size, stride, padding=kernel_size // 2)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.has_bias = bias
        self.slot: ConvSlot | None = None  # assigned by `conv_layout`

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.has_bias}"
        )

    def _params(self, flat: Tensor, *, channels_last: bool = False) -> tuple[Tensor, Tensor | None]:
        """Weight [..., out, in, k, k] and bias [..., out] views of a flat [P] or [B, P] vector
        (``channels_last``: kernels stored in (out, kh, kw, in) order, see `channels_last_flat`)."""
        slot = self._slot()
        start = slot.weight_offset
        bias = None
        if slot.bias_offset is not None:
            bias = flat[..., slot.bias_offset : slot.bias_offset + slot.out_channels]
        return self._shaped(flat[..., start : start + slot.weight_numel], bias, channels_last)

    def _shaped(
        self, weight: Tensor, bias: Tensor | None, channels_last: bool
    ) -> tuple[Tensor, Tensor | None]:
        """This layer's flat weight [..., out * in * k * k] as [..., out, in, k, k] (a view)."""
        slot = self._slot()
        lead = weight.shape[:-1]
        if channels_last:
            out_c, in_c, kh, kw = slot.weight_shape
            return weight.reshape(*lead, out_c, kh, kw, in_c).movedim(-1, -3), bias
        return weight.reshape(*lead, *slot.weight_shape), bias

    def _mixed_params(self, mixed: MixedWeights) -> tuple[Tensor, Tensor | None]:
        """Weight [..., out, in, k, k] and bias [..., out] of this layer in ``mixed``."""
        if mixed.layers is not None:
            weight, bias = mixed.layers[self._slot().index]
            return self._shaped(weight, bias, mixed.channels_last)
        if mixed.flat is None:
            raise ValueError(f"mixed weights for impl {mixed.impl!r} need a flat parameter tensor")
        return self._params(mixed.flat, channels_last=mixed.channels_last)

    def _slot(self) -> ConvSlot:
        if self.slot is None:
            raise RuntimeError("MixedConv2d has no slot; build it with conv_layout(network)")
        return self.slot

    def forward(self, x: Tensor, mixed: MixedWeights) -> Tensor:
        if mixed.impl == "expert_sum":
            return self._forward_expert_sum(x, mixed)
        weight, bias = self._mixed_params(mixed)
        if weight.ndim == 4:
            return F.conv2d(x, weight, bias, self.stride, self.padding)
        if mixed.channels_last:
            raise ValueError("channels-last mixed weights are supported for shared weights only")
        if weight.shape[0] != x.shape[0]:
            raise ValueError(
                f"per-sample weights for {weight.shape[0]} samples but the input batch has "
                f"{x.shape[0]}"
            )
        if mixed.impl == "grouped":
            return self._forward_grouped(x, weight, bias)
        if mixed.impl == "grouped_cl":
            return self._forward_grouped_channels_last(x, weight, bias)
        if mixed.impl == "bmm":
            return self._forward_bmm(x, weight, bias)
        raise ValueError(f"unknown per-sample impl {mixed.impl!r}; expected {PER_SAMPLE_IMPLS}")

    def _forward_grouped(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        batch, _, height, width = x.shape
        weight = weight.reshape(batch * self.out_channels, *weight.shape[2:])
        bias = None if bias is None else bias.reshape(batch * self.out_channels)
        folded = x.reshape(1, batch * self.in_channels, height, width)
        out = F.conv2d(folded, weight, bias, self.stride, self.padding, groups=batch)
        return out.view(batch, self.out_channels, out.shape[-2], out.shape[-1])

    def _forward_grouped_channels_last(
        self, x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        batch, _, height, width = x.shape
        weight = weight.reshape(batch * self.out_channels, *weight.shape[2:])
        bias = None if bias is None else bias.reshape(batch * self.out_channels)
        # [B, C, H, W] -> [1, B * C, H, W] stored as (H, W, B * C), i.e. channels-last: a view
        # when x already has that layout (the output of this function has it), else one copy.
        folded = (
            x.permute(2, 3, 0, 1)
            .contiguous()
            .view(1, height, width, batch * self.in_channels)
            .permute(0, 3, 1, 2)
        )
        out = F.conv2d(folded, weight, bias, self.stride, self.padding, groups=batch)
        # Channels-last [1, B * out, H', W'] -> [B, out, H', W'] over the same memory.
        return out.view(batch, self.out_channels, out.shape[-2], out.shape[-1])

    def _forward_bmm(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        batch, _, height, width = x.shape
        k, p, s = self.kernel_size, self.padding, self.stride
        out_h = (height + 2 * p - k) // s + 1
        out_w = (width + 2 * p - k) // s + 1
        columns = F.unfold(x, k, padding=p, stride=s)  # [B, in*k*k, L]
        weight = weight.reshape(batch, self.out_channels, -1)
        if bias is None:
            out = torch.bmm(weight, columns)
        else:
            out = torch.baddbmm(bias.unsqueeze(-1), weight, columns)
        return out.view(batch, self.out_channels, out_h, out_w)

    def _forward_expert_sum(self, x: Tensor, mixed: MixedWeights) -> Tensor:
        if mixed.coefficients is None or mixed.bank is None:
            raise ValueError("impl 'expert_sum' needs the coefficients [B, N] and bank [N, P]")
        coefficients = mixed.coefficients
        num_experts = mixed.bank.shape[0]
        # [N, out, in, k, k], [N, out]
        weight, bias = self._params(mixed.bank, channels_last=mixed.channels_last)
        weight = weight.reshape(num_experts * self.out_channels, *weight.shape[2:])
        bias = None if bias is None else bias.reshape(num_experts * self.out_channels)
        out = F.conv2d(x, weight, bias, self.stride, self.padding)
        out = out.view(x.shape[0], num_experts, self.out_channels, out.shape[-2], out.shape[-1])
        if coefficients.ndim == 1:
            coefficients = coefficients.expand(x.shape[0], num_experts)
        return torch.einsum("bn,bnchw->bchw", coefficients.to(out.dtype), out)


def _is_batch_folded(x: Tensor) -> bool:
    """Whether [B, C, H, W] ``x`` is stored as (H, W, B, C): the folded layout of ``grouped_cl``."""
    batch, channels, _, width = x.shape
    return batch > 1 and x.stride() == (channels, 1, width * batch * channels, batch * channels)


class PixelShuffle(nn.PixelShuffle):
    """The experts' upsampler (Sec. 3.1): ``nn.PixelShuffle`` that keeps the batch-folded
    (H, W, B * C) layout of ``grouped_cl`` activations (one copy; other layouts go to
    ``F.pixel_shuffle``). Same values for any input.

    [B, C * r * r, H, W] -> [B, C, r * H, r * W].
    """

    def forward(self, x: Tensor) -> Tensor:
        if not _is_batch_folded(x):
            return F.pixel_shuffle(x, self.upscale_factor)
        batch, channels, height, width = x.shape
        r = self.upscale_factor
        out_channels = channels // (r * r)
        # (H, W, B, C, r_h, r_w) -> (H, r_h, W, r_w, B, C), i.e. (r * H, r * W, B, C).
        shuffled = (
            x.permute(2, 3, 0, 1)
            .view(height, width, batch, out_channels, r, r)
            .permute(0, 4, 1, 5, 2, 3)
            .contiguous()
            .view(height * r, width * r, batch, out_channels)
        )
        return shuffled.permute(2, 3, 0, 1)


def apply_layer(layer: nn.Module, x: Tensor, mixed: MixedWeights | None) -> Tensor:
    """Run ``layer`` on ``x``; mixed layers also receive ``mixed`` (None for plain networks)."""
    if isinstance(layer, MixedConv2d):
        if mixed is None:
            raise ValueError("this network has mixed convolutions; pass MixedWeights")
        return layer(x, mixed)
    return layer(x)


def _mixed_convs(network: nn.Module) -> Iterator[tuple[str, MixedConv2d]]:
    for name, module in network.named_modules():
        if isinstance(module, MixedConv2d):
            yield name, module


def conv_layout(network: nn.Module) -> list[ConvSlot]:
    """Assign every `MixedConv2d` of ``network`` its slice of the flat expert vector.

    The order is the module order, which is the order of the matching plain network's state dict
    (``<name>.weight``, then ``<name>.bias``), so flattening a plain expert's state dict gives the
    flat vector directly.
    """
    slots: list[ConvSlot] = []
    offset = 0
    for index, (name, conv) in enumerate(_mixed_convs(network)):
        shape = (conv.out_channels, conv.in_channels, conv.kernel_size, conv.kernel_size)
        weight_offset = offset
        offset += shape[0] * shape[1] * shape[2] * shape[3]
        bias_offset = None
        if conv.has_bias:
            bias_offset = offset
            offset += conv.out_channels
        conv.slot = ConvSlot(index, name, shape, weight_offset, bias_offset)
        slots.append(conv.slot)
    if not slots:
        raise ValueError("network has no MixedConv2d layers")
    return slots


def layout_numel(layout: list[ConvSlot]) -> int:
    """P: the number of parameters of one expert described by ``layout``."""
    last = layout[-1]
    end = last.weight_offset + last.weight_numel
    if last.bias_offset is not None:
        end = last.bias_offset + last.out_channels
    return end


def split_layers(layout: list[ConvSlot], flat: Tensor) -> tuple[LayerParams, ...]:
    """A flat [..., P] tensor (mixed parameters or the bank) as per-layer (weight, bias) views,
    indexed by ``ConvSlot.index``; one ``torch.split``, whose backward is one concatenation."""
    sizes = [size for slot in layout for size in _block_sizes(slot)]
    blocks = iter(torch.split(flat, sizes, dim=-1))
    return tuple(
        (next(blocks), None if slot.bias_offset is None else next(blocks)) for slot in layout
    )


def _block_sizes(slot: ConvSlot) -> tuple[int, ...]:
    """The consecutive blocks of one layer in the flat vector: weight, then bias if any."""
    return (
        (slot.weight_numel,) if slot.bias_offset is None else (slot.weight_numel, slot.out_channels)
    )


def flatten_expert_state(layout: list[ConvSlot], state: dict[str, Tensor]) -> Tensor:
    """A plain expert's state dict -> flat vector [P] (missing or misshaped keys raise)."""
    pieces: list[Tensor] = []
    for slot in layout:
        weight = _expect(state, f"{slot.name}.weight", slot.weight_shape)
        pieces.append(weight.reshape(-1))
        if slot.bias_offset is not None:
            pieces.append(_expect(state, f"{slot.name}.bias", (slot.out_channels,)).reshape(-1))
    return torch.cat(pieces)


def channels_last_flat(layout: list[ConvSlot], flat: Tensor) -> Tensor:
    """A flat [..., P] tensor (a vector or the bank) with every kernel reordered from
    (out, in, kh, kw) to (out, kh, kw, in); biases unchanged. Mixing commutes with this
    reordering, so ``channels_last_flat(layout, a @ bank) == a @ channels_last_flat(layout, bank)``.
    """
    out = flat.clone()
    lead = flat.shape[:-1]
    for slot in layout:
        part = slice(slot.weight_offset, slot.weight_offset + slot.weight_numel)
        kernel = flat[..., part].reshape(*lead, *slot.weight_shape)
        out[..., part] = kernel.movedim(-3, -1).reshape(*lead, slot.weight_numel)
    return out


def unflatten_expert_state(layout: list[ConvSlot], flat: Tensor) -> dict[str, Tensor]:
    """Flat vector [P] -> a plain expert's state dict (views of ``flat``)."""
    state: dict[str, Tensor] = {}
    for slot in layout:
        start = slot.weight_offset
        state[f"{slot.name}.weight"] = flat[start : start + slot.weight_numel].view(
            slot.weight_shape
        )
        if slot.bias_offset is not None:
            state[f"{slot.name}.bias"] = flat[
                slot.bias_offset : slot.bias_offset + slot.out_channels
            ]
    return state


def _expect(state: dict[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    if key not in state:
        raise KeyError(f"expert state dict lacks {key!r}")
    tensor = state[key]
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{key!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    return tensor


class ExpertBank(nn.Module):
    """The parameters of N experts, one flat row each: ``bank`` [N, P] (Eq. 2).

    ``mix(a)`` returns ``a @ bank``: [P] for ``a`` [N], [B, P] for ``a`` [B, N];
    ``mix_layers(a)`` returns the same values layer by layer (the training path).
    """

    def __init__(self, *, layout: list[ConvSlot], num_experts: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.layout = layout
        self.num_experts = num_experts
        self.bank = nn.Parameter(torch.zeros(num_experts, layout_numel(layout)))

    def mix(self, a: Tensor) -> Tensor:
        """Mixed parameters for weighting factors ``a`` [N] or [B, N] (one matmul)."""
        return self._coefficients(a) @ self.bank

    def mix_layers(self, a: Tensor) -> tuple[LayerParams, ...]:
        """Eq. 2 per layer: (a @ W_l, a @ b_l) for every layer l, from per-layer views of the bank
        (`split_layers`); [n_l] for ``a`` [N], [B, n_l] for ``a`` [B, N]. The same values as
        `mix`, but each layer's gradient is its own [B, n_l] block, never a [B, P] tensor."""
        a = self._coefficients(a)
        return tuple(
            (a @ weight, None if bias is None else a @ bias)
            for weight, bias in split_layers(self.layout, self.bank)
        )

    def _coefficients(self, a: Tensor) -> Tensor:
        """``a`` checked against N and cast to the bank's dtype."""
        if a.shape[-1] != self.num_experts:
            raise ValueError(f"weights a have {a.shape[-1]} entries, expected {self.num_experts}")
        return a.to(self.bank.dtype)

    def set_expert(self, index: int, flat: Tensor) -> None:
        """Overwrite expert ``index`` with a flat vector [P]."""
        with torch.no_grad():
            self.bank[index].copy_(flat)
