"""NVIDIA-format network pickles for the importer tests, written the way NVIDIA's training loop writes them.

Not a conftest: imported by name from tests/code/test_nvlabs_import.py. :func:`build_pickles` writes a stand-in of
NVIDIA's ``torch_utils/persistence.py`` (persistent classes pickled as ``_reconstruct_persistent_obj(meta)``, meta =
type, version 6, the defining module's source, class name, the module's ``__dict__``), ``dnnlib.EasyDict`` and a
``training/networks.py`` of persistent classes under NVIDIA's class names into a folder, then runs a builder in a
separate process that fills the module tree of stylegan2-ada-pytorch's G / D (``mapping.fc0``,
``synthesis.b4.conv1.affine``, ``b4.mbstd``, ...) with the reference tensors of nvlabs_stylegan2_32px.npz and pickles
snapshots with ``pickle.dump``, so the test process itself never imports any of that code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PERSISTENCE = '''
"""Stand-in for NVIDIA's torch_utils/persistence.py: pickles a persistent class as NVIDIA's does."""
import inspect
import sys

MODULE_SRC_OVERRIDE = None  # the builder sets it to write a pickle whose module_src would run code


def _reconstruct_persistent_obj(meta):
    raise RuntimeError("NVIDIA's loader execs meta['module_src'] here; an importer must never call this")


def persistent_class(orig_class):
    module_src = inspect.getsource(sys.modules[orig_class.__module__])

    class Decorator(orig_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args, self._init_kwargs = args, kwargs

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            meta = dict(type="class", version=6, module_src=MODULE_SRC_OVERRIDE or module_src,
                        class_name=orig_class.__name__, state=fields[2])
            return (_reconstruct_persistent_obj, (meta,), None)

    Decorator.__name__ = orig_class.__name__
    return Decorator
'''

EASYDICT = '''
class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict with attribute access."""
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value
'''

NETWORKS = '''
"""Stand-in for NVIDIA's training/networks.py: persistent classes under NVIDIA's names (no forward needed)."""
import os

import torch

from torch_utils import persistence

if __name__.startswith("_imported_module_"):  # only where NVIDIA's loader execs this source
    open(os.environ["ACNEOPS_EXEC_MARKER"], "w").write("module_src was executed")

NAMES = ("Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisBlock",
         "SynthesisLayer", "ToRGBLayer", "Discriminator", "DiscriminatorBlock", "Conv2dLayer",
         "DiscriminatorEpilogue", "MinibatchStdLayer", "AugmentPipe")


def _init(self, **kwargs):
    torch.nn.Module.__init__(self)


for _name in NAMES:
    _cls = type(_name, (torch.nn.Module,), {"__init__": _init, "__module__": __name__})
    globals()[_name] = persistence.persistent_class(_cls)


class Plain:
    """Not persistent: pickled by reference to this module, as any foreign class would be."""
'''

TFLIB = '''
class Network:
    """Stand-in for dnnlib.tflib.network.Network of NVIDIA's TensorFlow StyleGAN2 pickles."""
'''

BUILDER = '''
import os
import pickle
import re
import sys

import numpy as np
import torch

import dnnlib
from dnnlib.tflib.network import Network
from torch_utils import persistence
from training import networks

npz, out = sys.argv[1], sys.argv[2]
data = np.load(npz)
BUFFERS = ("resample_filter", "noise_const", "w_avg")
CLASSES = {"G": [(r"mapping", "MappingNetwork"), (r"mapping\\.fc\\d+|.*\\.affine", "FullyConnectedLayer"),
                 (r"synthesis", "SynthesisNetwork"), (r"synthesis\\.b\\d+", "SynthesisBlock"),
                 (r".*\\.conv[01]", "SynthesisLayer"), (r".*\\.torgb", "ToRGBLayer")],
           "D": [(r"b4", "DiscriminatorEpilogue"), (r"b\\d+", "DiscriminatorBlock"),
                 (r"b4\\.(fc|out)", "FullyConnectedLayer"), (r".*\\.(fromrgb|conv0|conv1|skip|conv)", "Conv2dLayer")]}


def class_of(net, path):
    return next(cls for pattern, cls in CLASSES[net] if re.fullmatch(pattern, path))


def build(net, top, scale=1.0, **init_kwargs):
    root = getattr(networks, top)(**init_kwargs)
    for key in data.files:
        if not key.startswith(net + "."):
            continue
        *path, leaf = key[len(net) + 1:].split(".")
        module = root
        for i, part in enumerate(path):
            if part not in module._modules:
                child = getattr(networks, class_of(net, ".".join(path[:i + 1])))()
                if isinstance(child, networks.FullyConnectedLayer):
                    child.activation, child.weight_gain, child.bias_gain = "linear", np.float64(0.0441), 1
                module.add_module(part, child)
            module = module._modules[part]
        tensor = torch.from_numpy(np.array(data[key]))
        if leaf in BUFFERS:
            module.register_buffer(leaf, tensor)
        else:
            module.register_parameter(leaf, torch.nn.Parameter(tensor * scale, requires_grad=False))
    return root


def snapshot(c_dim=0, **extra):
    E = dnnlib.EasyDict
    g_kwargs = dict(z_dim=512, c_dim=c_dim, w_dim=512, img_resolution=32, img_channels=3,
                    mapping_kwargs=E(num_layers=2),
                    synthesis_kwargs=E(channel_base=16384, channel_max=64, num_fp16_res=0, conv_clamp=256))
    G_ema = build("G", "Generator", **g_kwargs)
    G = build("G", "Generator", scale=0.5, **g_kwargs)  # G differs from G_ema: the importer must tell them apart
    D = build("D", "Discriminator", c_dim=c_dim, img_resolution=32, img_channels=3, channel_base=16384,
              channel_max=64, num_fp16_res=0, conv_clamp=256, block_kwargs=E(), mapping_kwargs=E(),
              epilogue_kwargs=E(mbstd_group_size=4))
    D.b4.add_module("mbstd", networks.MinibatchStdLayer(group_size=4, num_channels=1))
    D.b4.mbstd.group_size, D.b4.mbstd.num_channels = 4, 1
    D.b8.skip.register_parameter("bias", None)  # NVIDIA's skip layers have no bias
    D.b8.register_buffer("scratch", torch.ones(3), persistent=False)  # not in state_dict
    pipe = networks.AugmentPipe(xflip=1, rotate90=1)
    pipe.register_buffer("p", torch.tensor(0.25))
    training_set_kwargs = dict(E(class_name="training.dataset.ImageFolderDataset", path="~/datasets/ffhq32.zip",
                                 use_labels=False, max_size=70000, xflip=False, resolution=32))
    return dict(training_set_kwargs=training_set_kwargs, G=G, D=D, G_ema=G_ema, augment_pipe=pipe, **extra)


class System:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["ACNEOPS_OS_MARKER"],))


def dump(name, obj):
    with open(os.path.join(out, name), "wb") as fh:
        pickle.dump(obj, fh)


dump("ffhq32.pkl", snapshot())
dump("conditional.pkl", snapshot(c_dim=4))
dump("os_system.pkl", snapshot(payload=System()))  # after the networks: allowed functions come first in the file
dump("foreign_class.pkl", snapshot(extra=networks.Plain()))
dump("tensorflow.pkl", (Network(), Network(), Network()))
persistence.MODULE_SRC_OVERRIDE = ("open(__import__('os').environ['ACNEOPS_EXEC_MARKER'], 'w')"
                                   ".write('module_src was executed')\\n")
dump("exec_src.pkl", snapshot())
'''


def build_pickles(npz: Path, root: Path, env: dict[str, str]) -> Path:
    """Write the stand-in NVIDIA code under ``root`` / 'nvidia' and the pickles under ``root`` / 'pickles'."""
    code, out = root / "nvidia", root / "pickles"
    files = {"torch_utils/__init__.py": "", "torch_utils/persistence.py": PERSISTENCE,
             "dnnlib/__init__.py": "from dnnlib.util import EasyDict\n", "dnnlib/util.py": EASYDICT,
             "dnnlib/tflib/__init__.py": "", "dnnlib/tflib/network.py": TFLIB,
             "training/__init__.py": "", "training/networks.py": NETWORKS, "build.py": BUILDER}
    for rel, text in files.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(text)
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(code / "build.py"), str(npz), str(out)], cwd=code,
                          env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
