"""Training progress on stderr: a tqdm bar on a terminal, plain lines everywhere else.

A redirected stderr (a log file, a batch job) gets one line per logged step
instead of a carriage-return update per step. The ETA counts training time
only: the validation passes between steps do not slow the rate it is made from.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from tqdm.auto import tqdm


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(self, total: int, initial: int, enabled: bool, log: Callable[[str], None], stream=None):
        self.total, self.enabled, self.log = total, enabled, log
        self.stream = stream or sys.stderr
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=self.stream,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{postfix}]")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def record(self, record: dict[str, Any]) -> None:
        """Show a train record of metrics.jsonl: loss, throughput, and the ETA at the training-only rate."""
        if not self.enabled:
            return
        step = record["step"]
        eta = (self.total - step) * record["elapsed_s"] / max(step, 1)
        text = f"loss {record['loss']:.4f}, {record['samples_per_s']:.1f} samples/s, ETA {duration(eta)}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
        else:
            print(f"step {step}/{self.total} ({100 * step / self.total:.0f}%): {text}", file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A line that must not be broken by the bar (e.g. a validation result)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.log(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
