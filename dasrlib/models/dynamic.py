"""Single-expert dynamic convolutions for the Fig. 4(e) and 4(f) ablations.

Both produce, like `ExpertBank.mix`, a flat parameter vector [P] or [B, P] from the weighting
factors a, so they reuse the mixed-convolution paths (shared, per sample, fused) unchanged and, once
fused, cost one expert. Both are conditioned on a = A(v_hat) (one set for all layers, as DASR),
not on per-layer feature statistics as in the original dynamic-convolution papers.

- `ChannelMappedExpert` (Fig. 4(e), "a single expert ... learning a mapping matrix and multiplying
  it to the parameters"): one expert theta and a learned matrix M [N, S] (S = all output channels
  of all layers); the kernels and biases of output channel c are scaled by s_c = 1 + (a M)_c.
- `DecomposedDynamicExpert` (Fig. 4(f), DCD, Li et al., ICLR 2021): W_C(a) = Lambda_C(a) W0_C +
  P_C Phi_C(a) Q_C^T with a channel-wise scale Lambda_C = 1 + (a M_Lambda)_C, a dynamic
  L_C x L_C matrix Phi_C = reshape(a M_Phi) and static factors P_C [out, L_C], Q_C [in, L_C],
  L_C = C_in / 2^floor(log2 sqrt(C_in)) as in DCD. The rank-L residual is DCD's 1x1 dynamic branch;
  it is added to the centre tap of the k x k kernel, which is the same operator (with the padding
  k // 2 used here) and keeps one convolution per layer. M_Lambda and M_Phi start at zero, so both
  variants start as the plain expert they are initialised from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dasrlib.models.mixed import ConvSlot, layout_numel

__all__ = ["ChannelMappedExpert", "DecomposedDynamicExpert", "dcd_latent_dim"]


def _channel_index(layout: list[ConvSlot]) -> tuple[Tensor, int]:
    """For every element of the flat vector [P], the index of its output channel among all S."""
    pieces: list[Tensor] = []
    channel_base = 0
    for slot in layout:
        out_c = slot.out_channels
        per_channel = slot.weight_numel // out_c
        channels = torch.arange(channel_base, channel_base + out_c)
        pieces.append(channels.repeat_interleave(per_channel))
        if slot.bias_offset is not None:
            pieces.append(channels)
        channel_base += out_c
    return torch.cat(pieces), channel_base


class _SingleExpert(nn.Module):
    """One expert ``base`` [P] and, per element of it, the index of its output channel."""

    def __init__(self, *, layout: list[ConvSlot], num_experts: int) -> None:
        super().__init__()
        self.layout = layout
        self.num_experts = num_experts
        index, self.num_channels = _channel_index(layout)
        self.register_buffer("channel_index", index, persistent=False)
        self.base = nn.Parameter(torch.zeros(layout_numel(layout)))

    def set_expert(self, index: int, flat: Tensor) -> None:
        """Set the single expert (``index`` must be 0: there is one)."""
        if index != 0:
            raise IndexError(f"this variant has a single expert; got index {index}")
        with torch.no_grad():
            self.base.copy_(flat)


class ChannelMappedExpert(_SingleExpert):
    """One expert whose output channels are rescaled by s = 1 + a @ mapping (Fig. 4(e))."""

    def __init__(self, *, layout: list[ConvSlot], num_experts: int) -> None:
        super().__init__(layout=layout, num_experts=num_experts)
        self.mapping = nn.Parameter(torch.zeros(num_experts, self.num_channels))

    def mix(self, a: Tensor) -> Tensor:
        """Flat parameters [P] for a [N], [B, P] for a [B, N]."""
        scale = 1.0 + a.to(self.mapping.dtype) @ self.mapping
        return self.base * scale.index_select(-1, self.channel_index)


def dcd_latent_dim(in_channels: int) -> int:
    """DCD's latent size L = C / 2^floor(log2 sqrt(C)) (Li et al., 2021); 8 for C = 64."""
    return max(1, in_channels // 2 ** int(math.floor(math.log2(math.sqrt(in_channels)))))


class DecomposedDynamicExpert(_SingleExpert):
    """W_C(a) = Lambda_C(a) W0_C + P_C Phi_C(a) Q_C^T (DCD, dynamic conv decomposition, Fig. 4(f)).

    Layers with the same (out, in, L) share one batched product, so mixing costs a handful of
    small einsums whatever the depth.
    """

    def __init__(
        self,
        *,
        layout: list[ConvSlot],
        num_experts: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(layout=layout, num_experts=num_experts)
        self.lambda_map = nn.Parameter(torch.zeros(num_experts, self.num_channels))
        groups: dict[tuple[int, int, int], list[ConvSlot]] = {}
        for slot in layout:
            out_c, in_c = slot.weight_shape[:2]
            groups.setdefault((out_c, in_c, dcd_latent_dim(in_c)), []).append(slot)
        self.group_keys = list(groups)
        self.p_factors = nn.ParameterList()
        self.q_factors = nn.ParameterList()
        centre: list[Tensor] = []
        phi_size = 0
        for out_c, in_c, latent in self.group_keys:
            slots = groups[(out_c, in_c, latent)]
            self.p_factors.append(nn.Parameter(torch.empty(len(slots), out_c, latent)))
            self.q_factors.append(nn.Parameter(torch.empty(len(slots), in_c, latent)))
            phi_size += len(slots) * latent * latent
            for slot in slots:
                k = slot.weight_shape[2]
                taps = torch.arange(out_c * in_c) * (k * k) + (k // 2) * k + k // 2
                centre.append(slot.weight_offset + taps)
        self.register_buffer("centre_index", torch.cat(centre), persistent=False)
        self.phi_map = nn.Parameter(torch.zeros(num_experts, phi_size))
        self.reset_factors(generator=generator)

    @torch.no_grad()
    def reset_factors(self, *, generator: torch.Generator | None) -> None:
        """Draw P and Q (default PyTorch scale, 1 / sqrt(fan_in) with fan_in = L)."""
        for factor in [*self.p_factors, *self.q_factors]:
            bound = 1.0 / math.sqrt(factor.shape[-1])
            nn.init.uniform_(factor, -bound, bound, generator=generator)

    def mix(self, a: Tensor) -> Tensor:
        """Flat parameters [P] for a [N], [B, P] for a [B, N]."""
        a = a.to(self.base.dtype)
        scale = 1.0 + a @ self.lambda_map
        flat = self.base * scale.index_select(-1, self.channel_index)
        phi_all = a @ self.phi_map
        lead = a.shape[:-1]
        residuals: list[Tensor] = []
        start = 0
        for (_, _, latent), p, q in zip(
            self.group_keys, self.p_factors, self.q_factors, strict=True
        ):
            count = p.shape[0]
            size = count * latent * latent
            phi = phi_all[..., start : start + size].reshape(*lead, count, latent, latent)
            start += size
            residual = torch.einsum("gol,...glm,gim->...goi", p, phi, q)
            residuals.append(residual.reshape(*lead, -1))
        # Under autocast the matmuls give bf16 / fp16 and the elementwise scaling keeps fp32:
        # the residuals join the flat vector in its dtype.
        residual = torch.cat(residuals, dim=-1).to(flat.dtype)
        return flat.index_add(-1, self.centre_index, residual)
