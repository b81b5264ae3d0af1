"""GAN losses: StyleGAN2's (non-saturating logistic, lazy R1, lazy path length, style mixing) and DCGAN's BCE.

Papers: Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (path length
regularisation, lazy regularisation); Mescheder et al. 2018 (R1); Goodfellow et al. 2014
(non-saturating loss); Radford et al. 2016 (DCGAN, BCE). Semantics follow NVIDIA's
stylegan2-ada-pytorch ``training/loss.py``; the code is our own.

DCGAN's BCE is the same logistic loss: BCE(D(x), 1) = softplus(-D(x)) and BCE(D(G(z)), 0) =
softplus(D(G(z))) with D returning logits, and the generator's BCE(D(G(z)), 1) is the
non-saturating loss. So one class serves both families; DCGAN simply runs no regularisation.

Class-conditional networks (c_dim > 0): every method takes the one-hot classes c of its images, as
NVIDIA's: generated images get ``gen_c`` (drawn from the training labels by the loop), reals their own
labels; style mixing and path length keep each image's c. Unconditional networks take c=None.

Every method backpropagates ``loss.mean() * gain`` into whatever parameters currently require grad
(the training loop switches them per phase) and returns detached statistics, never Python floats,
so no step waits on a device sync.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GanLoss:
    """Loss terms of the training phases Gmain, Greg (path length), Dmain and Dreg (R1)."""

    def __init__(
        self,
        family: str,
        G: nn.Module,
        D: nn.Module,
        augment_pipe: nn.Module | None = None,
        r1_gamma: float = 10.0,
        style_mixing: float = 0.0,
        pl_weight: float = 0.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        mean_across_ranks: Callable[[Tensor], Tensor] | None = None,
    ):
        self.family = family
        self.G, self.D, self.augment_pipe = G, D, augment_pipe
        self.r1_gamma = r1_gamma  # R1 weight gamma
        self.style_mixing = style_mixing  # probability of mixing two latents per minibatch
        self.pl_weight = pl_weight  # path length weight
        self.pl_batch_shrink = pl_batch_shrink  # path length minibatch = batch // shrink
        self.pl_decay = pl_decay  # EMA decay of the path length target
        self.pl_mean = torch.zeros([])  # running mean path length a, (scalar)
        # DDP: the path-length target is averaged over ranks so every replica holds the same state
        # (NVIDIA keeps a per-rank pl_mean; averaging keeps a resumed DDP run exact).
        self.mean_across_ranks = mean_across_ranks

    def run_G(self, z: Tensor, c: Tensor | None, update_emas: bool,
              ws_grad: bool = False) -> tuple[Tensor, Tensor | None]:
        """Generated images (B, C, H, W) and the ws (B, num_ws, w_dim) they came from (None for DCGAN).

        Style mixing as NVIDIA: with probability ``style_mixing`` the ws from layer ``cutoff`` on
        (uniform in [1, num_ws)) come from a second latent; that second mapping leaves w_avg alone.
        """
        if self.family == "dcgan":
            return self.G(z), None
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing > 0:
            cutoff = int(torch.randint(1, ws.shape[1], ()))
            if float(torch.rand(())) < self.style_mixing:
                ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        if ws_grad and not ws.requires_grad:  # mapping frozen (train_g_last): still differentiate wrt ws
            ws = ws.detach().requires_grad_(True)
        return self.G.synthesis(ws, noise_mode="random"), ws

    def run_D(self, img: Tensor, c: Tensor | None) -> Tensor:
        """D's logits (B, 1) of ``img`` (classes c) after the ADA augmentation (applied to reals and fakes alike)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img) if c is None else self.D(img, c)

    def g_main(self, z: Tensor, gain: float, c: Tensor | None = None) -> dict[str, Tensor]:
        """Gmain: non-saturating loss softplus(-D(G(z, c), c)), i.e. maximise D's logits for fakes."""
        img, _ = self.run_G(z, c, update_emas=True)
        logits = self.run_D(img, c)
        if self.family == "dcgan":
            from acneops.gan.dcgan import bce_g_loss

            loss = bce_g_loss(logits)  # == mean softplus(-logits)
        else:
            loss = F.softplus(-logits).mean()
        loss.mul(gain).backward()
        return {"loss_G": loss.detach(), "scores_fake": logits.detach().mean()}

    def g_pl(self, z: Tensor, gain: float, c: Tensor | None = None) -> dict[str, Tensor]:
        """Greg: path length penalty (|J_w^T y| - a)^2 on a shrunk minibatch, y ~ N(0, I) / sqrt(H*W)."""
        batch = max(z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = self.run_G(z[:batch], None if c is None else c[:batch], update_emas=True, ws_grad=True)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grads,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()  # (B,)
        batch_mean = lengths.mean()
        if self.mean_across_ranks is not None:  # value of the global mean, gradient of the local one
            batch_mean = batch_mean + (self.mean_across_ranks(batch_mean.detach()) - batch_mean).detach()
        # As NVIDIA: the penalty uses the updated target *with* its (small) gradient path.
        pl_mean = self.pl_mean.to(lengths.device).lerp(batch_mean, self.pl_decay)
        self.pl_mean = pl_mean.detach()
        penalty = (lengths - pl_mean).square()
        (penalty * self.pl_weight).mean().mul(gain).backward()
        return {"pl_penalty": penalty.detach().mean(), "pl_mean": self.pl_mean.clone()}

    def d_main(self, real: Tensor, z: Tensor, gain: float, real_c: Tensor | None = None,
               gen_c: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Dmain: softplus(D(G(z, gen_c), gen_c)) + softplus(-D(x, real_c)); returns stats and the real logits (ADA)."""
        with torch.no_grad():  # G is not trained in this phase
            fake, _ = self.run_G(z, gen_c, update_emas=True)
        fake_logits = self.run_D(fake, gen_c)
        real_logits = self.run_D(real, real_c)
        if self.family == "dcgan":
            from acneops.gan.dcgan import bce_d_loss

            loss = bce_d_loss(real_logits, fake_logits)  # == mean softplus(-real) + mean softplus(fake)
        else:
            loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        loss.mul(gain).backward()
        stats = {
            "loss_D": loss.detach(),
            "scores_real": real_logits.detach().mean(),
            "scores_fake_D": fake_logits.detach().mean(),
        }
        return stats, real_logits.detach()

    def d_r1(self, real: Tensor, gain: float, real_c: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Dreg: R1 penalty gamma/2 * |grad_x D(x, real_c)|^2 on (augmented) reals."""
        real = real.detach().requires_grad_(True)
        logits = self.run_D(real, real_c)
        (grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True)
        penalty = grads.square().sum([1, 2, 3])  # (B,)
        (penalty * (self.r1_gamma / 2)).mean().mul(gain).backward()
        return {"r1_penalty": penalty.detach().mean()}, logits.detach()
