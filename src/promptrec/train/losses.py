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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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
        logits = users @ items.T / self.temperature  # [P, n_items]
        return F.cross_entropy(logits, targets)

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
        pos = (users * items[targets]).sum(-1, keepdim=True) / self.temperature  # [P, 1]
        neg = users @ items[negatives].T / self.temperature  # [P, N]
        if self.logq:
            q = self.q if ids is None else self.q[ids]
            pos = pos - torch.log(q[targets])[:, None]
            neg = neg - torch.log(q[negatives])[None, :]
        neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(
            logits, torch.zeros(len(targets), dtype=torch.long, device=users.device)
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": "sampled-softmax",
            "num_negatives": self.num_negatives,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "logq": self.logq,
        }


LOSSES = ("softmax", "sampled-softmax", "bce")
