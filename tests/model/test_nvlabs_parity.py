"""Faithfulness proof: acneops' StyleGAN2 reproduces a network built with NVIDIA's official code.

The reference (../shared/testdata/nvlabs_stylegan2_32px.npz + .json, see its README) holds random
weights under NVIDIA's parameter names and what NVIDIA's networks compute for fixed z. Loading it
through acneops.gan.nvlabs must give the same ws, images (psi 1 and 0.7, const noise) and D logits to
1e-4, and the same parameter counts. Override the folder with ACNEOPS_TESTDATA_DIR.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from acneops.gan.nvlabs import build_from_nvlabs, load_into, load_nvlabs_state
from acneops.gan.stylegan2 import Discriminator, Generator

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("ACNEOPS_TESTDATA_DIR", REPO.parent / "shared" / "testdata"))
NPZ = TESTDATA / "nvlabs_stylegan2_32px.npz"
ATOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> tuple[dict, dict[str, torch.Tensor]]:
    assert NPZ.is_file(), f"{NPZ} missing: the NVIDIA reference is required (set ACNEOPS_TESTDATA_DIR)"
    settings = json.loads(NPZ.with_suffix(".json").read_text())
    with np.load(NPZ) as data:
        arrays = {k: torch.from_numpy(data[k]) for k in data.files if not k.startswith(("G.", "D."))}
    return settings, arrays


@pytest.fixture(scope="module")
def networks(reference) -> tuple[Generator, Discriminator]:
    settings, _ = reference
    G = Generator(z_dim=settings["z_dim"], w_dim=settings["w_dim"], img_resolution=settings["resolution"],
                  mapping_layers=settings["mapping_layers"], channel_base=settings["channel_base"],
                  channel_max=settings["channel_max"], conv_clamp=settings["conv_clamp"])
    D = Discriminator(img_resolution=settings["resolution"], channel_base=settings["channel_base"],
                      channel_max=settings["channel_max"], conv_clamp=settings["conv_clamp"],
                      mbstd_group_size=settings["mbstd_group_size"])
    G_state, D_state = load_nvlabs_state(NPZ)
    load_into(G, G_state, "G")
    load_into(D, D_state, "D")
    return G.eval(), D.eval()


def test_parameter_counts_equal_nvidia(reference, networks) -> None:
    settings, _ = reference
    G, D = networks
    assert sum(p.numel() for p in G.parameters()) == settings["G_params"] == 1_146_771
    assert sum(p.numel() for p in D.parameters()) == settings["D_params"] == 337_281


@pytest.mark.parametrize("fused_modconv", [False, True])
def test_generator_reproduces_nvidia_outputs(reference, networks, fused_modconv: bool) -> None:
    _, ref = reference
    G, _ = networks
    with torch.no_grad():
        ws = G.mapping(ref["z"])
        torch.testing.assert_close(ws, ref["ws"], atol=ATOL, rtol=0)
        img = G.synthesis(ref["ws"], noise_mode="const", fused_modconv=fused_modconv)
        torch.testing.assert_close(img, ref["img"], atol=ATOL, rtol=0)
        ws_psi = G.mapping(ref["z"], truncation_psi=0.7)
        torch.testing.assert_close(ws_psi, ref["ws_psi0.7"], atol=ATOL, rtol=0)
        img_psi = G(ref["z"], truncation_psi=0.7, noise_mode="const")
        if fused_modconv:
            img_psi = G.synthesis(ws_psi, noise_mode="const", fused_modconv=True)
        torch.testing.assert_close(img_psi, ref["img_psi0.7"], atol=ATOL, rtol=0)
    assert img.abs().max() > 1.0, "reference images are unclamped; a clamp to [-1, 1] would show here"


def test_discriminator_reproduces_nvidia_logits(reference, networks) -> None:
    _, ref = reference
    _, D = networks
    with torch.no_grad():
        torch.testing.assert_close(D(ref["img"]), ref["D_logits_of_img"], atol=ATOL, rtol=0)


def test_networks_built_from_shapes_alone_match_too(reference) -> None:
    """build_from_nvlabs infers the architecture from the weights (what the .pkl importer will use)."""
    _, ref = reference
    G, D = build_from_nvlabs(NPZ)
    with torch.no_grad():
        torch.testing.assert_close(G(ref["z"], noise_mode="const"), ref["img"], atol=ATOL, rtol=0)
        torch.testing.assert_close(D(ref["img"]), ref["D_logits_of_img"], atol=ATOL, rtol=0)
