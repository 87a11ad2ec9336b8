"""Learning, not noise: each trainable network overfits one fixed batch (Eq. 3's L1 terms)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dasrlib.degradation.pipeline import degrade
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet


def _fixed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four smooth 32x32 HR patches, their standard-level LR and v (seeded)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(4, 3, 6, 6, generator=generator)
    hr = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    lr, record = degrade(hr, "standard", generator=generator)
    return lr, hr, record.vector()


def _overfit(model: torch.nn.Module, loss_of, steps: int) -> tuple[float, float]:
    """Adam on one batch; the loss of the first step and the smallest of the last five."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = loss_of(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], min(losses[-5:])


def test_srresnet_overfits_one_batch() -> None:
    lr, hr, _ = _fixed_batch()
    model = SRResNet(num_feat=16, num_block=2, generator=torch.Generator().manual_seed(0))
    first, last = _overfit(model, lambda m: F.l1_loss(m(lr), hr), steps=200)
    assert last < 0.5 * first, (first, last)


def test_dasr_pixel_and_regression_losses_overfit_one_batch() -> None:
    lr, hr, v = _fixed_batch()
    model = DASR(
        num_experts=2,
        num_feat=16,
        num_block=2,
        predictor_feat=8,
        generator=torch.Generator().manual_seed(0),
    )

    def loss_of(m: DASR) -> torch.Tensor:
        out = m(lr)
        return F.l1_loss(out.sr, hr) + F.l1_loss(out.v_hat, v)

    first, last = _overfit(model, loss_of, steps=200)
    assert last < 0.5 * first, (first, last)
