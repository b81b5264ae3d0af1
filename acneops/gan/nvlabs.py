"""Map NVIDIA StyleGAN2 parameters (stylegan2-ada-pytorch / stylegan3 ``networks_stylegan2.py``) onto acneops.

Paper: Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020).

acneops.gan.stylegan2 uses NVIDIA's parameter and buffer names, so the mapping is: strip the ``G.`` /
``D.`` prefix, drop the constant ``resample_filter`` buffers (after checking they hold the standard
[1,3,3,1] filter acneops hard-wires), and check every shape. A later importer of NVIDIA's released
``.pkl`` files only has to unpickle them and hand the tensors over, e.g.
``load_nvlabs_state({'G': data['G_ema'].state_dict(), 'D': data['D'].state_dict()})`` followed by
:func:`build_from_nvlabs`. Conditional models (c_dim > 0, which acneops trains itself but this importer
does not map yet) and the non-default architectures ('orig', G 'resnet', D 'skip') are rejected with a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acneops.core.errors import AcneopsError
from acneops.gan.ops import setup_filter


def _to_tensor(value: Any, name: str) -> torch.Tensor:
    """A float32 CPU tensor from a numpy array or tensor; anything else is a clear error."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32).clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, dtype=np.float32))
    raise AcneopsError(f"NVIDIA state: entry {name!r} is a {type(value).__name__}, expected an array or tensor")


def _split_prefixed(source: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{'G.x': .., 'D.y': ..} or {'G': {...}, 'D': {...}} -> (G entries, D entries) without prefixes."""
    if isinstance(source.get("G"), Mapping) or isinstance(source.get("D"), Mapping):
        return dict(source.get("G") or {}), dict(source.get("D") or {})
    g_entries, d_entries = {}, {}
    for key, value in source.items():
        if key.startswith("G."):
            g_entries[key[2:]] = value
        elif key.startswith("D."):
            d_entries[key[2:]] = value
    return g_entries, d_entries


def nvlabs_name(nv_name: str, net: str) -> str | None:
    """acneops state-dict name of NVIDIA parameter ``nv_name`` of net 'G' or 'D'; None = constant
    buffer acneops does not store (resample_filter). Unsupported variants raise AcneopsError."""
    if nv_name.endswith("resample_filter"):
        return None
    if net == "D" and (nv_name.startswith("mapping.") or nv_name.startswith("b4.fromrgb.")):
        raise AcneopsError(f"NVIDIA D parameter {nv_name!r}: importing conditional or 'skip' discriminators is not "
                           f"supported; this importer maps the unconditional 'resnet' discriminator")
    if net == "G" and (nv_name.startswith("mapping.embed") or re.match(r"^synthesis\.b\d+\.skip\.", nv_name)):
        raise AcneopsError(f"NVIDIA G parameter {nv_name!r}: importing conditional or 'resnet' generators is not "
                           f"supported; this importer maps the unconditional 'skip' generator")
    return nv_name


def _convert(entries: Mapping[str, Any], net: str) -> dict[str, torch.Tensor]:
    """Rename entries of one net and check every dropped resample_filter is the standard filter."""
    reference = setup_filter()
    state: dict[str, torch.Tensor] = {}
    for nv_name, value in entries.items():
        tensor = _to_tensor(value, f"{net}.{nv_name}")
        name = nvlabs_name(nv_name, net)
        if name is None:
            flt = tensor if tensor.ndim == 2 else torch.outer(tensor, tensor)
            if flt.shape != reference.shape or not torch.allclose(flt, reference, atol=1e-6):
                raise AcneopsError(f"NVIDIA {net}.{nv_name}: resample filter {flt.tolist()} differs from the "
                                   f"[1,3,3,1] filter acneops uses; this checkpoint is not supported")
            continue
        state[name] = tensor
    return state


StateDict = dict[str, torch.Tensor]


def load_nvlabs_state(source: str | Path | Mapping[str, Any]) -> tuple[StateDict, StateDict]:
    """(G_state, D_state) for acneops' Generator / Discriminator from NVIDIA-named parameters.

    ``source``: a .npz path with ``G.<name>`` / ``D.<name>`` arrays (other keys ignored), a dict in that
    form, or ``{'G': G.state_dict(), 'D': D.state_dict()}`` from NVIDIA modules.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AcneopsError(f"{path}: NVIDIA parameter file not found")
        with np.load(path) as data:
            source = {key: data[key] for key in data.files}
    g_entries, d_entries = _split_prefixed(source)
    if not g_entries and not d_entries:
        raise AcneopsError("NVIDIA state: no 'G.'/'D.' entries found; pass names like 'G.mapping.fc0.weight'")
    return _convert(g_entries, "G"), _convert(d_entries, "D")


def _infer_channels(channels: dict[int, int], where: str) -> tuple[int, int]:
    """(channel_base, channel_max) reproducing ``channels[res] = min(base // res, max)`` for every res."""
    channel_max = max(channels.values())
    uncapped = [res for res, ch in channels.items() if ch < channel_max]
    top = max(channels)
    channel_base = channels[max(uncapped)] * max(uncapped) if uncapped else channel_max * top
    if any(min(channel_base // res, channel_max) != ch for res, ch in channels.items()):
        raise AcneopsError(f"NVIDIA {where}: channels per resolution {channels} do not follow "
                           f"min(channel_base // res, channel_max); not a standard StyleGAN2 layout")
    return channel_base, channel_max


def generator_args(G_state: Mapping[str, torch.Tensor], conv_clamp: float | None = 256,
                   mapping_lr_mult: float = 0.01, w_avg_beta: float = 0.995) -> dict[str, Any]:
    """Generator constructor kwargs read from the shapes of an acneops-named G state (settings that
    leave no trace in the weights are arguments, NVIDIA's defaults)."""
    try:
        fc = sorted(int(m.group(1)) for k in G_state if (m := re.match(r"^mapping\.fc(\d+)\.weight$", k)))
        res = sorted(int(m.group(1)) for k in G_state if (m := re.match(r"^synthesis\.b(\d+)\.conv1\.weight$", k)))
        channels = {r: int(G_state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
        z_dim = int(G_state["mapping.fc0.weight"].shape[1])
        w_dim = int(G_state[f"mapping.fc{fc[-1]}.weight"].shape[0])
        img_channels = int(G_state[f"synthesis.b{res[-1]}.torgb.weight"].shape[0])
    except (KeyError, IndexError) as exc:
        raise AcneopsError(f"NVIDIA G state lacks {exc}; expected a StyleGAN2 generator") from exc
    channel_base, channel_max = _infer_channels(channels, "G")
    return dict(z_dim=z_dim, w_dim=w_dim, img_resolution=res[-1], img_channels=img_channels,
                mapping_layers=len(fc), channel_base=channel_base, channel_max=channel_max,
                conv_clamp=conv_clamp, mapping_lr_mult=mapping_lr_mult, w_avg_beta=w_avg_beta)


def discriminator_args(D_state: Mapping[str, torch.Tensor], conv_clamp: float | None = 256,
                       mbstd_group_size: int | None = 4) -> dict[str, Any]:
    """Discriminator constructor kwargs read from the shapes of an acneops-named D state."""
    try:
        res = sorted(int(m.group(1)) for k in D_state if (m := re.match(r"^b(\d+)\.conv0\.weight$", k)))
        channels = {r: int(D_state[f"b{r}.conv0.weight"].shape[0]) for r in res}
        channels[4] = int(D_state["b4.conv.weight"].shape[0])
        img_channels = int(D_state[f"b{res[-1]}.fromrgb.weight"].shape[1])
        mbstd_num_channels = int(D_state["b4.conv.weight"].shape[1]) - channels[4]
    except (KeyError, IndexError) as exc:
        raise AcneopsError(f"NVIDIA D state lacks {exc}; expected a StyleGAN2 discriminator") from exc
    channel_base, channel_max = _infer_channels(channels, "D")
    return dict(img_resolution=res[-1], img_channels=img_channels, channel_base=channel_base,
                channel_max=channel_max, conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size,
                mbstd_num_channels=mbstd_num_channels)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], net: str) -> None:
    """Copy ``state`` into ``module``; missing, unexpected or mis-shaped entries are one clear error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: NVIDIA {tuple(state[k].shape)} vs acneops {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise AcneopsError(f"NVIDIA {net} state does not fit the acneops network: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    module.load_state_dict(dict(state), strict=True)


def build_from_nvlabs(source: str | Path | Mapping[str, Any], conv_clamp: float | None = 256,
                      mbstd_group_size: int | None = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G, D) acneops networks built from the shapes of an NVIDIA state and loaded with its values."""
    from acneops.gan.stylegan2 import Discriminator, Generator

    G_state, D_state = load_nvlabs_state(source)
    G = Generator(**generator_args(G_state, conv_clamp=conv_clamp))
    D = Discriminator(**discriminator_args(D_state, conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size))
    load_into(G, G_state, "G")
    load_into(D, D_state, "D")
    return G, D
