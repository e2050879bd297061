"""Progress on stderr, of training steps or of texts predicted: a tqdm bar on a terminal, plain lines elsewhere.

A redirected stderr (a log file, a batch job) gets one line per logged step (per shard of texts)
instead of a carriage-return update per step. The training ETA counts training time
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
    def __init__(self, total: int, initial: int, enabled: bool, log: Callable[[str], None], stream=None,
                 unit: str = "step"):
        self.total, self.enabled, self.log, self.unit = total, enabled, log, unit
        self.stream = stream or sys.stderr
        self.bar = None
        if enabled and self.stream.isatty():
            # Steps show the training record's own rate and ETA; texts, tqdm's.
            form = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{postfix}]" if unit == "step" else None
            self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=self.stream,
                            bar_format=form, unit_scale=unit != "step", smoothing=0.1)

    def advance(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def done(self, count: int, elapsed_s: float, since: int = 0) -> None:
        """`count` units of `total` done, `elapsed_s` seconds after `since` of them were (a resumed job's rate
        counts its own work): the bar moves to it, or one plain line says it with the rate and the ETA."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(count - self.bar.n)
            return
        rate = (count - since) / max(elapsed_s, 1e-9)
        eta = (self.total - count) / max(rate, 1e-9)
        print(f"{count:,}/{self.total:,} {self.unit}s ({100 * count / max(self.total, 1):.0f}%), "
              f"{rate:,.0f} {self.unit}s/s, ETA {duration(eta)}", file=self.stream, flush=True)

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
