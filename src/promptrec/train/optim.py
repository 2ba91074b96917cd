"""One optimiser step, the same in fast and full mode."""

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
