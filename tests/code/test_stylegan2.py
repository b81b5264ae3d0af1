"""StyleGAN2 networks and ops: shapes, gradients, equalized LR, demodulation, truncation, noise,
double backward, fast paths equal to the reference ops, the NVIDIA-name mapping, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.gan import ops
from acneops.gan.nvlabs import build_from_nvlabs, generator_args, load_nvlabs_state
from acneops.gan.stylegan2 import MODELS, Discriminator, Generator, build_stylegan2

TINY = dict(channel_base=256, channel_max=16)  # 16 channels up to 16 px, 8 at 32, 4 at 64
TINY_G = dict(z_dim=32, w_dim=32, mapping_layers=2, **TINY)


def _tiny_pair(res: int, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return build_stylegan2(res, z_dim=32, w_dim=32, mapping_layers=2, **TINY)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("res", [32, 64])
def test_every_network_forward_backward_without_nan(family: str, res: int) -> None:
    G_cls, D_cls = MODELS[family]
    torch.manual_seed(0)
    G = G_cls(img_resolution=res, **TINY_G)
    D = D_cls(img_resolution=res, **TINY)
    z = torch.randn(4, G.z_dim)
    img = G(z)
    assert img.shape == (4, G.img_channels, res, res)
    logits = D(img)
    assert logits.shape == (4, 1)
    (logits.sum() + img.square().mean()).backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    assert G.synthesis.block_names == [f"b{2 ** i}" for i in range(2, int(math.log2(res)) + 1)]
    assert D.block_names == [f"b{2 ** i}" for i in range(int(math.log2(res)), 1, -1)]
    assert G_cls(**G.model_args).state_dict().keys() == G.state_dict().keys()
    assert D_cls(**D.model_args).state_dict().keys() == D.state_dict().keys()


def test_grayscale_and_batch_of_one() -> None:
    torch.manual_seed(0)
    G, D = build_stylegan2(16, z_dim=16, w_dim=16, mapping_layers=1, img_channels=1, **TINY)
    img = G(torch.randn(1, 16))
    assert img.shape == (1, 1, 16, 16) and D(img).shape == (1, 1)
    D(img).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters())


def test_demodulated_conv_keeps_unit_variance_and_modulation_alone_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64, 16, 16)
    weight = torch.randn(32, 64, 3, 3)
    styles = torch.exp(torch.randn(8, 64))  # log-normal styles spanning ~2 orders of magnitude
    y = ops.modulated_conv2d(x, weight, styles, padding=1)
    inner = y[:, :, 1:-1, 1:-1]  # borders see zero padding
    assert abs(inner.var().item() - 1.0) < 0.1
    per_sample = inner.var(dim=(1, 2, 3))
    assert ((per_sample - 1.0).abs() < 0.2).all(), per_sample
    raw = ops.modulated_conv2d(x, weight, styles, padding=1, demodulate=False)
    assert raw[:, :, 1:-1, 1:-1].var().item() > 10.0


def test_fused_and_unfused_modulated_conv_agree_including_upsampling() -> None:
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 6, 8, 8), torch.randn(5, 6, 3, 3), torch.randn(3, 6)
    noise, bias = torch.randn(3, 1, 16, 16), torch.randn(5)
    for up, size in [(1, 8), (2, 16)]:
        n = noise[..., :size, :size]
        a = ops.modulated_conv2d(x, w, s, n, up=up, padding=1, fused=True, gain=1.7, bias=bias)
        b = ops.modulated_conv2d(x, w, s, n, up=up, padding=1, fused=False, gain=1.7, bias=bias)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_equalized_lr_weights_are_unit_normal_and_scaled_at_runtime() -> None:
    torch.manual_seed(0)
    conv = ops.Conv2dLayer(64, 128, 3)
    assert abs(conv.weight.std().item() - 1.0) < 0.02 and abs(conv.weight.mean().item()) < 0.02
    x = torch.randn(2, 64, 8, 8)
    torch.nn.init.normal_(conv.bias)
    expected = F.conv2d(x, conv.weight / math.sqrt(64 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)

    fc = ops.FullyConnectedLayer(512, 256, lr_multiplier=0.01)
    assert abs((fc.weight * 0.01).std().item() - 1.0) < 0.02  # stored N(0, 1/lr_mult^2), NVIDIA's convention
    torch.nn.init.normal_(fc.bias)
    z = torch.randn(4, 512)
    expected = F.linear(z, fc.weight * 0.01 / math.sqrt(512), fc.bias * 0.01)
    torch.testing.assert_close(fc(z), expected, atol=1e-5, rtol=1e-5)

    act = ops.FullyConnectedLayer(512, 256, activation="lrelu")
    expected = F.leaky_relu(F.linear(z, act.weight / math.sqrt(512), act.bias), 0.2) * math.sqrt(2)
    torch.testing.assert_close(act(z), expected, atol=1e-5, rtol=1e-5)
    G = Generator(img_resolution=32, **TINY_G)
    assert G.mapping.fc0.weight_gain == pytest.approx(0.01 / math.sqrt(32))


@pytest.mark.parametrize("down,up,k", [(2, 1, 3), (2, 1, 1), (1, 2, 1), (1, 1, 3), (1, 1, 1)])
def test_conv_layer_with_active_clamp_matches_reference_bias_act(down: int, up: int, k: int) -> None:
    torch.manual_seed(0)
    layer = ops.Conv2dLayer(6, 5, k, activation="lrelu", up=up, down=down, conv_clamp=0.5)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    y = layer(x, gain=math.sqrt(0.5))
    ref_conv = ops._conv2d_resample_generic(x, layer.weight / math.sqrt(6 * k * k), up, down, k // 2, 1, None,
                                            ops.FIR_TAPS)
    ref = ops.bias_act(ref_conv, layer.bias, "lrelu", gain=math.sqrt(2) * math.sqrt(0.5),
                       clamp_limit=0.5 * math.sqrt(0.5))
    assert (ref.abs() >= 0.5 * math.sqrt(0.5) - 1e-6).any(), "the clamp must be active in this test"
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    (gy,) = torch.autograd.grad(y.sum(), x)
    (gr,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gy, gr, atol=1e-5, rtol=1e-5)


def test_fast_fir_paths_equal_reference_upfirdn2d() -> None:
    torch.manual_seed(0)
    f = ops.setup_filter()
    x = torch.randn(2, 3, 8, 10)
    torch.testing.assert_close(ops.upsample2d(x), ops.upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4))
    torch.testing.assert_close(ops.downsample2d(x), ops.upfirdn2d(x, f, down=2, padding=1))
    for pad in (0, 1, 2, 3):
        for down in (1, 2):
            torch.testing.assert_close(ops.blur2d(x, pad, gain=2.0, down=down),
                                       ops.upfirdn2d(x, f, down=down, padding=pad, gain=2.0))
    assert ops.upsample2d(x).shape == (2, 3, 16, 20) and ops.downsample2d(x).shape == (2, 3, 4, 5)
    xl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ops.upsample2d(xl), ops.upsample2d(x))
    torch.testing.assert_close(ops.downsample2d(xl), ops.downsample2d(x))


@pytest.mark.parametrize("fir", ["blur", "down", "up"])
def test_fir_ops_have_exact_gradients_of_first_and_second_order(fir: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    fn = {"blur": lambda t: ops.blur2d(t, 1, gain=3.0), "down": ops.downsample2d, "up": ops.upsample2d}[fir]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny convs: thread hand-offs would dominate on a shared machine
    try:
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("up,down,k,groups", [(2, 1, 3, 1), (2, 1, 3, 2), (1, 2, 3, 1), (1, 2, 1, 1),
                                               (2, 1, 1, 1), (1, 1, 3, 2)])
def test_conv2d_resample_fast_paths_equal_generic(up: int, down: int, k: int, groups: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    w = torch.randn(6, 4 // groups, k, k)
    b = torch.randn(6)
    fast = ops.conv2d_resample(x, w, up=up, down=down, padding=k // 2, groups=groups, bias=b)
    slow = ops._conv2d_resample_generic(x, w, up, down, k // 2, groups, b, ops.FIR_TAPS)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_truncation_and_w_avg_update() -> None:
    G, _ = _tiny_pair(32)
    z = torch.randn(6, G.z_dim)
    G.mapping(z, update_emas=True)
    w = G.mapping.fc1(G.mapping.fc0(z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()))
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0) * (1 - 0.995), atol=1e-6, rtol=1e-5)
    torch.nn.init.normal_(G.mapping.w_avg)
    ws = G.mapping(z, truncation_psi=0.0)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand_as(ws))
    ws_full, ws_half = G.mapping(z), G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(ws_half[:, 3:], ws_full[:, 3:])
    torch.testing.assert_close(ws_half[:, :3], G.mapping.w_avg + 0.5 * (ws_full[:, :3] - G.mapping.w_avg))


def test_noise_modes() -> None:
    G, _ = _tiny_pair(32)
    for layer in G.modules():
        if hasattr(layer, "noise_strength"):
            torch.nn.init.constant_(layer.noise_strength, 0.5)
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b) and not torch.allclose(const_a, none)


def test_same_seed_same_networks_and_images() -> None:
    G1, D1 = _tiny_pair(32, seed=3)
    G2, D2 = _tiny_pair(32, seed=3)
    z = torch.randn(4, G1.z_dim)
    torch.manual_seed(9)
    a = G1(z)
    torch.manual_seed(9)
    b = G2(z)
    assert torch.equal(a, b) and torch.equal(D1(a), D2(b))


def test_double_backward_r1_and_path_length() -> None:
    G, D = _tiny_pair(32)
    reals = torch.randn(4, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(D(reals).sum(), reals, create_graph=True)
    grad.square().sum(dim=(1, 2, 3)).mean().backward()
    assert D.b32.conv0.weight.grad is not None and D.b32.conv0.weight.grad.abs().sum() > 0
    ws = G.mapping(torch.randn(4, G.z_dim))
    img = G.synthesis(ws)
    (wgrad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    wgrad.square().sum(2).mean(1).sqrt().mean().backward()
    assert G.synthesis.b32.conv1.weight.grad.abs().sum() > 0 and G.mapping.fc0.weight.grad.abs().sum() > 0
    for net in (G, D):
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def _d_params_formula(res: int, base: int, cmax: int, img_channels: int = 3) -> int:
    """Discriminator parameter count from the architecture, written out independently of the code."""
    ch = lambda r: min(base // r, cmax)  # noqa: E731
    total = img_channels * ch(res) + ch(res)  # fromRGB of the first block
    r = res
    while r > 4:
        c, c2 = ch(r), ch(r // 2)
        total += (c * c * 9 + c) + (c * c2 * 9 + c2) + c * c2  # conv0, conv1 (down), skip (no bias)
        r //= 2
    c4 = ch(4)
    return total + ((c4 + 1) * c4 * 9 + c4) + (c4 * 16 * c4 + c4) + (c4 + 1)


def test_config_f_1024_builds_with_nvidia_parameter_count() -> None:
    G, D = build_stylegan2(1024)
    assert G.num_ws == 18
    assert sum(p.numel() for p in G.parameters()) == 30_370_060  # NVIDIA's config-F generator
    assert sum(p.numel() for p in D.parameters()) == _d_params_formula(1024, 32768, 512)


def test_benchmark_setting_parameter_counts() -> None:
    G, D = build_stylegan2(32, 32768, 128, mapping_layers=2)
    assert sum(p.numel() for p in G.parameters()) == 2_284_307
    assert sum(p.numel() for p in D.parameters()) == 1_346_305 == _d_params_formula(32, 32768, 128)


def test_bad_settings_and_inputs_give_clear_errors() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        Generator(img_resolution=48, **TINY_G)
    with pytest.raises(ConfigError, match="mbstd_num_channels"):
        Discriminator(img_resolution=32, mbstd_num_channels=3, **TINY)
    G, D = _tiny_pair(32)
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(torch.randn(2, G.num_ws - 1, G.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.randn(2, G.num_ws, G.w_dim), noise_mode="fixed")
    with pytest.raises(ValueError, match="multiple of the group size"):
        D(torch.randn(6, 3, 32, 32))
    with pytest.raises(ValueError, match="D expects images"):
        D(torch.randn(4, 3, 64, 64))


def _nvidia_style_state(G: Generator, D: Discriminator) -> dict[str, torch.Tensor]:
    """acneops state under NVIDIA's prefixed names, plus the resample_filter buffers NVIDIA stores."""
    state = {f"G.{k}": v for k, v in G.state_dict().items()}
    state.update({f"D.{k}": v for k, v in D.state_dict().items()})
    state["G.synthesis.b8.conv0.resample_filter"] = ops.setup_filter()
    state["D.b32.skip.resample_filter"] = ops.setup_filter()
    return state


def test_nvlabs_mapping_round_trip_and_shape_inference() -> None:
    torch.manual_seed(0)
    G, D = build_stylegan2(32, channel_base=128, channel_max=16, z_dim=32, w_dim=24, mapping_layers=3)
    G2, D2 = build_from_nvlabs(_nvidia_style_state(G, D))
    assert G2.model_args == G.model_args and D2.model_args == D.model_args  # 16, 16, 16, 8 channels
    z = torch.randn(4, 32)
    torch.testing.assert_close(G2(z, noise_mode="const"), G(z, noise_mode="const"))
    G_state, D_state = load_nvlabs_state({"G": G.state_dict(), "D": D.state_dict()})
    assert generator_args(G_state)["w_dim"] == 24 and set(D_state) == set(D.state_dict())


def test_nvlabs_mapping_rejects_what_it_cannot_represent() -> None:
    G, D = _tiny_pair(32)
    state = _nvidia_style_state(G, D)
    with pytest.raises(AcneopsError, match="resample filter"):
        load_nvlabs_state({**state, "D.b32.skip.resample_filter": torch.ones(4, 4) / 16})
    with pytest.raises(AcneopsError, match="conditional"):
        load_nvlabs_state({**state, "G.mapping.embed.weight": torch.zeros(32, 10)})
    bad = dict(state)
    bad["G.synthesis.b8.conv0.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(AcneopsError, match="does not fit|do not follow"):
        build_from_nvlabs(bad)
    with pytest.raises(AcneopsError, match="not found"):
        load_nvlabs_state("/nonexistent/weights.npz")
