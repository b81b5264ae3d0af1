"""Read NVIDIA's StyleGAN2 network pickles (stylegan2-ada-pytorch, stylegan3) as data, without NVIDIA's code and
without executing anything the file names.

How NVIDIA writes them (``torch_utils/persistence.py`` and ``training/training_loop.py`` of both repositories,
read for this reader): a snapshot is ``pickle.dump`` of a dict ``{'G', 'D', 'G_ema', 'augment_pipe',
'training_set_kwargs'}``. Every network class is a *persistent class* whose ``__reduce__`` returns
``(torch_utils.persistence._reconstruct_persistent_obj, (meta,))`` with ``meta = {'type': 'class', 'version': 6,
'module_src': <source text of the module that defined the class>, 'class_name': ..., 'state': <the module's
__dict__: _parameters, _buffers, _modules, _init_kwargs, ...>}``; submodules are persistent objects too, tensors
are pickled by torch's own reducers (``torch._utils._rebuild_tensor_v2`` over a storage that reduces to
``torch.storage._load_from_bytes(<torch.save bytes>)``), attributes such as ``weight_gain`` are numpy scalars and
NVIDIA's ``dnnlib.EasyDict`` holds the init kwargs. NVIDIA's loader ``exec``s ``module_src``: whoever wrote the
file runs any code they like on the reader's machine. Here:

- ``find_class`` allows only the globals listed in :func:`_allowed` and maps ``_reconstruct_persistent_obj`` to a
  function that keeps ``meta`` as data (:class:`PersistentObject`; ``module_src`` is never executed or imported);
  any other global (``os.system``, ``builtins.eval``, a class of NVIDIA's or anyone's code) is an AcneopsError
  naming it;
- a first pass reads the whole file with inert stand-ins for the allowed globals, so a refused global is found
  before any function of the file is called at all;
- storages are read with ``torch.load(weights_only=True)`` (torch's own restricted unpickler), never torch's
  ``_load_from_bytes`` (which unpickles without restriction).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib
import io
import pickle
from pathlib import Path
from typing import Any, Callable

from acneops.core.errors import AcneopsError

PERSISTENCE_VERSIONS = (6,)  # torch_utils.persistence._version of stylegan2-ada-pytorch and stylegan3
OFFICIAL_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"


class PersistentObject:
    """One persistent object of an NVIDIA pickle as data: its class name and its module's ``__dict__``.

    ``module_src`` (the source NVIDIA's loader would exec) is kept only to be hashed and recorded.
    """

    __slots__ = ("class_name", "version", "module_src", "state")

    def __init__(self, class_name: str, version: int, module_src: str, state: dict[str, Any]) -> None:
        self.class_name, self.version, self.module_src, self.state = class_name, version, module_src, state

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class _EasyDict(dict):
    """Stand-in for NVIDIA's ``dnnlib.EasyDict`` (a dict with attribute access): a plain dict that takes BUILD."""


class _Inert:
    """Stands in for every allowed global during the scan pass: takes any arguments, state and items, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass


def _persistent(meta: Any) -> PersistentObject:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` becomes here: the record, no code."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise AcneopsError(f"persistent object record of type {type(meta).__name__} "
                           f"({meta.get('type') if isinstance(meta, dict) else ''!r}): expected NVIDIA's "
                           "{'type': 'class', ...} record; not a stylegan2-ada-pytorch / stylegan3 network pickle")
    version = meta.get("version")
    if version not in PERSISTENCE_VERSIONS:
        raise AcneopsError(f"persistent object of NVIDIA persistence version {version!r}; this reader knows "
                           f"versions {list(PERSISTENCE_VERSIONS)} (stylegan2-ada-pytorch, stylegan3)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise AcneopsError(f"persistent object {meta.get('class_name')!r} has no state dict")
    return PersistentObject(str(meta.get("class_name")), int(version), str(meta.get("module_src") or ""),
                            dict(state))


def _load_storage(data: bytes) -> Any:
    """A tensor storage from the ``torch.save`` bytes NVIDIA's pickle holds, through torch's weights-only loader."""
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AcneopsError(f"a tensor storage in the pickle is not readable by torch's weights-only loader "
                           f"({type(exc).__name__}: {exc})") from exc


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    """``torch._utils._rebuild_parameter(_with_state)``: the parameter's data as a plain tensor (hooks and
    attributes dropped: only values are imported)."""
    return data


def _rebuild_from_type(func: Callable[..., Any], new_type: Any, args: tuple, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` for plain tensors and parameters only (their values)."""
    import torch

    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise AcneopsError(f"a tensor of subclass {new_type!r} in the pickle; only plain tensors are imported")
    return func(*args)


def _allowed() -> dict[tuple[str, str], Any]:
    """Every global an NVIDIA network pickle may name, mapped to what it becomes here."""
    import numpy as np
    import torch

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Tensor"): torch.Tensor,
        ("torch._tensor", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


def _refusal(path: Path, module: str, name: str) -> AcneopsError:
    if (module, name) == ("dnnlib.tflib.network", "Network"):
        return AcneopsError(
            f"{path}: a TensorFlow StyleGAN2 pickle (it names {module}.{name}); this importer reads the PyTorch "
            f"pickles of stylegan2-ada-pytorch / stylegan3. Download the PyTorch release of the network (FFHQ "
            f"1024: {OFFICIAL_URL}). Nothing from the file was executed.")
    return AcneopsError(
        f"{path}: refused global {module}.{name}: an NVIDIA network pickle holds only tensors, OrderedDicts, numpy "
        f"scalars and NVIDIA's persistent-class records, and a pickle naming {module}.{name} could run code when "
        f"loaded. Nothing from the file was executed. Use an official NVIDIA pickle (e.g. {OFFICIAL_URL}) or a "
        "snapshot of your own stylegan2-ada-pytorch / stylegan3 training run.")


class _Unpickler(pickle.Unpickler):
    """find_class from an allow-list; with ``inert`` every allowed global is the inert stand-in (scan pass)."""

    def __init__(self, fh: Any, path: Path, allowed: dict[tuple[str, str], Any], inert: bool) -> None:
        super().__init__(fh)
        self.path, self.allowed, self.inert = path, allowed, inert

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise _refusal(self.path, module, name)
        return _Inert if self.inert else self.allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise AcneopsError(f"{self.path}: the pickle holds a persistent id {str(pid)[:80]!r} (a torch.save "
                           "archive?); expected a network pickle written by NVIDIA's training loop")


def load_network_pickle(path: str | Path) -> Any:
    """The unpickled contents of an NVIDIA network pickle, every persistent object as a :class:`PersistentObject`.

    A refused global, or a file that is not a pickle, is an AcneopsError naming the file (and the global).
    """
    path = Path(path)
    if not path.is_file():
        raise AcneopsError(f"{path}: NVIDIA network pickle not found; download one (FFHQ 1024: {OFFICIAL_URL})")
    allowed = _allowed()
    try:
        for inert in (True, False):  # scan pass first: no function of the file runs before every global passed
            with open(path, "rb") as fh:
                data = _Unpickler(fh, path, allowed, inert).load()
    except AcneopsError as exc:
        raise exc if str(exc).startswith(str(path)) else AcneopsError(f"{path}: {exc}") from exc
    except Exception as exc:  # truncated, not a pickle, a torch zip archive, ...
        raise AcneopsError(f"{path}: not a readable NVIDIA network pickle ({type(exc).__name__}: {exc}); the file "
                           f"is damaged or of another kind: download it again (FFHQ 1024: {OFFICIAL_URL})") from exc
    return data


def module_state(obj: PersistentObject, prefix: str = "") -> dict[str, Any]:
    """``state_dict()`` of a persistent torch module as NVIDIA's code would give it: parameters and persistent
    buffers of the whole ``_modules`` tree under their dotted names (None entries skipped, as torch does)."""
    import torch

    state = obj.state
    if not isinstance(state.get("_parameters"), dict) or not isinstance(state.get("_modules"), dict):
        raise AcneopsError(f"{prefix or 'network'} ({obj.class_name}) is not a torch module's state "
                           "(no _parameters / _modules)")
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, Any] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise AcneopsError(f"{prefix}{name} of {obj.class_name} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value
    for name, child in state["_modules"].items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise AcneopsError(f"submodule {prefix}{name} of {obj.class_name} is a {type(child).__name__}, not a "
                               "persistent NVIDIA module")
        out.update(module_state(child, f"{prefix}{name}."))
    return out


def plain(value: Any) -> Any:
    """JSON-like copy of init kwargs and training settings (EasyDicts -> dicts, numpy scalars -> numbers,
    tuples -> lists; anything else -> its repr), safe for a weights-only checkpoint."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@dataclasses.dataclass(frozen=True)
class NetworkPickle:
    """The networks of one NVIDIA snapshot pickle, as data."""

    path: Path
    nets: dict[str, PersistentObject]  # 'G', 'D', 'G_ema' (those present)
    training_set_kwargs: dict[str, Any] | None  # NVIDIA's dataset settings of the run, plain
    augment_p: float | None  # ADA's p at the snapshot (augment_pipe.p), None without an augment pipe

    def init_kwargs(self, net: str) -> dict[str, Any]:
        """The constructor kwargs NVIDIA recorded for ``net`` (plain), {} when absent."""
        return plain(self.nets[net].state.get("_init_kwargs") or {})

    def module_src_sha256(self, net: str) -> str:
        return hashlib.sha256(self.nets[net].module_src.encode("utf-8")).hexdigest()


def read_network_pickle(path: str | Path) -> NetworkPickle:
    """:func:`load_network_pickle` checked to be an NVIDIA snapshot: a dict with persistent networks G_ema and D
    (G optional)."""
    path = Path(path)
    data = load_network_pickle(path)
    if not isinstance(data, dict):
        raise AcneopsError(f"{path}: the pickle holds a {type(data).__name__}; an NVIDIA snapshot is a dict with "
                           "G, D, G_ema, augment_pipe, training_set_kwargs")
    missing = [k for k in ("G_ema", "D") if not isinstance(data.get(k), PersistentObject)]
    if missing:
        raise AcneopsError(f"{path}: no network {missing} in the pickle (keys {sorted(map(str, data))}); an "
                           "NVIDIA snapshot holds G, D and G_ema")
    nets = {k: data[k] for k in ("G", "D", "G_ema") if isinstance(data.get(k), PersistentObject)}
    augment_p = None
    pipe = data.get("augment_pipe")
    if isinstance(pipe, PersistentObject):
        p = (pipe.state.get("_buffers") or {}).get("p")
        augment_p = float(p) if p is not None and getattr(p, "numel", lambda: 0)() == 1 else None
    kwargs = data.get("training_set_kwargs")
    return NetworkPickle(path, nets, plain(kwargs) if isinstance(kwargs, dict) else None, augment_p)
