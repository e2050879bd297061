"""Run the loraclf CLI and SIGKILL it at an exact point, for the resume tests.

    python tests/kill_at.py after-step:21 train --config ...
    python tests/kill_at.py checkpoint-write:36 train --resume RUN_DIR

`after-step:N` kills the process right after optimizer step N (its scheduler
step); `checkpoint-write:N` kills it halfway through writing the step-N
checkpoint (the tensors written, the optimizer state and state.json not);
`after-shard:N` kills `loraclf predict` right after it wrote shard N (from 0).
The crash points live here, patched in from outside: the training loop has no test hooks.
"""

import os
import signal
import sys

import torch

from loraclf import cli
from loraclf.training import checkpoint


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    kind, step = sys.argv[1].split(":")
    step = int(step)
    if kind == "after-step":
        scheduler_step = torch.optim.lr_scheduler.LRScheduler.step

        def step_then_die(self, *args, **kwargs):
            scheduler_step(self, *args, **kwargs)
            if self.last_epoch == step:
                kill()

        torch.optim.lr_scheduler.LRScheduler.step = step_then_die
    elif kind == "checkpoint-write":
        save_tensors = checkpoint._save_tensors

        def save_or_die(tensors, path):
            if path.name == "optimizer.safetensors" and path.parent.name.startswith(f".step-{step:06d}."):
                kill()
            save_tensors(tensors, path)

        checkpoint._save_tensors = save_or_die
    elif kind == "after-shard":
        from loraclf.inference import corpus

        write_shard = corpus.write_shard

        def write_or_die(path, *args, **kwargs):
            write_shard(path, *args, **kwargs)
            if path.name == f"{step:06d}.part":
                kill()

        corpus.write_shard = write_or_die
    else:
        raise SystemExit(f"unknown crash point {kind!r}")
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
