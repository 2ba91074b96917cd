"""The optimiser step and the learning-rate schedule, the same in fast and full mode.

Above ``sample_above`` items a fast-mode step touches only its batch's rows of the id
embedding table: the table then gives sparse gradients, and :class:`LazyAdamW` updates those
rows alone (as TensorFlow Addons' ``LazyAdam`` and torch's ``SparseAdam`` do), where AdamW
would step every row of a million-row table at every step. :func:`clip_gradients` clips dense
and sparse gradients by their joint norm (torch's ``clip_grad_norm_`` refuses sparse ones).
"""

from __future__ import annotations

import math
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
        clip_gradients(params, grad_clip)
    optim.step()
    sched.step()


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Scale the gradients of ``params`` so that their joint L2 norm is at most ``max_norm``
    (as ``torch.nn.utils.clip_grad_norm_``, sparse gradients included: coalesced first, so a
    row touched twice counts once, summed); the norm before clipping."""
    with_grad = [p for p in params if p.grad is not None]
    dense = [p.grad for p in with_grad if not p.grad.is_sparse]
    if len(dense) == len(with_grad):  # the common case: torch's own
        return float(torch.nn.utils.clip_grad_norm_(with_grad, max_norm))
    squares = [g.detach().float().pow(2).sum() for g in dense]
    for p in with_grad:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            squares.append(p.grad._values().detach().float().pow(2).sum())
    total = float(torch.stack(squares).sum().sqrt())
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in with_grad:
            p.grad.mul_(scale)
    return total


class LazyAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments: the formula of
    ``torch.optim.AdamW``) that, for a parameter with a sparse gradient, updates only the rows
    the gradient touches: their moments, their weight decay and their step. Rows a step does
    not touch keep their moments as they were (lazy), so on a sparse parameter it is not the
    same optimiser as AdamW; on dense parameters it is.

    Args:
        params / lr / betas / eps / weight_decay: as ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]  # noqa: ANN001
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                step_size = lr / (1 - beta1**step)
                root = math.sqrt(1 - beta2**step)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()
                    rows, values = grad._indices()[0], grad._values()
                    weights = p[rows]
                    if decay:
                        weights.mul_(1 - lr * decay)
                    m_rows = m[rows].lerp_(values, 1 - beta1)
                    v_rows = v[rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                    m[rows], v[rows] = m_rows, v_rows
                    weights.addcdiv_(m_rows, (v_rows.sqrt() / root).add_(eps), value=-step_size)
                    p[rows] = weights
                    continue
                grad = p.grad
                if decay:
                    p.mul_(1 - lr * decay)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(m, (v.sqrt() / root).add_(eps), value=-step_size)
        return loss


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
