"""The training losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from promptrec.train import losses
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


def plain_logsumexp(users, items, bias, rows, cols):  # type: ignore[no-untyped-def]
    """The same denominators through autograd's own operations, every logit stored."""
    logits = users @ items.T + bias
    logits = logits.index_put((rows, cols), torch.tensor(float("-inf"), dtype=logits.dtype))
    return torch.logsumexp(logits, dim=1)


@pytest.mark.parametrize("block_cells", [7, 64, 2**21])
def test_blocked_logsumexp_matches_autograd(
    monkeypatch: pytest.MonkeyPatch, block_cells: int
) -> None:
    """Values and gradients (users, items, bias) equal the plain computation's, whatever the
    block (one row, several rows with a remainder, all rows at once), with excluded cells."""
    monkeypatch.setattr(losses, "BLOCK_CELLS", block_cells)
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(11, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    rows, cols = torch.tensor([0, 0, 5, 10]), torch.tensor([1, 4, 0, 5])
    weights = torch.randn(11, generator=gen, dtype=torch.float64)  # a non-uniform upstream

    def grads(fn):  # type: ignore[no-untyped-def]
        value = fn()
        (value * weights).sum().backward()
        out = [value.detach()] + [t.grad.clone() for t in (users, items, bias)]
        for t in (users, items, bias):
            t.grad = None
        return out

    blocked = grads(lambda: losses.logsumexp_scores(users, items, bias, (rows, cols)))
    plain = grads(lambda: plain_logsumexp(users, items, bias, rows, cols))
    for got, want in zip(blocked, plain, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(
        lambda u, i, b: losses.logsumexp_scores(u, i, b, (rows, cols)), (users, items, bias)
    )


def test_a_row_with_every_cell_excluded_has_no_gradient() -> None:
    users = torch.randn(2, 3, requires_grad=True)
    items = torch.randn(2, 3, requires_grad=True)
    rows, cols = torch.tensor([1, 1]), torch.tensor([0, 1])
    value = losses.logsumexp_scores(users, items, exclude=(rows, cols))
    assert float(value.detach()[1]) == float("-inf")
    value[0].backward()
    assert torch.isfinite(users.grad).all() and float(users.grad[1].abs().sum()) == 0.0
    assert torch.isfinite(items.grad).all()


def test_sampled_softmax_gradients_match_the_stored_logits_form() -> None:
    """The blocked loss is the cross-entropy over [positive, negatives] it replaced: same value
    and same gradients, with logQ, a temperature and a negative equal to its target."""
    gen = torch.Generator().manual_seed(1)
    popularity = torch.randint(0, 50, (30,), generator=gen)
    loss = SampledSoftmaxLoss(popularity, num_negatives=9, temperature=0.2)
    users = torch.randn(8, 5, generator=gen, requires_grad=True)
    items = torch.randn(30, 5, generator=gen, requires_grad=True)
    targets = torch.randint(0, 30, (8,), generator=gen)
    negatives = torch.cat([targets[:2], torch.randint(0, 30, (7,), generator=gen)])
    blocked = loss.sampled(users, targets, items, negatives)
    blocked.backward()
    got = (float(blocked), users.grad.clone(), items.grad.clone())
    users.grad = items.grad = None
    logq = torch.log(loss.q)
    pos = (users * items[targets]).sum(-1, keepdim=True) / 0.2 - logq[targets][:, None]
    neg = users @ items[negatives].T / 0.2 - logq[negatives][None, :]
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    stored = torch.nn.functional.cross_entropy(
        torch.cat([pos, neg], 1), torch.zeros(8, dtype=torch.long)
    )
    stored.backward()
    assert got[0] == pytest.approx(float(stored), rel=1e-5)
    torch.testing.assert_close(got[1], users.grad)
    torch.testing.assert_close(got[2], items.grad)


def test_equal_pairs_finds_every_repeated_negative() -> None:
    gen = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 12, (40,), generator=gen)
    negatives = torch.randint(0, 12, (25,), generator=gen)  # drawn with replacement: repeats
    rows, cols = losses.equal_pairs(targets, negatives)
    want = (negatives[None, :] == targets[:, None]).nonzero(as_tuple=True)
    got_pairs = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    assert got_pairs == sorted(zip(want[0].tolist(), want[1].tolist(), strict=True))
    assert len(got_pairs) > 0  # repeats were drawn: pairs to find
