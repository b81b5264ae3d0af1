"""DCGAN networks: shapes, ranges, parameter counts, deterministic eval-mode sampling, D learns with BCE."""

from __future__ import annotations

import pytest
import torch

from acneops.core.errors import AcneopsError
from acneops.gan.dcgan import (
    MODELS,
    Discriminator,
    Generator,
    bce_d_loss,
    bce_g_loss,
    build_dcgan,
)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("res", [32, 64])
def test_forward_backward_without_nan(family, res):
    G_cls, D_cls = MODELS[family]
    torch.manual_seed(0)
    G = G_cls(z_dim=16, img_resolution=res, img_channels=3, base_channels=8)
    D = D_cls(img_resolution=res, img_channels=3, base_channels=8)
    img = G(torch.randn(4, 16))
    assert img.shape == (4, 3, res, res)
    assert img.min() >= -1 and img.max() <= 1
    logits = D(img)
    assert logits.shape == (4, 1)
    (bce_d_loss(D(img.detach()), logits.detach()) + bce_g_loss(logits)).backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def _expected_counts(res: int, z_dim: int, base: int, img_ch: int, cap: int = 512) -> tuple[int, int]:
    """Closed-form parameter counts of the DCGAN ladder (4x4 kernels, no conv bias, BN scale+shift)."""
    ch = lambda r: min(base * res // (2 * r), cap)  # noqa: E731
    resolutions = [4 * 2 ** i for i in range(int(res).bit_length() - 3)]  # 4 .. res/2
    g = z_dim * ch(4) * 16 + 2 * ch(4)
    for r in resolutions[1:]:
        g += ch(r // 2) * ch(r) * 16 + 2 * ch(r)
    g += ch(res // 2) * img_ch * 16
    d = img_ch * ch(res // 2) * 16
    for r in resolutions[:-1]:
        d += ch(2 * r) * ch(r) * 16 + 2 * ch(r)
    d += ch(4) * 16
    return g, d


@pytest.mark.parametrize("res", [32, 64, 128])
def test_parameter_counts(res):
    G, D = build_dcgan(img_resolution=res, z_dim=128, base_channels=64, img_channels=3)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    assert (n_g, n_d) == _expected_counts(res, 128, 64, 3)
    if res == 64:  # the classic 64 px DCGAN: 512-256-128-64 feature maps
        assert (n_g, n_d) == (3_806_080, 2_765_568)


def test_weight_init_follows_the_paper():
    torch.manual_seed(0)
    G, D = build_dcgan(img_resolution=64)
    convs = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    norms = torch.cat([m.weight.flatten() for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert convs.mean().abs() < 1e-3 and abs(convs.std().item() - 0.02) < 1e-3
    assert abs(norms.mean().item() - 1.0) < 5e-3 and abs(norms.std().item() - 0.02) < 5e-3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in list(D.main)[:2])  # none on the input layer


def test_eval_generation_is_deterministic_and_independent_of_the_batch():
    torch.manual_seed(0)
    G = Generator(z_dim=32, img_resolution=32, base_channels=8)
    for _ in range(3):  # train-mode passes fill the batch-norm running statistics
        G(torch.randn(8, 32))
    G.eval()
    z = torch.randn(6, 32, generator=torch.Generator().manual_seed(42))
    with torch.no_grad():
        batch = G(z)
        again = G(z)
        one_by_one = torch.cat([G(z[i:i + 1]) for i in range(6)])
        mixed = G(torch.cat([torch.randn(5, 32), z[3:4], torch.randn(9, 32)]))[5]
    assert torch.equal(batch, again)
    torch.testing.assert_close(one_by_one, batch, rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed, batch[3], rtol=0, atol=1e-6)


def test_d_learns_with_bce_and_adam():
    """A handful of Adam steps (the method's lr 1e-4) lower D's BCE loss on a fixed real/fake batch."""
    torch.manual_seed(0)
    G, D = build_dcgan(img_resolution=32, z_dim=32, base_channels=8)
    reals = torch.rand(8, 3, 32, 32) * 0.5  # bright-ish flat textures, unlike G's initial output
    with torch.no_grad():
        fakes = G(torch.randn(8, 32))
    opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(12):
        loss = bce_d_loss(D(reals), D(fakes))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.7 * losses[0]


def test_model_args_rebuild_the_same_network():
    torch.manual_seed(0)
    G, D = build_dcgan(img_resolution=32, z_dim=24, base_channels=8, img_channels=1)
    G2, D2 = Generator(**G.model_args), Discriminator(**D.model_args)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    G.eval(), G2.eval()
    z = torch.randn(2, 24)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))
    assert G.z_dim == 24 and G.img_resolution == 32 and G(z).shape == (2, 1, 32, 32)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(AcneopsError, match="power of two"):
        Generator(img_resolution=48)
    with pytest.raises(AcneopsError, match="power of two"):
        Discriminator(img_resolution=4)
    G, D = build_dcgan(img_resolution=32, z_dim=8, base_channels=4)
    with pytest.raises(AcneopsError, match=r"\(B, 8\)"):
        G(torch.randn(2, 9))
    with pytest.raises(AcneopsError, match="32, 32"):
        D(torch.randn(2, 3, 64, 64))
