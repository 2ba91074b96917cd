"""The optimiser of fast mode above ``sample_above`` items: sparse gradients of the id table,
clipped with the dense ones by their joint norm and stepped row by row (LazyAdamW), against
torch's own AdamW and clip_grad_norm_."""

from __future__ import annotations

import torch

from promptrec.train.optim import LazyAdamW, clip_gradients


def _tables(sparse: bool) -> tuple[torch.nn.Embedding, torch.nn.Linear]:
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 4, sparse=sparse)
    head = torch.nn.Linear(4, 1)
    return table, head


def _loss(table: torch.nn.Embedding, head: torch.nn.Linear, rows: list[int]) -> torch.Tensor:
    return head(table(torch.tensor(rows))).pow(2).sum()


def test_on_dense_parameters_it_is_adamw() -> None:
    torch.manual_seed(1)
    a, b = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    ours = LazyAdamW(a.parameters(), lr=0.01, weight_decay=0.1)
    theirs = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step))
        for model, optim in ((a, ours), (b, theirs)):
            optim.zero_grad()
            model(x).pow(2).sum().backward()
            optim.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_sparse_rows_step_alone_and_first_step_equals_adamw() -> None:
    sparse, head_s = _tables(sparse=True)
    dense, head_d = _tables(sparse=False)
    ours = LazyAdamW([*sparse.parameters(), *head_s.parameters()], lr=0.05, weight_decay=0.0)
    theirs = torch.optim.AdamW([*dense.parameters(), *head_d.parameters()], lr=0.05, weight_decay=0)
    for table, head, optim in ((sparse, head_s, ours), (dense, head_d, theirs)):
        optim.zero_grad()
        _loss(table, head, [3, 7, 7, 9]).backward()  # row 7 twice: its gradients add up
        optim.step()
    # first step (moments start at zero): the same as AdamW on every row
    assert torch.allclose(sparse.weight, dense.weight, atol=1e-6)
    before = sparse.weight.detach().clone()
    ours.zero_grad()
    _loss(sparse, head_s, [1, 2]).backward()
    ours.step()
    moved = (sparse.weight != before).any(dim=1).nonzero().ravel().tolist()
    assert moved == [1, 2]  # rows 3, 7, 9 keep their place (AdamW's momentum would move them)


def test_clipping_counts_sparse_rows_once_summed() -> None:
    sparse, head_s = _tables(sparse=True)
    dense, head_d = _tables(sparse=False)
    for table, head in ((sparse, head_s), (dense, head_d)):
        _loss(table, head, [3, 7, 7, 9]).backward()
    theirs = float(torch.nn.utils.clip_grad_norm_([*dense.parameters(), *head_d.parameters()], 0.5))
    ours = clip_gradients([*sparse.parameters(), *head_s.parameters()], 0.5)
    assert abs(ours - theirs) < 1e-4 * theirs and theirs > 0.5  # it did clip
    assert torch.allclose(sparse.weight.grad.to_dense(), dense.weight.grad, atol=1e-6)
    assert torch.allclose(head_s.weight.grad, head_d.weight.grad, atol=1e-6)
