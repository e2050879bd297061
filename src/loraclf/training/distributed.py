"""Data-parallel training across processes started by torchrun or `accelerate launch`.

Every process runs the same `loraclf train`: it reads and tokenizes the data,
draws the same batch order from (seed, epoch), and trains on its own slice of
each global batch. DDP averages the gradients, so one step is one step of the
global batch the config names. Rank 0 alone writes files and logs.

Launched plainly (no WORLD_SIZE in the environment), this is one process and
every collective below is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Processes:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: list[int]) -> tuple[list[int], float]:
        """This process's contiguous slice of a global batch, and the weight of its mean loss.

        DDP averages gradients over processes; weighting each local mean by
        local_n * world / global_n makes that average the gradient of the
        global batch's mean loss, also when the slices differ in size. A process
        left without items (a last batch smaller than the world) runs one item
        at weight 0, because every process must take part in the backward pass.
        """
        if self.world == 1:
            return indices, 1.0
        local = np.array_split(np.asarray(indices), self.world)[self.rank].tolist()
        if not local:
            return indices[:1], 0.0
        return local, len(local) * self.world / len(indices)

    def part(self, count: int) -> range:
        """This process's contiguous share of `count` items (validation and test prediction)."""
        bounds = np.linspace(0, count, self.world + 1).astype(int)
        return range(bounds[self.rank], bounds[self.rank + 1])

    def gather(self, obj: Any) -> list[Any]:
        """`obj` from every process, in rank order."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """All-reduce `tensor` in place (sum or max) and return it."""
        if self.world > 1:
            kind = torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX
            torch.distributed.all_reduce(tensor, op=kind)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model DDP-wrapped for the training forward pass (the model itself in one process)."""
        if self.world == 1:
            return model
        # No buffer broadcast: it is a collective in every forward pass, and processes run different numbers of
        # length chunks per step; the encoders' buffers (position ids) are constants.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def start(device: torch.device) -> tuple[Processes, torch.device]:
    """Join the process group the launcher set up (gloo on CPU, NCCL on CUDA); the device to train on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes(), device
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    return Processes(state.process_index, state.num_processes), state.device if device.type == "cuda" else device


def stop(processes: Processes) -> None:
    if processes.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
