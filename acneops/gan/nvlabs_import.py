"""`acneops gan import-nvlabs`: an NVIDIA StyleGAN2 network pickle as an acneops GAN checkpoint.

The pickle is read as data by :mod:`acneops.gan.nvlabs_pickle` (nothing in it runs), its parameters are mapped
onto acneops' StyleGAN2 by :mod:`acneops.gan.nvlabs` (parity with NVIDIA's networks: tests/model/
test_nvlabs_parity.py), and written in the one checkpoint format (:mod:`acneops.gan.checkpoint`) that
``train_gan.resume_from`` reads: ``G_ema`` of the pickle becomes G_ema, ``G`` becomes G (G_ema when the pickle has
no G), ``D`` becomes D; step and cur_nimg are 0. The checkpoint says where it came from::

    'source': {'kind': 'nvlabs', 'pickle_name': 'ffhq.pkl', 'pickle_sha256': ..., 'persistence_version': 6,
               'classes': {'G': 'Generator', ...}, 'module_src_sha256': {...}, 'init_kwargs': {'G': ..., 'D': ...},
               'G_from': 'G' | 'G_ema', 'training_set_kwargs': ... | None, 'augment_p': float | None,
               'checked_against': [...]}

(:func:`is_nvlabs_import` tells an import from a checkpoint acneops trained). Optionally the architecture is
checked against the train_gan settings that will fine-tune it (a *target*): every mismatch of resolution, image
channels, z/w size, mapping depth, channel_base/channel_max is one line of one error. Settings that leave no trace
in the weights (conv_clamp, minibatch-std group) are then taken from the target, as NVIDIA's own ``--resume`` does,
so ``transfer`` loads every tensor; without a target the pickle's own values are kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from acneops.core.errors import AcneopsError
from acneops.core.io import sha256_file
from acneops.gan import checkpoint as ckpt_io
from acneops.gan.nvlabs_pickle import NetworkPickle, module_state, read_network_pickle

# train_gan keys that decide the StyleGAN2 architecture (acneops.gan.loop.model_args reads these)
ARCH_KEYS = ("family", "resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
             "conv_clamp", "mbstd_group")
# model_args keys whose values shape the weights, with the train_gan key a person sets (None: not a train_gan key)
SHAPE_KEYS = {"G": {"img_resolution": "resolution", "img_channels": None, "z_dim": "z_dim", "w_dim": "w_dim",
                    "mapping_layers": "mapping_layers"},
              "D": {"img_resolution": "resolution", "img_channels": None, "mbstd_num_channels": None}}
ModelArgs = dict[str, dict[str, Any]]


def _kwargs(pkl: NetworkPickle) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(mapping kwargs, synthesis kwargs, D kwargs) from NVIDIA's init kwargs: stylegan2-ada-pytorch nests
    ``synthesis_kwargs``, stylegan3's networks_stylegan2 passes them flat."""
    g_kw, d_kw = pkl.init_kwargs("G_ema"), pkl.init_kwargs("D")
    return dict(g_kw.get("mapping_kwargs") or {}), {**g_kw, **(g_kw.get("synthesis_kwargs") or {})}, d_kw


def check_supported(pkl: NetworkPickle, G_names: Sequence[str]) -> None:
    """The networks are the unconditional StyleGAN2 acneops implements (skip G, resnet D, lrelu, noise inputs,
    mapping lr multiplier 0.01); anything else is one error listing every difference."""
    where = f"{pkl.path}"
    if any(name.startswith(("synthesis.input.", "synthesis.L0_")) for name in G_names):
        raise AcneopsError(f"{where}: a StyleGAN3 (alias-free, stylegan3-t/-r) generator; acneops implements "
                           "StyleGAN2: import an ffhq.pkl of stylegan2-ada-pytorch or a stylegan3 --cfg=stylegan2 run")
    expected = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
    problems = [f"{net} is a {obj.class_name!r}, expected {expected[net]!r}" for net, obj in pkl.nets.items()
                if obj.class_name != expected[net]]
    mk, sk, d_kw = _kwargs(pkl)
    conditional = [f"{net} c_dim={kw['c_dim']}" for net, kw in (("G", sk), ("D", d_kw)) if kw.get("c_dim")]
    if conditional:
        problems.append(f"class-conditional ({', '.join(conditional)}); the importer maps unconditional networks "
                        "(a conditional train_gan run starts from an unconditional base: transfer)")
    for what, value, want in (("G architecture", sk.get("architecture", "skip"), "skip"),
                              ("D architecture", d_kw.get("architecture", "resnet"), "resnet"),
                              ("mapping activation", mk.get("activation", "lrelu"), "lrelu"),
                              ("synthesis activation", sk.get("activation", "lrelu"), "lrelu"),
                              ("D activation", (d_kw.get("block_kwargs") or {}).get("activation", "lrelu"), "lrelu"),
                              ("synthesis use_noise", sk.get("use_noise", True), True)):
        if value != want:
            problems.append(f"{what} {value!r} (acneops: {want!r})")
    lr_mult = mk.get("lr_multiplier", 0.01)
    if not isinstance(lr_mult, (int, float)) or not math.isclose(lr_mult, 0.01):
        problems.append(f"mapping lr_multiplier {lr_mult!r} (acneops: 0.01; the stored weights are scaled by it)")
    if mk.get("layer_features") not in (None, sk.get("w_dim")):
        problems.append(f"mapping layer_features {mk['layer_features']!r} (acneops: w_dim {sk.get('w_dim')!r})")
    if problems:
        raise AcneopsError(f"{where}: not the StyleGAN2 acneops implements: " + "; ".join(problems))


def _channels(args: Mapping[str, Any], resolution: int) -> dict[int, int]:
    """Feature maps per resolution 4..resolution of a network with these channel_base / channel_max."""
    return {2 ** k: min(args["channel_base"] // 2 ** k, args["channel_max"])
            for k in range(2, int(math.log2(resolution)) + 1)}


def _prefer_init_kwargs(args: dict[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """channel_base / channel_max as NVIDIA recorded them when they give the channels read from the weights
    (when every layer is capped by channel_max, the weights alone cannot tell channel_base)."""
    recorded = {k: kwargs[k] for k in ("channel_base", "channel_max") if isinstance(kwargs.get(k), int)}
    candidate = {**args, **recorded}
    if len(recorded) == 2 and _channels(candidate, args["img_resolution"]) == _channels(args, args["img_resolution"]):
        return candidate
    return args


def pickle_model_args(pkl: NetworkPickle, G_state: Mapping[str, Any], D_state: Mapping[str, Any]) -> ModelArgs:
    """acneops constructor kwargs of G and D: shapes from the weights, the rest from NVIDIA's init kwargs."""
    from acneops.gan.nvlabs import discriminator_args, generator_args

    _, sk, d_kw = _kwargs(pkl)
    epilogue = d_kw.get("epilogue_kwargs") or {}
    G = generator_args(G_state, conv_clamp=sk.get("conv_clamp"))
    D = discriminator_args(D_state, conv_clamp=d_kw.get("conv_clamp"),
                           mbstd_group_size=epilogue.get("mbstd_group_size", 4))
    return {"G": _prefer_init_kwargs(G, sk), "D": _prefer_init_kwargs(D, d_kw)}


def target_model_args(values: Mapping[str, Any]) -> ModelArgs:
    """The model_args train_gan builds from these train_gan values (a run's merged keys; missing keys take
    TrainGanConfig's defaults), exactly what ``transfer`` will compare the checkpoint with."""
    from acneops.gan.config import TrainGanConfig
    from acneops.gan.loop import model_args

    arch = {k: values[k] for k in ARCH_KEYS if values.get(k) is not None}
    if arch.get("family", "stylegan2") != "stylegan2":
        raise AcneopsError(f"family: pickle stylegan2, train_gan.family {arch['family']}; an NVIDIA StyleGAN2 "
                           "pickle can only be the base of a stylegan2 run")
    cfg = TrainGanConfig(name="nvlabs-import", out_dir=Path("."), labels=("target",), **arch)
    return model_args(cfg)


def _mismatches(args: ModelArgs, target: ModelArgs) -> list[str]:
    """One line per setting where the pickle's network and the target's differ in shape."""
    lines = []
    for net, keys in SHAPE_KEYS.items():
        for key, tg_key in keys.items():
            ours, theirs = args[net][key], target[net].get(key, 1 if key == "mbstd_num_channels" else None)
            line = (f"{tg_key}: pickle {ours}, train_gan.{tg_key} {theirs}" if tg_key
                    else f"{net} {key}: pickle {ours}, acneops trains {theirs}")
            if ours != theirs and line not in lines:
                lines.append(line)
    for net in ("G", "D"):
        if _channels(args[net], args[net]["img_resolution"]) != _channels(target[net], args[net]["img_resolution"]):
            lines += [f"{key}: pickle {net} {args[net][key]}, train_gan.{key} {target[net][key]}"
                      for key in ("channel_base", "channel_max") if args[net][key] != target[net][key]]
    return lines


def fit_targets(args: ModelArgs, targets: Sequence[tuple[str, Mapping[str, Any]]], src: Path) -> ModelArgs:
    """The model_args to write: the targets' (unconditional part) when every target fits the pickle's shapes,
    else one AcneopsError naming each mismatch of each target."""
    problems, fitted = [], []
    for label, values in targets:
        target = target_model_args(values)
        lines = _mismatches(args, target)
        if lines:
            problems.append(f"{label}: " + "; ".join(lines))
        fitted.append({net: {k: v for k, v in target[net].items() if k not in ckpt_io.CONDITIONING_KEYS[net]}
                       for net in ("G", "D")})
    if not problems and any(f != fitted[0] for f in fitted):
        problems.append(f"{', '.join(label for label, _ in targets)} resume from it with different network "
                        "settings (conv_clamp, mbstd_group); give them the same values")
    if problems:
        raise AcneopsError(f"{src}: the pickle does not fit the network train_gan will fine-tune: "
                           + " | ".join(problems) + ". Set these train_gan keys to the pickle's values (NVIDIA's "
                           "config F at 1024 px: `dvc exp run -S task=paper`), check another run (--run), or "
                           "import without a check (--no-check)")
    return fitted[0] if fitted else args


@dataclasses.dataclass(frozen=True)
class NvlabsImport:
    """What `acneops gan import-nvlabs` wrote."""

    out: Path  # the acneops GAN checkpoint
    sha256: str  # of out
    pickle_sha256: str  # of the NVIDIA pickle read
    model_args: ModelArgs  # G and D constructor kwargs in the checkpoint
    checked_against: tuple[str, ...]  # target labels the architecture was checked against (empty: none)

    def summary(self) -> str:
        G = self.model_args["G"]
        checked = ", ".join(self.checked_against) or "nothing (no target)"
        return (f"imported NVIDIA StyleGAN2 {G['img_resolution']} px (z {G['z_dim']}, w {G['w_dim']}, mapping "
                f"{G['mapping_layers']}, channel_base {G['channel_base']}, channel_max {G['channel_max']}) -> "
                f"{self.out} ({self.sha256[:12]}); checked against {checked}")


def _source(pkl: NetworkPickle, pickle_sha256: str, G_from: str, checked: Sequence[str]) -> dict[str, Any]:
    return {"kind": "nvlabs", "pickle_name": pkl.path.name, "pickle_sha256": pickle_sha256,
            "persistence_version": pkl.nets["G_ema"].version,
            "classes": {net: obj.class_name for net, obj in pkl.nets.items()},
            "module_src_sha256": {net: pkl.module_src_sha256(net) for net in pkl.nets},
            "init_kwargs": {net: pkl.init_kwargs(net) for net in pkl.nets}, "G_from": G_from,
            "training_set_kwargs": pkl.training_set_kwargs, "augment_p": pkl.augment_p,
            "checked_against": list(checked)}


def train_gan_values(args: ModelArgs) -> dict[str, Any]:
    """The train_gan values that give a network of these model_args (G's channels; D's are checked against them)."""
    G, D = args["G"], args["D"]
    return {"family": "stylegan2", "resolution": G["img_resolution"], "z_dim": G["z_dim"], "w_dim": G["w_dim"],
            "mapping_layers": G["mapping_layers"], "channel_base": G["channel_base"], "channel_max": G["channel_max"],
            "conv_clamp": G["conv_clamp"] or 0, "mbstd_group": D["mbstd_group_size"]}


def train_gan_targets(section: Mapping[str, Any] | None, where: str, run: str | None, out: str | Path,
                      explicit: Mapping[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any] | None]:
    """(targets, expected) of an import (`acneops gan import-nvlabs`). With params.yaml's ``train_gan`` section: the
    (label, values) pairs the network must fit: the named ``run``, else the runs whose ``resume_from`` is ``out``,
    else train_gan's common keys; ``explicit`` values (command-line options) override them. Without params
    (``section`` None): no target, only the explicit values as the expected settings."""
    from acneops.core.config import ConfigError

    if section is None:
        return [], dict(explicit) or None
    common = dict(section)
    runs = {name: {**common, **(values or {})} for name, values in (common.pop("runs", None) or {}).items()}
    if run and run not in runs:
        raise ConfigError(f"{where}: no train_gan run {run!r}; pass --run with one of {sorted(runs)}")
    names = [run] if run else [name for name, values in runs.items() if values.get("resume_from")
                               and Path(str(values["resume_from"])).resolve() == Path(out).resolve()]
    if not names:
        return [(f"{where} train_gan", {**common, **explicit})], None
    return [(f"{where} train_gan run {name!r}", {**runs[name], **explicit}) for name in names], None


def import_nvlabs(src: str | Path, out: str | Path, targets: Sequence[tuple[str, Mapping[str, Any]]] = (),
                  expected: Mapping[str, Any] | None = None) -> NvlabsImport:
    """Read the NVIDIA pickle ``src`` safely and write it as the acneops GAN checkpoint ``out`` (atomically).

    ``targets``: (label, train_gan values) pairs the architecture must fit, e.g. ``("params.yaml train_gan run
    'all'", {...})`` (a missing key is train_gan's default). ``expected``: some train_gan values to check on their
    own (the rest are the pickle's). Neither: no check, the pickle's conv_clamp and minibatch-std group are kept.
    """
    from acneops.gan.nvlabs import load_into, load_nvlabs_state
    from acneops.gan.stylegan2 import Discriminator, Generator

    from acneops.gan.train import CHECKPOINT, FINAL

    src, out = Path(src), Path(out)
    if out.name in (CHECKPOINT, FINAL):
        raise AcneopsError(f"{out}: train_gan takes {CHECKPOINT} / {FINAL} in a run's folder for that run's own "
                           "checkpoint (and replaces one of other settings); write the import under another name, "
                           "e.g. models/nvlabs/ffhq.pt, and point train_gan.resume_from at it")
    pkl = read_network_pickle(src)
    G_from = "G" if "G" in pkl.nets else "G_ema"
    raw = {net: module_state(pkl.nets[net]) for net in {"G_ema", G_from, "D"}}
    check_supported(pkl, list(raw["G_ema"]))
    G_ema_state, D_state = load_nvlabs_state({"G": raw["G_ema"], "D": raw["D"]})
    G_state, _ = load_nvlabs_state({"G": raw[G_from], "D": {}})
    del raw
    args = pickle_model_args(pkl, G_ema_state, D_state)
    if expected:
        targets = [*targets, ("the command line", {**train_gan_values(args), **expected})]
    args = fit_targets(args, targets, src)
    nets = {"G": Generator(**args["G"]), "G_ema": Generator(**args["G"]), "D": Discriminator(**args["D"])}
    for key, state in (("G", G_state), ("G_ema", G_ema_state), ("D", D_state)):
        load_into(nets[key], state, f"{src} {key}")
    pickle_sha256 = sha256_file(src)
    labels = tuple(label for label, _ in targets)
    ckpt = {"family": "stylegan2", "model": {key: net.state_dict() for key, net in nets.items()},
            "model_args": {"G": dict(nets["G"].model_args), "D": dict(nets["D"].model_args)},
            "step": 0, "cur_nimg": 0, "config": {"import": "nvlabs", "src": str(src), "checked_against": list(labels)},
            "source": _source(pkl, pickle_sha256, G_from, labels)}
    sha = ckpt_io.save(out, ckpt)
    return NvlabsImport(out, sha, pickle_sha256, ckpt["model_args"], labels)


def nvlabs_source(path: str | Path) -> dict[str, Any] | None:
    """The ``source`` record of a GAN checkpoint written by :func:`import_nvlabs`; None for a checkpoint acneops
    trained. A missing or unreadable file is an AcneopsError (from :func:`acneops.gan.checkpoint.load`)."""
    source = ckpt_io.load(path).get("source")
    return source if isinstance(source, dict) and source.get("kind") == "nvlabs" else None


def is_nvlabs_import(path: str | Path) -> bool:
    """True when the GAN checkpoint at ``path`` is an NVIDIA import (e.g. FFHQ: faces aligned as FFHQ's),
    False when acneops trained it."""
    return nvlabs_source(path) is not None
