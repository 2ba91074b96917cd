"""The optimiser step and the learning-rate schedule, the same in fast and full mode."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def apply_step(
    loss: torch.Tensor,
    optim: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[torch.nn.Parameter],
    grad_clip: float | None,
) -> None:
    """Backpropagate ``loss``, clip the gradients' norm at ``grad_clip`` (None: no clipping),
    step the optimiser and its learning-rate schedule."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optim.step()
    sched.step()


def warmup_schedule(
    optim: torch.optim.Optimizer, warmup: int, decay_until: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate up linearly over ``warmup`` steps, then constant (``decay_until``
    None: fast mode) or down linearly to zero at step ``decay_until`` (full mode; the schedule
    of transformers' ``get_linear_schedule_with_warmup``)."""
    warmup = max(warmup, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if decay_until is None:
            return 1.0
        return max(0.0, (decay_until - step) / max(decay_until - warmup, 1))

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)
