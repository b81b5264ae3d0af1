"""ADA behaviour with a real (tiny) discriminator: p rises when D separates / memorises the reals and stays
near 0 when D cannot tell reals from fakes (Karras et al. 2020b, section 3).

The loop mirrors the training stage: D sees augmented reals and fakes, takes a non-saturating logistic
(BCE) step, the controller accumulates sign(D(real)) every step and updates p every ``interval`` steps.
``speed_kimg`` is tiny so p can move visibly within a few dozen steps (0.05 per update here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acneops.gan.ada.pipe import AdaController, AugmentPipe

RES, BATCH, INTERVAL = 16, 8, 4
SPEED_KIMG = BATCH * INTERVAL / (0.05 * 1000)  # p moves by 0.05 per update


def smooth_images(n: int) -> torch.Tensor:
    """(n, 3, RES, RES) smooth random images in [-1, 1] drawn from torch's global RNG."""
    low = torch.rand(n, 3, 4, 4) * 2 - 1
    return F.interpolate(low, size=(RES, RES), mode="bilinear", align_corners=False)


def tiny_discriminator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(32 * (RES // 4) ** 2, 1),
    )


def train(reals_fn, fakes_fn, steps: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Train D with ADA for ``steps`` D steps; returns p and r_t after each controller update."""
    torch.manual_seed(seed)
    D = tiny_discriminator()
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    pipe = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                       brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    ctrl = AdaController(pipe, target=0.6, interval=INTERVAL, speed_kimg=SPEED_KIMG, batch_size=BATCH)
    ps, rts = [], []
    for step in range(1, steps + 1):
        real_logits = D(pipe(reals_fn()))
        fake_logits = D(pipe(fakes_fn()))
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctrl.accumulate(real_logits)
        if step % INTERVAL == 0:
            ps.append(ctrl.update())
            rts.append(ctrl.rt)
    return ps, rts


def test_p_rises_when_d_separates_a_tiny_real_set():
    """8 fixed real images vs noise fakes: D is soon certain on the reals (r_t -> 1), so p climbs."""
    torch.manual_seed(100)
    fixed = smooth_images(BATCH)
    ps, rts = train(lambda: fixed, lambda: torch.randn(BATCH, 3, RES, RES), steps=64)
    assert sum(rt > 0.6 for rt in rts[-8:]) >= 7
    assert ps[-1] >= 0.4
    assert all(b >= a for a, b in zip(ps[4:], ps[5:]))  # once D is sure, p only goes up


def test_p_stays_near_zero_when_d_cannot_separate():
    """Reals and fakes from the same distribution: r_t hovers around 0, below the target; p stays ~0."""
    ps, rts = train(lambda: smooth_images(BATCH), lambda: smooth_images(BATCH), steps=64)
    assert max(ps) <= 0.05
    assert abs(sum(rts) / len(rts)) < 0.3


def test_p_settles_where_r_t_meets_the_target_when_d_memorises():
    """8 fixed reals vs fresh images of the same kind: D memorises the reals, p rises until augmentation
    stops the memorising, then r_t is held around the 0.6 target (ADA's feedback loop)."""
    torch.manual_seed(200)
    fixed = smooth_images(BATCH)
    ps, rts = train(lambda: fixed, lambda: smooth_images(BATCH), steps=96)
    assert max(ps) > 0
    mean_rt = sum(rts[8:]) / len(rts[8:])
    assert 0.35 < mean_rt < 0.85
