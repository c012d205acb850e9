"""torch.distributed for the runner: process-group setup from torchrun's environment, sharding, reductions.

``torchrun --nproc_per_node=N -m experiments.train <experiment> [key=value ...]`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_distributed` reads them and
joins the group with NCCL when the process has a GPU and gloo otherwise (so the same command runs DDP on CPU).
Without those variables everything here is a no-op for a single process (``world_size == 1``).

Conventions (DESIGN.md §5, infrastructure.md §9 item 9): the batch size in the config is the *global* batch, each
rank takes an equal share of every batch; the epoch's order is a pure function of (seed, epoch) and the same on
every rank (what ``DistributedSampler(seed=...)`` + ``set_epoch`` do); metrics are reduced across ranks before
logging; only rank 0 writes files or talks to wandb.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "all_gather_objects",
    "all_reduce_max",
    "all_reduce_mean",
    "all_reduce_sums",
    "barrier",
    "broadcast_object",
    "destroy_distributed",
    "init_distributed",
    "shard_batch",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its global rank, the world size and its rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


SINGLE = DistEnv()


def init_distributed(*, device_preference: str = "auto", timeout_s: int = 1800) -> DistEnv:
    """Join the process group described by torchrun's environment variables (no-op without them).

    NCCL when CUDA is available and ``device_preference`` is not ``cpu``, else gloo. On GPU each rank is pinned to
    ``cuda:<LOCAL_RANK>`` before the group starts (NCCL needs it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_preference != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def destroy_distributed(env: DistEnv) -> None:
    if env.enabled:
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def _device(env: DistEnv) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sums(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Sum each value over the ranks (every rank must pass the same keys in the same order)."""
    if not env.enabled or not values:
        return dict(values)
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_device(env))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average each value over the ranks."""
    sums = all_reduce_sums(values, env)
    return {k: v / env.world_size for k, v in sums.items()} if env.enabled else sums


def all_reduce_max(value: int, env: DistEnv) -> int:
    """The largest ``value`` over the ranks (used to agree on stopping after a signal)."""
    if not env.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_device(env))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable object)."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_batch(idx: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's share of one global batch of indices: every ``world_size``-th element from ``rank``."""
    if env.world_size == 1:
        return idx
    return idx[env.rank :: env.world_size]
