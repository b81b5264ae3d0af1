"""conf/task/paper.yaml (`dvc exp run -S task=paper`): the hierarchical StyleGAN2 paper's setting, NVIDIA's StyleGAN2
config F at 1024 px fine-tuned from the imported FFHQ network, and the paper's exported counts per class.

Parameter counts are checked against a count written independently from NVIDIA's stylegan2-ada-pytorch
training/networks.py (skip generator, residual discriminator, unconditional): the count reproduces the reference
network NVIDIA's code built (../shared/testdata/nvlabs_stylegan2_32px.json: G 1,146,771, D 337,281), and at config F
1024 gives G 30,370,060 and D 29,012,513. (A published stylegan2-ada-pytorch training log at 1024 px with the 'auto'
config, same channels but mapping depth 2, prints G 28,794,124 = 30,370,060 - 6 x 262,656 and D 29,012,513.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pipeline_repo import copy_pipeline, exp_run_params

from acneops.stages.train_gan import config_from_params

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("ACNEOPS_TESTDATA_DIR", REPO.parent / "shared" / "testdata"))


def _ch(res: int, base: int, cmax: int) -> int:
    return min(base // res, cmax)  # networks.py: channels_dict


def nvidia_g_params(res: int, z: int, w: int, mapping: int, base: int, cmax: int, img: int = 3) -> int:
    """Parameters of NVIDIA's Generator: mapping FCs (weight + bias), const, per block conv0 (up) / conv1
    SynthesisLayers (affine FC w->in with bias, weight out x in x 3 x 3, noise_strength, bias) and ToRGB."""
    feats = [z] + [w] * mapping
    n = sum(a * b + b for a, b in zip(feats[:-1], feats[1:]))

    def layer(i: int, o: int) -> int:
        return (w * i + i) + o * i * 9 + 1 + o

    def torgb(i: int) -> int:
        return (w * i + i) + img * i + img

    c4 = _ch(4, base, cmax)
    n += c4 * 4 * 4 + layer(c4, c4) + torgb(c4)
    r = 8
    while r <= res:
        i, o = _ch(r // 2, base, cmax), _ch(r, base, cmax)
        n += layer(i, o) + layer(o, o) + torgb(o)
        r *= 2
    return n


def nvidia_d_params(res: int, base: int, cmax: int, img: int = 3, mbstd: int = 1) -> int:
    """Parameters of NVIDIA's resnet Discriminator: fromRGB (first block only), conv0, conv1 (down), bias-free skip
    per block; epilogue conv over C4 + mbstd channels, fc (C4*16 -> C4), out (C4 -> 1)."""
    n, r = 0, res
    while r >= 8:
        t, o = _ch(r, base, cmax), _ch(r // 2, base, cmax)
        n += (img * t + t if r == res else 0) + (t * t * 9 + t) + (o * t * 9 + o) + o * t
        r //= 2
    c4 = _ch(4, base, cmax)
    return n + (c4 * (c4 + mbstd) * 9 + c4) + (c4 * 16 * c4 + c4) + (c4 + 1)


def test_the_count_reproduces_the_network_nvidias_code_built():
    ref = json.loads((TESTDATA / "nvlabs_stylegan2_32px.json").read_text())
    assert nvidia_g_params(ref["resolution"], ref["z_dim"], ref["w_dim"], ref["mapping_layers"], ref["channel_base"],
                           ref["channel_max"]) == ref["G_params"] == 1_146_771
    assert nvidia_d_params(ref["resolution"], ref["channel_base"], ref["channel_max"]) == ref["D_params"] == 337_281


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> dict:
    return exp_run_params(copy_pipeline(tmp_path_factory.mktemp("paper")), ["task=paper"])


def test_paper_preset_is_config_f_at_1024_from_the_ffhq_import(paper):
    from acneops.gan.loop import model_args
    from acneops.gan.stylegan2 import Discriminator, Generator

    runs = {name: config_from_params(paper, name) for name in paper["train_gan"]["runs"]}
    G_all = runs["all"]
    assert G_all.resume_from == "models/nvlabs/ffhq.pt" and G_all.labels == ("mild", "moderate", "severe")
    assert {name: Path(cfg.resume_from).parent.name for name, cfg in runs.items() if name != "all"} == dict.fromkeys(
        ("mild", "moderate", "severe"), "all")
    # ACNE04 has no healthy faces: the paper drew them from the FFHQ generator, so no healthy fine-tune exists and
    # the healthy class is prior-only, exported from the import through the sorter's prior rule
    assert paper["ingest"]["prior_classes"] == ["healthy"]
    assert paper["synthesize"]["generators"]["healthy"] == paper["evaluate"]["generators"]["healthy"] == G_all.resume_from
    assert {cfg.image_dir for name, cfg in runs.items() if name in ("mild", "moderate", "severe")} == {
        f"datasets/sorted/{s}" for s in ("mild", "moderate", "severe")}
    args = model_args(G_all)
    assert all(model_args(cfg) == args for cfg in runs.values())  # one architecture down the hierarchy
    G, D = Generator(**args["G"]), Discriminator(**args["D"])
    n_G, n_D = (sum(p.numel() for p in net.parameters()) for net in (G, D))
    assert n_G == nvidia_g_params(1024, 512, 512, 8, 32768, 512) == 30_370_060
    assert n_D == nvidia_d_params(1024, 32768, 512) == 29_012_513
    assert paper["restore"]["resolution"] == 1024


def test_paper_preset_exports_the_papers_counts_per_class(paper):
    assert paper["synthesize"]["counts"] == {"healthy": 1387, "mild": 841, "moderate": 1173, "severe": 1086}


def test_an_ffhq_import_fits_the_paper_run(paper):
    """NVIDIA's ffhq.pkl (converted from TensorFlow: no conv clamp, its own minibatch-std group) passes the import's
    check against run 'all' and is written with that run's settings, so transfer loads every tensor."""
    from acneops.core.errors import AcneopsError
    from acneops.gan.loop import model_args
    from acneops.gan.nvlabs_import import fit_targets

    ffhq = {"G": dict(z_dim=512, w_dim=512, img_resolution=1024, img_channels=3, mapping_layers=8, channel_base=32768,
                      channel_max=512, conv_clamp=None, mapping_lr_mult=0.01, w_avg_beta=0.995),
            "D": dict(img_resolution=1024, img_channels=3, channel_base=32768, channel_max=512, conv_clamp=None,
                      mbstd_group_size=None, mbstd_num_channels=1)}
    values = {**{k: v for k, v in paper["train_gan"].items() if k != "runs"}, **paper["train_gan"]["runs"]["all"]}
    fitted = fit_targets(ffhq, [("task=paper run 'all'", values)], Path("ffhq.pkl"))
    assert fitted == model_args(config_from_params(paper, "all"))
    with pytest.raises(AcneopsError, match="resolution: pickle 1024, train_gan.resolution 32"):
        fit_targets(ffhq, [("default", {**values, "resolution": 32})], Path("ffhq.pkl"))
