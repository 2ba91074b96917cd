"""Training losses for two-tower recommenders: one class per loss, all with one signature.

``loss(users, targets, items)`` where ``users`` is ``[P, d]`` (one user state per training
position), ``targets`` is ``[P]`` (the item index each position must predict) and ``items`` is
``[n_items, d]`` (every item's current vector). Scores are inner products ``users @ items.T``.

The sampling losses also take the negatives drawn beforehand (``draw``) and the items' catalogue
indices (``ids``): then ``items`` holds only the vectors of the batch's items (its inputs,
targets and negatives), ``targets`` and ``negatives`` index into it, and a training step costs
in proportion to the batch, not to the catalogue (``Trainer`` does so above
``TrainConfig.sample_above`` items).

Relations: :class:`SampledBCELoss` is the baseline formulation (binary cross-entropy on
``sigmoid(user . item)`` against uniformly sampled negatives, as in SASRec); the softmax losses
(:class:`FullSoftmaxLoss`, :class:`SampledSoftmaxLoss`) are InfoNCE with a temperature, and
usually rank better (Petrov & Macdonald, "gSASRec", RecSys 2023; Klenitskiy & Vasilev,
"Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: logits computed at once by :func:`logsumexp_scores` (8 MB of float32): a block small
#: enough to stay in the processor's cache while it is offset, exponentiated and summed
BLOCK_CELLS = 2**21


class _BlockedLogSumExp(torch.autograd.Function):
    """``logsumexp(users @ items.T + bias)`` row by row, a block of rows at a time, with the
    excluded cells at minus infinity: forward keeps only the ``[P]`` result, backward computes
    each block's logits again (one more matrix product) and turns them into the softmax
    weights in place. The ``[P, M]`` logits, and the five or six tensors of that size autograd
    keeps through the offset, mask, concatenation and cross-entropy, are never stored: on two
    CPU cores at P = 7,000 and M = 8,192 the loss and its gradients take 0.5-0.8 s against 1.6-2.2 s
    (``benchmarks/losses.py``). Computed in float32 (or float64) whatever the autocast."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        users: torch.Tensor,
        items: torch.Tensor,
        bias: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        with torch.autocast(users.device.type, enabled=False):
            u, v, b = _at_least_float32(users, items, bias)
            out = u.new_empty(len(u))
            for start, end, block in _blocks(u, v, b, rows, cols):
                out[start:end] = torch.logsumexp(block, dim=1)
        ctx.save_for_backward(users, items, bias, rows, cols, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        users, items, bias, rows, cols, out = ctx.saved_tensors
        with torch.autocast(users.device.type, enabled=False):
            u, v, b = _at_least_float32(users, items, bias)
            # a row with every cell excluded has no softmax (its weights are all zero)
            lse = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
            grad = grad.to(u.dtype)
            g_users = torch.empty_like(u)
            g_items = torch.zeros_like(v)
            g_bias = torch.zeros_like(b)
            for start, end, block in _blocks(u, v, b, rows, cols):
                # d lse / d logit = softmax weight, times the incoming gradient of each row
                weights = block.sub_(lse[start:end, None]).exp_().mul_(grad[start:end, None])
                g_users[start:end] = weights @ v
                if ctx.needs_input_grad[1]:
                    g_items.addmm_(weights.T, u[start:end])
                if ctx.needs_input_grad[2]:
                    g_bias += weights.sum(0)
        return (
            g_users.to(users.dtype) if ctx.needs_input_grad[0] else None,
            g_items.to(items.dtype) if ctx.needs_input_grad[1] else None,
            g_bias.to(bias.dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


def _at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float32 (float64 stays: the gradient checks run in it)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def _blocks(
    users: torch.Tensor,
    items: torch.Tensor,
    bias: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, end, logits of rows start:end)``, excluded cells at minus infinity."""
    step = max(1, BLOCK_CELLS // max(len(items), 1))
    columns = items.T.contiguous()  # a product with a contiguous right side is 15% faster
    for start in range(0, len(users), step):
        end = min(len(users), start + step)
        block = torch.addmm(bias[None, :], users[start:end], columns)
        if len(rows):
            here = (rows >= start) & (rows < end)
            block[rows[here] - start, cols[here]] = float("-inf")
        yield start, end, block


def equal_pairs(
    targets: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)`` where ``negatives[column] == targets[row]``, found by a binary search
    of each target in the sorted negatives (not by comparing all ``[P, N]`` pairs)."""
    order = torch.argsort(negatives)
    ordered = negatives[order]
    first = torch.searchsorted(ordered, targets)
    counts = torch.searchsorted(ordered, targets, right=True) - first
    rows = torch.repeat_interleave(torch.arange(len(targets), device=targets.device), counts)
    # the k-th match of a row is at first[row] + k in the sorted order
    offsets = torch.arange(len(rows), device=targets.device)
    offsets = offsets - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return rows, order[first[rows] + offsets]


def logsumexp_scores(
    users: torch.Tensor,
    items: torch.Tensor,
    bias: torch.Tensor | None = None,
    exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``logsumexp(users @ items.T + bias, dim=1)`` (``[P]``), the cells ``exclude`` names
    (``(rows, columns)``) left out, without the ``[P, M]`` logits ever stored: the softmax
    denominators of the losses below, with gradients for ``users``, ``items`` and ``bias``."""
    if bias is None:
        bias = items.new_zeros(len(items))
    if exclude is None:
        none = torch.zeros(0, dtype=torch.long, device=users.device)
        exclude = (none, none)
    return _BlockedLogSumExp.apply(users, items, bias, *exclude)


class _SampledNegativesLoss(nn.Module):
    """A loss against sampled negatives: drawn by :meth:`draw` at each call, or given (with the
    items' catalogue indices ``ids`` when ``items`` holds only the batch's items)."""

    def draw(self, n_positions: int, n_items: int, device: torch.device | str) -> torch.Tensor:
        """Negatives for ``n_positions`` positions (catalogue indices)."""
        raise NotImplementedError

    def _given(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        items: torch.Tensor,
        negatives: torch.Tensor,
        ids: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        items: torch.Tensor,
        negatives: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if negatives is None:
            negatives = self.draw(users.shape[0], items.shape[0], users.device)
        return self._given(users, targets, items, negatives, ids)


class SampledBCELoss(_SampledNegativesLoss):
    """Binary cross-entropy on ``sigmoid(u . v)``: the positive against sampled negatives.

    Args:
        num_negatives: uniformly sampled negatives per position (resampled every call).
        generator: a ``torch.Generator`` for reproducible sampling.

    Example::

        loss = SampledBCELoss(num_negatives=1)
        value = loss(users, targets, items)
    """

    def __init__(self, num_negatives: int = 1, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.num_negatives = num_negatives
        self.generator = generator

    def draw(self, n_positions: int, n_items: int, device: torch.device | str) -> torch.Tensor:
        """Uniform negatives ``[n_positions, num_negatives]`` (catalogue indices)."""
        return torch.randint(
            0, n_items, (n_positions, self.num_negatives), generator=self.generator, device=device
        )

    def _given(self, users, targets, items, negatives, ids):  # type: ignore[no-untyped-def]
        return self.bce(users, targets, items, negatives)

    @staticmethod
    def bce(
        users: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """The loss for given negatives ``[P, N]`` (a negative equal to the target is ignored)."""
        pos = (users * items[targets]).sum(-1)  # [P]
        negs = torch.einsum("pd,pnd->pn", users, items[negatives])  # [P, N]
        valid = (negatives != targets[:, None]).float()
        pos_loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        neg_loss = F.binary_cross_entropy_with_logits(
            negs, torch.zeros_like(negs), reduction="none"
        )
        return pos_loss + (neg_loss * valid).sum() / valid.sum().clamp_min(1.0)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "bce", "num_negatives": self.num_negatives}


class FullSoftmaxLoss(nn.Module):
    """Cross-entropy over the whole catalogue: ``softmax(u . v / temperature)``.

    Exact, and affordable up to ~100k items because only real (non-padding) positions are
    scored. Args: ``temperature``.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        items: torch.Tensor,
        negatives: None = None,
        ids: None = None,
    ) -> torch.Tensor:
        users = users / self.temperature
        positive = (users * items[targets]).sum(-1)
        return (logsumexp_scores(users, items) - positive).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "softmax", "temperature": self.temperature}


class SampledSoftmaxLoss(_SampledNegativesLoss):
    """InfoNCE against shared negatives sampled by popularity, with logQ correction.

    The ``num_negatives`` negatives are drawn once per call from ``q`` (item popularity to the
    power ``alpha``) and shared by all positions; every logit is corrected by ``-log q(item)``
    so that the sampled softmax estimates the full one (Yi et al., "Sampling-Bias-Corrected
    Neural Modeling for Large Corpus Item Recommendations", RecSys 2019). Negatives equal to
    a row's target are masked.

    Args:
        popularity: ``[n_items]`` interaction counts in the training log.
        num_negatives: shared negatives per call.
        temperature: softmax temperature.
        alpha: popularity exponent of the sampling distribution (0 = uniform).
        logq: apply the logQ correction.
    """

    def __init__(
        self,
        popularity: torch.Tensor,
        num_negatives: int = 1024,
        temperature: float = 1.0,
        alpha: float = 0.5,
        logq: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        q = (popularity.float() + 1.0) ** alpha
        self.register_buffer("q", q / q.sum())
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.alpha = alpha
        self.logq = logq
        self.generator = generator

    def draw(self, n_positions: int, n_items: int, device: torch.device | str) -> torch.Tensor:
        """The shared negatives ``[num_negatives]`` (catalogue indices, drawn where ``q`` is)."""
        return torch.multinomial(
            self.q, self.num_negatives, replacement=True, generator=self.generator
        )

    def _given(self, users, targets, items, negatives, ids):  # type: ignore[no-untyped-def]
        return self.sampled(users, targets, items, negatives, ids)

    def sampled(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        items: torch.Tensor,
        negatives: torch.Tensor,
        ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss for given shared negatives ``[N]`` (rows of ``items``, whose catalogue
        indices are ``ids``; None: ``items`` is the whole catalogue)."""
        users = users / self.temperature
        pos = (users * items[targets]).sum(-1)  # [P]
        bias = None
        if self.logq:
            logq = torch.log(self.q if ids is None else self.q[ids])
            pos = pos - logq[targets]
            bias = -logq[negatives]
        # the softmax over the positive and the negatives, a negative equal to its row's
        # target left out: -pos + log(exp(pos) + sum(exp(negatives)))
        negative = logsumexp_scores(users, items[negatives], bias, equal_pairs(targets, negatives))
        return (torch.logaddexp(pos, negative) - pos).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": "sampled-softmax",
            "num_negatives": self.num_negatives,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "logq": self.logq,
        }


LOSSES = ("softmax", "sampled-softmax", "bce")
