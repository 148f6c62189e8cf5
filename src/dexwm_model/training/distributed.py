"""Process groups for multi-GPU / multi-process training (torchrun or a local launch; NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, False)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank, world, local_rank, dev, True)


def teardown(info: DistInfo) -> None:
    """Leave the process group this process created; every rank first waits for the others (a rank that tears its
    connections down while another still uses them can abort that one)."""
    if info.initialised_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    fn(*args)
    # Done: leave without the interpreter's exit-time teardown. Destroying gloo's and the TCP store's C++ objects
    # there can hit a still-joinable std::thread ("terminate called without an active exception", SIGABRT) and
    # fail a run that finished. An exception above still goes through torch's spawn error reporting.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch_local(nproc: int, fn: Callable, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this machine as one process group (what torchrun does for
    one node). ``fn`` must be importable (a module-level function)."""
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, found {nproc}")
    mp.spawn(_local_worker, args=(nproc, free_port(), fn, args), nprocs=nproc, join=True)


def parameter_digest(module: torch.nn.Module) -> str:
    """Hex digest of every parameter's bytes (to check that processes hold identical weights)."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in sorted(module.named_parameters()):
        t = p.detach().to("cpu").contiguous()
        h.update(name.encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out
