"""DASR (Sec. 3.1, Fig. 3): predictor P, weighting module A and N experts mixed by parameters.

    v_hat = P(lr)             [B, 33]
    a     = A(v_hat)          [B, N]
    sr    = E_a(lr)           E_a: the expert topology with W_C = sum_i a_i W_i^C (Eq. 2)

Three execution paths, all exact up to float rounding:
- per sample (training): every sample its own a; ``a @ bank`` is evaluated per layer on views of
  the bank (`ExpertBank.mix_layers`, [B, n_l] per layer) and each layer runs a per-sample
  convolution (``per_sample_impl``, see `dasrlib.models.mixed`);
- shared (a batch of one image, or ``a``/``v`` given as a single vector): mix once, plain convs;
- fused (inference): ``fuse(a)`` returns an ordinary expert network (``nn.Conv2d`` layers), so
  one image costs one expert; `DASRInference` runs P + A + mixing + the shared path per image.

``mixing`` selects the Fig. 4 variant: ``"weights"`` (DASR), ``"outputs"`` (classical MoE: all N
experts run, outputs mixed by a, N times the cost), ``"single_expert_mapping"`` (Fig. 4(e)) and
``"dcd"`` (Fig. 4(f)); see `dasrlib.models.dynamic` for the last two.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dasrlib.degradation.vector import NUM_SLOTS
from dasrlib.models import backbones
from dasrlib.models.dynamic import ChannelMappedExpert, DecomposedDynamicExpert
from dasrlib.models.mixed import (
    PER_SAMPLE_IMPLS,
    ExpertBank,
    MixedConv2d,
    MixedWeights,
    conv_layout,
    flatten_expert_state,
    split_layers,
    unflatten_expert_state,
)
from dasrlib.models.predictor import DegradationPredictor, WeightingModule

__all__ = [
    "DASR",
    "DASR_VARIANTS",
    "DEFAULT_PER_SAMPLE_IMPL",
    "MIXING_MODES",
    "DASRInference",
    "DASROutput",
]

logger = logging.getLogger(__name__)

MIXING_MODES = ("weights", "outputs", "single_expert_mapping", "dcd")
# Per-sample training path. Measured on 2 CPU cores (DASR N=5, batch 8, LR 32x32, forward +
# backward): grouped ~2 s, bmm ~10 s, expert_sum ~12 s per step. All three are exact
# (test_models_mixed.py); a GPU benchmark (benchmarks/train_step.py) may choose another default.
DEFAULT_PER_SAMPLE_IMPL = "grouped"

# Fig. 4 ablations as DASR options (each a configuration of the same code).
DASR_VARIANTS: dict[str, dict[str, object]] = {
    "dasr_n3": {"num_experts": 3},  # (a)
    "dasr_n9": {"num_experts": 9},  # (b)
    "dasr_sigmoid": {"weighting": "sigmoid"},  # (c)
    "dasr_moe": {"mixing": "outputs"},  # (d) classical MoE
    "dasr_mapping": {"mixing": "single_expert_mapping"},  # (e)
    "dasr_dcd": {"mixing": "dcd"},  # (f)
    "dasr_edsr_m": {"backbone": "edsr_m"},  # (g)
    "dasr": {},  # (h) default
}


class DASROutput(NamedTuple):
    """sr [B, 3, sH, sW]; v_hat [B, v_dim] (or the v given); a [B, N] (or [N])."""

    sr: Tensor
    v_hat: Tensor
    a: Tensor


def _expert_backbone(name: str) -> backbones.Backbone:
    """The `dasrlib.models.backbones` entry of the expert topology `name` (an expert entry)."""
    if name not in backbones.expert_names():
        known = list(backbones.expert_names())
        raise ValueError(f"unknown backbone {name!r}; expected one of {known}")
    return backbones.backbone(name)


def _expert_topology(
    backbone: str,
    *,
    num_feat: int,
    num_block: int,
    scale: int,
    conv_layer: type[nn.Module],
    generator: torch.Generator | None = None,
) -> nn.Module:
    return _expert_backbone(backbone).build(
        num_feat=num_feat,
        num_block=num_block,
        scale=scale,
        conv_layer=conv_layer,
        generator=generator,
    )


class DASR(nn.Module):
    """Degradation-adaptive SR network (Sec. 3.1). Input lr [B, 3, H, W] in [0, 1].

    ``forward(lr, v=None) -> DASROutput(sr, v_hat, a)``; with ``v`` given ([B, v_dim] or one
    vector [v_dim] for the whole batch) the predictor is skipped and v_hat is ``v``.
    """

    def __init__(
        self,
        *,
        num_experts: int = 5,
        backbone: str = "srresnet",
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 16,
        v_dim: int = NUM_SLOTS,
        weighting: str = "linear",
        mixing: str = "weights",
        per_sample_impl: str = DEFAULT_PER_SAMPLE_IMPL,
        predictor_feat: int = 64,
        predictor_bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if weighting not in ("linear", "sigmoid"):
            raise ValueError(f"unknown weighting {weighting!r}; expected 'linear' or 'sigmoid'")
        if mixing not in MIXING_MODES:
            raise ValueError(f"unknown mixing {mixing!r}; expected one of {MIXING_MODES}")
        if per_sample_impl not in PER_SAMPLE_IMPLS:
            raise ValueError(
                f"unknown per_sample_impl {per_sample_impl!r}; expected one of {PER_SAMPLE_IMPLS}"
            )
        if per_sample_impl == "expert_sum" and mixing != "weights":
            raise ValueError("per_sample_impl 'expert_sum' needs mixing='weights'")
        backbone = str(_expert_backbone(backbone).expert)  # DASR's name: edsr -> edsr_m
        self.num_experts = num_experts
        self.backbone = backbone
        self.scale = scale
        self.mixing = mixing
        self.per_sample_impl = per_sample_impl
        self._topology_options = {"num_feat": num_feat, "num_block": num_block, "scale": scale}
        self.architecture = {
            "name": "dasr",
            "options": {
                "num_experts": num_experts,
                "backbone": backbone,
                "scale": scale,
                "num_feat": num_feat,
                "num_block": num_block,
                "v_dim": v_dim,
                "weighting": weighting,
                "mixing": mixing,
                "per_sample_impl": per_sample_impl,
                "predictor_feat": predictor_feat,
                "predictor_bias": predictor_bias,
            },
        }
        self.predictor = DegradationPredictor(
            num_feat=predictor_feat, v_dim=v_dim, use_bias=predictor_bias, generator=generator
        )
        self.weighting = WeightingModule(
            v_dim=v_dim,
            num_experts=num_experts,
            sigmoid=weighting == "sigmoid",
            generator=generator,
        )
        # The expert topology with parameter-free MixedConv2d layers; parameters live in experts.
        self.network = _expert_topology(backbone, conv_layer=MixedConv2d, **self._topology_options)
        layout = conv_layout(self.network)
        self.experts: ExpertBank | ChannelMappedExpert | DecomposedDynamicExpert
        if mixing in ("weights", "outputs"):
            self.experts = ExpertBank(layout=layout, num_experts=num_experts)
        elif mixing == "single_expert_mapping":
            self.experts = ChannelMappedExpert(layout=layout, num_experts=num_experts)
        else:
            self.experts = DecomposedDynamicExpert(
                layout=layout, num_experts=num_experts, generator=generator
            )
        # Independent random experts (BasicSR's initialisation). Training from random experts is
        # known to diverge: start from a pretrained SRResNet with `init_experts_from`.
        for index in range(self._num_expert_slots()):
            plain = _expert_topology(
                backbone, conv_layer=nn.Conv2d, generator=generator, **self._topology_options
            )
            self.experts.set_expert(index, self._flatten(plain.state_dict()))

    # -- structure -------------------------------------------------------------------------

    def _num_expert_slots(self) -> int:
        return self.num_experts if isinstance(self.experts, ExpertBank) else 1

    def _flatten(self, state: dict[str, Tensor]) -> Tensor:
        return flatten_expert_state(self.experts.layout, state)

    def _expert_param(self) -> Tensor:
        return next(self.experts.parameters())

    def plain_expert(self) -> nn.Module:
        """A new ordinary network of this DASR's expert topology (random weights)."""
        return _expert_topology(self.backbone, conv_layer=nn.Conv2d, **self._topology_options)

    def _plain_template(self) -> nn.Module:
        """The expert topology with every parameter and buffer slot empty (None), built once and
        kept outside the module tree (not in ``state_dict``, not moved by ``to``): `fuse` copies
        it and fills the slots."""
        template = self.__dict__.get("_fuse_template")
        if template is None:
            with torch.device("meta"):
                template = self.plain_expert()
            for module in template.modules():
                for slots in (module._parameters, module._buffers):
                    for name in slots:
                        slots[name] = None
            object.__setattr__(self, "_fuse_template", template)
        return template

    # -- the method --------------------------------------------------------------------------

    def predict_degradation(self, lr: Tensor) -> Tensor:
        """v_hat = P(lr): [B, 3, H, W] -> [B, v_dim]."""
        return self.predictor(lr)

    def expert_weights(self, v: Tensor) -> Tensor:
        """a = A(v): [B, v_dim] -> [B, N] (or [v_dim] -> [N])."""
        return self.weighting(v)

    def mixed_parameters(self, a: Tensor) -> Tensor:
        """Flat mixed parameters (Eq. 2): [N] -> [P], [B, N] -> [B, P]; one matmul, all layers."""
        if self.mixing == "outputs":
            raise ValueError("mixing='outputs' mixes expert outputs, not parameters")
        return self.experts.mix(a)

    def super_resolve(self, lr: Tensor, a: Tensor) -> Tensor:
        """SR with given weighting factors: a [N] (shared by the batch) or [B, N] (per sample)."""
        if a.ndim == 2 and a.shape[0] != lr.shape[0]:
            raise ValueError(f"a has {a.shape[0]} rows for a batch of {lr.shape[0]}")
        if self.mixing == "outputs":
            return self._mix_outputs(lr, a)
        if a.ndim == 1 or a.shape[0] == 1:
            return self.network(lr, self._mixed_weights(a.reshape(-1), impl="shared"))
        if self.per_sample_impl == "expert_sum":
            assert isinstance(self.experts, ExpertBank)
            mixed = MixedWeights(
                flat=None, impl="expert_sum", coefficients=a, bank=self.experts.bank
            )
            return self.network(lr, mixed)
        return self.network(lr, self._mixed_weights(a, impl=self.per_sample_impl))

    def _mixed_weights(self, a: Tensor, *, impl: str) -> MixedWeights:
        """Eq. 2 for a [N] or [B, N], handed to the layers one (weight, bias) pair each."""
        if isinstance(self.experts, ExpertBank):
            layers = self.experts.mix_layers(a)
        else:
            layers = split_layers(self.experts.layout, self.experts.mix(a))
        return MixedWeights(flat=None, impl=impl, layers=layers)

    def _mix_outputs(self, lr: Tensor, a: Tensor) -> Tensor:
        """Classical MoE (Fig. 4(d)): sum_i a_i E_i(lr), every expert run in full."""
        assert isinstance(self.experts, ExpertBank)
        coefficients = a.reshape(-1, self.num_experts) if a.ndim == 2 else a.unsqueeze(0)
        sr: Tensor | None = None
        for index in range(self.num_experts):
            out = self.network(lr, MixedWeights.shared(self.experts.bank[index]))
            term = coefficients[:, index].to(out.dtype).view(-1, 1, 1, 1) * out
            sr = term if sr is None else sr + term
        assert sr is not None
        return sr

    def forward(self, lr: Tensor, v: Tensor | None = None) -> DASROutput:
        v_hat = self.predict_degradation(lr) if v is None else v.to(lr.device)
        a = self.expert_weights(v_hat)
        return DASROutput(self.super_resolve(lr, a), v_hat, a)

    @torch.no_grad()
    def fuse(self, a: Tensor) -> nn.Module:
        """An ordinary expert network (``nn.Conv2d`` layers) with the mixed weights for a [N]
        (Eq. 2, "only one adapted network"); same device and dtype as the experts."""
        if self.mixing == "outputs":
            raise ValueError("mixing='outputs' (classical MoE) has no single fused network")
        if a.numel() != self.num_experts:
            raise ValueError(
                f"fuse needs one weight vector of {self.num_experts} entries, "
                f"got shape {tuple(a.shape)}"
            )
        flat = self.experts.mix(a.reshape(-1).to(self._expert_param().device))
        # A copy of a tensor-free template of the topology, given the mixed tensors as
        # parameters: no random initialisation and no module construction per call (building a
        # CPU expert and initialising it costs far more than the inference it serves; building it
        # on the meta device still cost 2-3 times the rest of `fuse`). Each parameter gets its own
        # storage (a clone of its slice of ``flat``), as an ordinary module has, so e.g.
        # safetensors can save it. Buffers (EDSR's mean) come from the mixed topology.
        plain = _copy_tree(self._plain_template())
        state = unflatten_expert_state(self.experts.layout, flat)
        for key, value in state.items():
            owner, _, leaf = key.rpartition(".")
            module = plain.get_submodule(owner) if owner else plain
            if leaf not in module._parameters:
                raise KeyError(f"fuse: the expert topology has no parameter {key!r}")
            module._parameters[leaf] = nn.Parameter(value.clone())
        missing = [name for name, _ in _empty_slots(plain, "_parameters")]
        if missing:
            raise KeyError(f"fuse: no mixed tensor for the expert parameters {missing}")
        for name, buffer in self.network.named_buffers():
            owner, _, leaf = name.rpartition(".")
            target = plain.get_submodule(owner) if owner else plain
            dtype = flat.dtype if buffer.is_floating_point() else buffer.dtype
            target.register_buffer(
                leaf,
                buffer.to(device=flat.device, dtype=dtype, copy=True),
                persistent=leaf not in target._non_persistent_buffers_set,
            )
        return plain.eval()

    # -- initialisation -----------------------------------------------------------------------

    @torch.no_grad()
    def init_experts_from(
        self,
        expert_state: dict[str, Tensor],
        *,
        noise_std: float = 0.0,
        generator: torch.Generator | None = None,
        uniform_weighting: bool = True,
    ) -> None:
        """Copy one pretrained expert (BasicSR key names) into every expert (Sec. 4.1).

        ``noise_std`` > 0 adds N(0, noise_std * std(layer)) to each expert's copy of each layer
        (weight and bias; std(layer) is the std of its weight) to break the symmetry (drawn from
        ``generator``). ``uniform_weighting`` makes A output
        a = 1/N at the start (last layer zero weight, bias 1/N), so that the mixed network
        starts as exactly the pretrained expert (the reference code draws A at random, which
        scales the initial network by sum(a)).
        """
        reference = self._expert_param()
        flat = self._flatten(expert_state).to(reference.device, torch.float32)
        for index in range(self._num_expert_slots()):
            copy = flat.clone()
            if noise_std > 0:
                copy += noise_std * self._layer_scaled_noise(flat, generator)
            self.experts.set_expert(index, copy.to(reference.dtype))
        if uniform_weighting:
            self.weighting.set_uniform_output()

    def experts_are_copies(self) -> bool:
        """Whether there are several experts and each equals expert 0 up to float rounding (every
        parameter within 1e-6 of the largest |parameter| of expert 0)."""
        if not isinstance(self.experts, ExpertBank) or self.num_experts < 2:
            return False
        bank = self.experts.bank.detach().float()
        return bool((bank - bank[0]).abs().max() <= 1e-6 * bank[0].abs().max())

    def expert_spread(self) -> float:
        """max_i |e_i - mean| / |mean| over the experts' flat parameters (L2): 0 when they are
        copies of one network (DASR is then one SRResNet); NaN without several experts."""
        if not isinstance(self.experts, ExpertBank) or self.num_experts < 2:
            return float("nan")
        bank = self.experts.bank.detach().float()
        mean = bank.mean(0)
        return float(((bank - mean).norm(dim=1) / mean.norm()).max())

    @torch.no_grad()
    def break_expert_symmetry(self, generator: torch.Generator) -> bool:
        """Let experts that are copies of one network diverge; True if they were copies.

        With copies e_i = e (the start of Sec. 4.1) and an A whose rows are equal (the uniform
        start of `init_experts_from`), every expert gets the same weight a_i(v) = c(v), so by
        Eq. 2 every expert's gradient is sum over images of c(v) dL/dW: the same for all i, and
        the gradient of A's last layer is the same for every row. The experts then stay copies
        for ever and DASR is one SRResNet. Zero-sum random weights added to A's last layer
        (`WeightingModule.add_zero_sum_weights`) keep sum_i a_i, hence the mixed network
        (sum_i a_i) e, unchanged, but give each expert its own a_i(v) and so its own gradient.
        """
        if not self.experts_are_copies():
            return False
        self.weighting.add_zero_sum_weights(generator)
        return True

    def _layer_scaled_noise(self, flat: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(flat.shape, generator=generator, dtype=flat.dtype, device="cpu")
        noise = noise.to(flat.device)
        for slot in self.experts.layout:
            part = slice(slot.weight_offset, slot.weight_offset + slot.weight_numel)
            scale = flat[part].std()
            noise[part] *= scale
            if slot.bias_offset is not None:
                noise[slot.bias_offset : slot.bias_offset + slot.out_channels] *= scale
        return noise

    def expert_state_dict(self, index: int) -> dict[str, Tensor]:
        """Expert ``index`` as a plain network's state dict (BasicSR key names), cloned."""
        if isinstance(self.experts, ExpertBank):
            flat = self.experts.bank[index]
        elif index == 0:
            flat = self.experts.base
        else:
            raise IndexError(f"mixing={self.mixing!r} has one base expert; got index {index}")
        state = unflatten_expert_state(self.experts.layout, flat.detach())
        return {key: value.clone() for key, value in state.items()}


def _copy_tree(module: nn.Module) -> nn.Module:
    """A structural copy of a tensor-free module tree: new module objects whose container
    attributes (parameter, buffer and hook dicts, sets, lists) are fresh shallow copies, so
    filling the copy's slots or adding hooks to it leaves ``module`` untouched. (``deepcopy``
    does the same but took about 10 times as long for a 16-block expert.)"""
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__.update(
        {
            key: value.copy() if isinstance(value, dict | set | list) else value
            for key, value in module.__dict__.items()
        }
    )
    clone._modules = {
        name: None if child is None else _copy_tree(child)
        for name, child in module._modules.items()
    }
    return clone


def _empty_slots(module: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    """(qualified name, owner) of every ``kind`` ("_parameters" / "_buffers") slot holding None."""
    return [
        (f"{prefix}.{name}" if prefix else name, owner)
        for prefix, owner in module.named_modules()
        for name, value in getattr(owner, kind).items()
        if value is None
    ]


class DASRInference(nn.Module):
    """The complete DASR inference path as a plain SR model: lr [B, 3, H, W] -> sr.

    Per image: v_hat = P(lr), a = A(v_hat), mixed = a @ bank (N x P multiply-adds), then the
    expert topology with the mixed weights through plain convolutions: one expert's cost plus P
    and the mixing. This is what `dasrlib.profiling` counts and what evaluation should run.
    """

    def __init__(self, model: DASR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        outputs = []
        for index in range(lr.shape[0]):
            image = lr[index : index + 1]
            a = self.model.expert_weights(self.model.predict_degradation(image))
            outputs.append(self.model.super_resolve(image, a[0]))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]
