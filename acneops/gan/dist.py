"""Data-parallel training on several processes: `torchrun --nproc_per_node N -m acneops run train_gan ...`.

What it is, exactly: not torch's DistributedDataParallel (DDP), but data-parallel training written out by
hand with torch.distributed, as NVIDIA's stylegan3 training loop does. Each rank trains on its own slice of
every batch; after each training phase (Gmain, Greg, Dmain, Dreg) :func:`average_grads` replaces every
gradient by its mean over ranks with one ``all_reduce`` of the flattened gradients, and every rank then
steps its own optimizer on the same averaged gradients. The replicas start from rank 0's weights
(:func:`broadcast_module`) and receive rank 0's buffers after every step (DDP's ``broadcast_buffers``
behaviour), so they stay identical (tests/model/test_gan_ddp.py checks the hashes of both replicas).

Why not DDP: a StyleGAN2 step is four backward passes over two networks with two optimizers, and the
regularisation phases are lazy (path length every ``pl_interval`` steps, R1 every ``r1_interval``) and
differentiate through a gradient (``torch.autograd.grad(..., create_graph=True)`` then ``backward``).
DDP reduces gradients from hooks fired during ``backward`` on the parameters that required grad when it
was built, while this loop switches ``requires_grad`` per phase and runs G inside D's phases; DDP's
documentation supports only gradients that ``backward`` accumulates in ``.grad`` (not
``torch.autograd.grad``), and higher-order gradients are an open limitation (pytorch/pytorch#63929). NVIDIA's stylegan2-ada-pytorch did wrap the networks in DDP, and
needed a sync switch per phase and dummy ``* 0`` loss terms so every parameter's hook fired; stylegan3
replaced all that with this one all-reduce at the point where each phase's gradients are complete.

Backend: gloo on CPU, nccl on CUDA. Without ``WORLD_SIZE`` > 1 everything here is a no-op.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process sits in a (possibly single-process) training."""

    rank: int = 0  # global rank of this process
    world: int = 1  # number of processes
    device: torch.device = torch.device("cpu")  # this rank's device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """'cpu', 'cuda' or 'auto' (CUDA when available) -> this rank's device."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from acneops.core.errors import AcneopsError

            raise AcneopsError("train_gan.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(preference: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (or stay single-process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, device=device)


def shutdown(dist: Dist) -> None:
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        torch.distributed.barrier()


def broadcast_module(module: nn.Module, dist: Dist, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers into every rank's ``module``."""
    if not dist.active:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        for tensor in tensors:
            torch.distributed.broadcast(tensor.data, src=0)


def average_grads(params: list[nn.Parameter], dist: Dist) -> None:
    """Replace each parameter's gradient by its mean over ranks (one all-reduce of the flat gradients).

    A parameter without a gradient on this rank contributes zeros, so every rank all-reduces a tensor of
    the same length (NVIDIA's loop drops such parameters, which assumes every rank has the same ones).
    """
    if not dist.active or not params:
        return
    flat = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros_like(p).flatten() for p in params])
    torch.distributed.all_reduce(flat)
    flat /= dist.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p)
        offset += n


def mean_across_ranks(dist: Dist):
    """A function averaging a (detached) tensor over ranks, or None when single-process."""
    if not dist.active:
        return None

    def mean(value: Tensor) -> Tensor:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        return value / dist.world

    return mean


def gather_strings(value: str, dist: Dist) -> list[str]:
    """Every rank's ``value``, in rank order (used to check the replicas stay identical)."""
    if not dist.active:
        return [value]
    values: list[str | None] = [None] * dist.world
    torch.distributed.all_gather_object(values, value)
    return [str(v) for v in values]
