"""The training losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from promptrec.train.losses import FullSoftmaxLoss, SampledBCELoss, SampledSoftmaxLoss

USERS = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
ITEMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
TARGETS = torch.tensor([0, 1])
# scores = USERS @ ITEMS.T = [[1, 0, 1], [0, 2, 2]]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_by_hand() -> None:
    negatives = torch.tensor([[2, 0], [0, 1]])  # a negative equal to the row's target is ignored
    value = SampledBCELoss.bce(USERS, TARGETS, ITEMS, negatives)
    pos = (softplus(-1) + softplus(-2)) / 2  # -log sigmoid(s) for s = 1, 2
    neg = (softplus(1) + softplus(0)) / 2  # -log(1 - sigmoid(s)): item 2 (row 0), item 0 (row 1)
    assert float(value) == pytest.approx(pos + neg, rel=1e-6)


def test_full_softmax_by_hand() -> None:
    value = FullSoftmaxLoss(temperature=0.5)(USERS, TARGETS, ITEMS)
    row0 = -2 + math.log(math.exp(2) + math.exp(0) + math.exp(2))
    row1 = -4 + math.log(math.exp(0) + math.exp(4) + math.exp(4))
    assert float(value) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_sampled_softmax_with_logq_by_hand() -> None:
    popularity = torch.tensor([3.0, 1.0, 0.0])  # q ∝ (count + 1) ** 1 = [4, 2, 1] / 7
    loss = SampledSoftmaxLoss(popularity, num_negatives=2, temperature=1.0, alpha=1.0)
    negatives = torch.tensor([2, 1])  # row 1: item 1 is its own target -> masked
    value = loss.sampled(USERS, TARGETS, ITEMS, negatives)
    logq = [math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)]
    # row 0: positive item 0 (score 1), negatives item 2 (score 1), item 1 (score 0)
    p0, n0 = 1 - logq[0], [1 - logq[2], 0 - logq[1]]
    row0 = -p0 + math.log(math.exp(p0) + sum(math.exp(x) for x in n0))
    # row 1: positive item 1 (score 2), negative item 2 (score 2); item 1 masked
    p1, n1 = 2 - logq[1], 2 - logq[2]
    row1 = -p1 + math.log(math.exp(p1) + math.exp(n1))
    assert float(value) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    uncorrected = SampledSoftmaxLoss(popularity, 2, alpha=1.0, logq=False)
    row0 = -1 + math.log(math.exp(1) + math.exp(1) + math.exp(0))
    row1 = -2 + math.log(math.exp(2) + math.exp(2))
    assert float(uncorrected.sampled(USERS, TARGETS, ITEMS, negatives)) == pytest.approx(
        (row0 + row1) / 2, rel=1e-5
    )


def test_losses_describe_themselves() -> None:
    assert SampledBCELoss(3).get_config_dict() == {"loss": "bce", "num_negatives": 3}
    assert FullSoftmaxLoss(0.1).get_config_dict()["temperature"] == 0.1


def test_sampled_softmax_over_the_batch_items_equals_the_catalogue_form() -> None:
    """Given the vectors of just the items a batch touches (and their catalogue indices), the
    loss is the one over the whole catalogue: what training at scale relies on."""
    popularity = torch.tensor([3.0, 1.0, 0.0, 7.0])
    items = torch.cat([ITEMS, torch.tensor([[2.0, -1.0]])])
    loss = SampledSoftmaxLoss(popularity, num_negatives=3, temperature=0.5, alpha=0.7)
    negatives = torch.tensor([3, 1, 3])
    whole = loss.sampled(USERS, TARGETS, items, negatives)
    ids = torch.tensor([0, 1, 3])  # item 2 is in no role of this batch
    local = {0: 0, 1: 1, 3: 2}
    batch = loss(
        USERS,
        torch.tensor([local[int(t)] for t in TARGETS]),
        items[ids],
        negatives=torch.tensor([local[int(n)] for n in negatives]),
        ids=ids,
    )
    assert float(batch) == pytest.approx(float(whole), rel=1e-6)
