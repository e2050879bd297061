"""Dropout whose mask costs about n*p random numbers instead of n, for training on CPU.

On CPU, PyTorch draws one random number per element for every dropout mask (`bernoulli_`); profiling
roberta-base training with the study's recipe here, dropout masks were about a third of each step.
`geometric_dropout` draws the same distribution, each element dropped independently with probability p,
from the gaps between dropped elements instead: those gaps are independent Geometric(p) variables, so a
mask costs about n*p random numbers (100x fewer for LoRA's p = 0.01), and the kept values are scaled by
1/(1-p) as usual. The backward pass zeroes the same positions. On CUDA the fused kernels are faster.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dropped_positions(n: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sorted flat indices in [0, n), each included independently with probability p.

    Cumulative sums of Geometric(p) gaps are the positions of a Bernoulli(p)
    process. Draws are in float64, so positions are exact integers up to 2**53.
    """
    if n == 0 or p <= 0:
        return torch.empty(0, dtype=torch.long, device=device)
    # Enough gaps to pass n in all but about one draw in a billion; the loop covers the rest.
    chunk = int(n * p + 6 * math.sqrt(n * p) + 16)
    parts, reached = [], 0.0
    while reached < n:
        positions = torch.empty(chunk, dtype=torch.float64, device=device).geometric_(p).cumsum_(0).add_(reached)
        parts.append(positions)
        reached = float(positions[-1])
    flat = (torch.cat(parts) if len(parts) > 1 else parts[0]).long().sub_(1)
    return flat[: int(torch.searchsorted(flat, n))]


class _GeometricDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        positions = dropped_positions(x.numel(), p, x.device)
        ctx.save_for_backward(positions)
        ctx.scale = 1.0 / (1.0 - p)
        return _scale_and_zero(x, ctx.scale, positions)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (positions,) = ctx.saved_tensors
        return _scale_and_zero(grad, ctx.scale, positions), None


def _scale_and_zero(x: torch.Tensor, scale: float, positions: torch.Tensor) -> torch.Tensor:
    out = x.mul(scale).contiguous()
    out.view(-1).index_fill_(0, positions, 0)
    return out


def geometric_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Same contract as `torch.nn.functional.dropout`."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0
    return _GeometricDropout.apply(x, p)


class FastDropout(nn.Module):
    """Drop-in for `nn.Dropout` that uses `geometric_dropout`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return geometric_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` (LoRA's included) for `FastDropout`; return how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                swapped += 1
    return swapped
