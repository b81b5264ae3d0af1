"""ADA augmentation pipeline and p controller: each transform does what it claims, p=0 is the identity,
gradients (and gradients of gradients, for R1) reach the images, and the controller moves p as ADA does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from acneops.core.errors import AcneopsError
from acneops.gan.ada import transforms as ops
from acneops.gan.ada.pipe import AUGMENT_SPECS, AdaController, AugmentPipe

TRANSFORMS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
              "lumaflip", "hue", "saturation")
ALL_ON = AUGMENT_SPECS["bgc"]


def test_bgc_spec_enables_every_transform():
    assert set(ALL_ON) == set(TRANSFORMS) and set(ALL_ON.values()) == {1}


def smooth_images(n: int, res: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, C, res, res) smooth random images in [-1, 1] (bilinear upsampling of 4x4 noise)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=gen) * 2 - 1
    return F.interpolate(low, size=(res, res), mode="bilinear", align_corners=False)


def make_pipe(p: float, **transforms: float) -> AugmentPipe:
    pipe = AugmentPipe(**transforms)
    pipe.p.fill_(p)
    return pipe


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_alone_changes_images(name):
    x = smooth_images(8)
    torch.manual_seed(1)
    y = make_pipe(1.0, **{name: 1})(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    changed = (y - x).flatten(1).abs().amax(dim=1) > 1e-3
    assert changed.sum() >= 3, f"{name} at p=1 changed only {int(changed.sum())} of 8 images"


def test_p_zero_is_identity_and_draws_no_random_numbers():
    x = smooth_images(4)
    pipe = make_pipe(0.0, **ALL_ON)
    state = torch.get_rng_state()
    y = pipe(x)
    assert y is x
    assert torch.equal(torch.get_rng_state(), state)


def test_same_rng_state_gives_same_augmentation():
    x = smooth_images(6)
    pipe = make_pipe(0.7, **ALL_ON)
    torch.manual_seed(5)
    a = pipe(x)
    torch.manual_seed(5)
    b = pipe(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, pipe(x))  # the next draw differs


def test_gradients_flow_to_images_with_all_transforms():
    x = smooth_images(4).requires_grad_(True)
    weights = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    (make_pipe(1.0, **ALL_ON)(x) * weights).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()


def test_second_derivatives_are_correct_for_r1():
    """Lazy R1 differentiates D(augment(x)) twice w.r.t. x: check gradients of gradients numerically."""
    x = smooth_images(2, res=8).double().requires_grad_(True)
    pipe = make_pipe(1.0, **ALL_ON)

    def augmented_squared(images):
        with torch.random.fork_rng():
            torch.manual_seed(11)  # the same augmentation on every call
            return pipe(images).square()

    assert torch.autograd.gradcheck(augmented_squared, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(augmented_squared, (x,), fast_mode=True)


def test_xflip_equals_torch_flip():
    x = smooth_images(16)
    torch.manual_seed(0)
    y = make_pipe(1.0, xflip=1)(x)
    flipped = [torch.equal(y[i], torch.flip(x[i], dims=[2])) for i in range(16)]
    same = [torch.equal(y[i], x[i]) for i in range(16)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)  # a flip state is drawn uniformly once the transform applies


def test_rotate90_is_an_exact_quarter_turn():
    x = smooth_images(16)
    torch.manual_seed(0)
    y = make_pipe(1.0, rotate90=1)(x)
    seen = set()
    for i in range(16):
        matches = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(1, 2)))]
        assert len(matches) == 1, f"image {i} is not a pixel-exact quarter turn"
        seen.add(matches[0])
    assert len(seen) >= 3


def test_integer_translation_moves_pixels_without_interpolation():
    x = smooth_images(8)
    torch.manual_seed(0)
    y = make_pipe(1.0, xint=1, xint_max=0.125)(x)
    padded = F.pad(x, [4, 4, 4, 4], mode="reflect")  # max shift 0.125 * 32 = 4 px
    for i in range(8):
        shifts = [(dx, dy) for dx in range(-4, 5) for dy in range(-4, 5)
                  if torch.equal(y[i], padded[i, :, 4 - dy: 36 - dy, 4 - dx: 36 - dx])]
        assert len(shifts) == 1, f"image {i} is not an exact integer shift"


def test_brightness_adds_a_constant_per_image():
    x = smooth_images(8)
    torch.manual_seed(0)
    y = make_pipe(1.0, brightness=1)(x)
    delta = (y - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)  # same offset everywhere
    assert (delta[:, 0].abs() > 1e-4).all()  # and the mean moved
    assert torch.allclose(y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), delta[:, 0], atol=1e-5)


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_hue_and_saturation_keep_luma(name):
    """Both act orthogonally to the grey axis, so the per-pixel channel mean is unchanged."""
    x = smooth_images(8)
    torch.manual_seed(0)
    y = make_pipe(1.0, **{name: 1})(x)
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)


def test_flip_probability_matches_p():
    """With p=0.5, x-flip is applied to half the images; applying draws a uniform flip state, so a
    quarter of the images end up mirrored (the reference's semantics)."""
    x = torch.arange(8.0).reshape(1, 1, 1, 8).expand(4000, 1, 8, 8).contiguous()
    torch.manual_seed(0)
    y = make_pipe(0.5, xflip=1)(x)
    mirrored = (y[:, 0, 0, 0] == 7).float().mean().item()
    assert abs(mirrored - 0.25) < 0.03


def test_brightness_probability_matches_p():
    x = torch.zeros(4000, 3, 4, 4)
    torch.manual_seed(0)
    y = make_pipe(0.5, brightness=1)(x)
    changed = (y[:, 0, 0, 0] != 0).float().mean().item()
    assert abs(changed - 0.5) < 0.03


def _pattern(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """A smooth analytic image (period about 11 px)."""
    return torch.sin(0.5 * xs + 0.3 * ys + 0.2) * torch.cos(0.25 * ys - 0.4 * xs)


@pytest.mark.parametrize("kind", ["fractional_shift", "rotation", "zoom_out", "zoom_in", "aniso"])
def test_geometric_resampling_matches_the_analytic_transform(kind):
    """apply_geometric reproduces a transformed analytic image, more accurately than plain bilinear."""
    res = 32
    c = (res - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(res) - c, torch.arange(res) - c, indexing="ij")
    image = _pattern(xs.float(), ys.float())[None, None]
    one = torch.ones(1)
    G_inv = {"fractional_shift": ops.translate2d(torch.tensor([0.37]), torch.tensor([-0.61])),
             "rotation": ops.rotate2d(torch.tensor([0.4])),
             "zoom_out": ops.scale2d(1.25 * one, 1.25 * one),
             "zoom_in": ops.scale2d(0.8 * one, 0.8 * one),
             "aniso": ops.scale2d(1.2 * one, 1 / 1.2 * one)}[kind]
    out = ops.apply_geometric(image, G_inv, ops.lowpass_filter())[0, 0]
    src = G_inv[0] @ torch.stack([xs.flatten().float(), ys.flatten().float(), torch.ones(res * res)])
    truth = _pattern(src[0], src[1]).reshape(res, res)
    inside = ((src[0].abs() < c - 3) & (src[1].abs() < c - 3)).reshape(res, res)  # away from reflections
    theta = ops.scale2d(2 / res, 2 / res) @ G_inv @ ops.scale2d(res / 2, res / 2)
    grid = F.affine_grid(theta[:, :2], [1, 1, res, res], align_corners=False)
    bilinear = F.grid_sample(image, grid, align_corners=False)[0, 0]
    ours_err = (out - truth)[inside].abs().max().item()
    bilinear_err = (bilinear - truth)[inside].abs().max().item()
    assert ours_err < 0.03
    assert ours_err < bilinear_err / 2


def test_geometric_identity_and_integer_shift_are_lossless():
    """The sym6 filter is orthogonal: up-then-down sampling returns the image exactly."""
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    f = ops.lowpass_filter()
    same = ops.apply_geometric(x, torch.eye(3).repeat(2, 1, 1), f)
    assert torch.allclose(same, x, atol=1e-5)
    shifted = ops.apply_geometric(x, ops.translate2d(torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0])), f)
    assert torch.allclose(shifted[..., :14], x[..., 2:], atol=1e-5)


def test_greyscale_images_are_supported():
    x = smooth_images(4, channels=1)
    torch.manual_seed(0)
    y = make_pipe(1.0, **ALL_ON)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_bad_input_gives_clear_errors():
    with pytest.raises(AcneopsError, match="RGB"):
        torch.manual_seed(0)
        make_pipe(1.0, brightness=1)(torch.zeros(2, 4, 8, 8))
    with pytest.raises(AcneopsError, match=r"\(B, C, H, W\)"):
        make_pipe(1.0, xflip=1)(torch.zeros(3, 8, 8))
    with pytest.raises(AcneopsError, match="scale_std"):
        AugmentPipe(scale_std=-1)


# ------------------------------------------------------------------------------------------------
# AdaController


def test_controller_raises_p_when_d_is_sure_of_the_reals():
    pipe = AugmentPipe(xflip=1)
    ctrl = AdaController(pipe, target=0.6, interval=4, speed_kimg=0.5, batch_size=10)
    for _ in range(3):
        for _ in range(4):
            ctrl.accumulate(torch.ones(10, 1) * 3.0)  # every real judged real: r_t = 1
        ctrl.update()
    assert ctrl.rt == 1.0
    assert float(pipe.p) == pytest.approx(3 * 10 * 4 / 500)


def test_controller_keeps_p_at_zero_when_logits_are_balanced():
    pipe = AugmentPipe(xflip=1)
    ctrl = AdaController(pipe, target=0.6, interval=4, speed_kimg=0.5, batch_size=10)
    signs = torch.tensor([1.0, -1.0] * 5).reshape(10, 1)
    for _ in range(5):
        for _ in range(4):
            ctrl.accumulate(signs * 0.1)
        ctrl.update()
    assert ctrl.rt == 0.0
    assert float(pipe.p) == 0.0


def test_controller_clamps_p_to_one_and_lowers_it():
    pipe = AugmentPipe(xflip=1)
    ctrl = AdaController(pipe, target=0.6, interval=1, speed_kimg=0.001, batch_size=4)  # step 4 per update
    ctrl.accumulate(torch.ones(4, 1))
    assert ctrl.update() == 1.0
    ctrl.accumulate(-torch.ones(4, 1))
    assert ctrl.update() == 0.0
    assert ctrl.update() == 0.0  # nothing accumulated: unchanged


def test_controller_state_dict_round_trip_resumes_exactly():
    def make():
        pipe = AugmentPipe(xflip=1)
        return pipe, AdaController(pipe, target=0.6, interval=4, speed_kimg=0.1, batch_size=8)

    logits = torch.randn(20, 8, 1, generator=torch.Generator().manual_seed(0)) + 0.8
    pipe_a, a = make()
    for i in range(10):
        a.accumulate(logits[i])
        if (i + 1) % 4 == 0:
            a.update()
    state = a.state_dict()  # taken mid-interval, with partial sums
    pipe_b, b = make()
    b.load_state_dict(state)
    assert float(pipe_b.p) == float(pipe_a.p) and b.rt == a.rt
    for i in range(10, 20):
        for ctrl in (a, b):
            ctrl.accumulate(logits[i])
            if (i + 1) % 4 == 0:
                ctrl.update()
    assert float(pipe_b.p) == float(pipe_a.p) > 0
    assert b.rt == a.rt
    with pytest.raises(AcneopsError, match="missing"):
        b.load_state_dict({"p": 0.1})


def test_controller_rejects_bad_settings():
    with pytest.raises(AcneopsError, match="interval"):
        AdaController(AugmentPipe(), interval=0)
    with pytest.raises(AcneopsError, match="target"):
        AdaController(AugmentPipe(), target=1.5)
    assert math.isnan(AdaController(AugmentPipe()).rt)
