"""The softmax losses' cost per training step: the blocked form in ``promptrec.train.losses``
(the logits computed a block of rows at a time, never stored) against the form it replaced
(every logit stored, offset, masked, concatenated and passed to ``F.cross_entropy``), at the
shapes fast-mode training meets: a million-item shop's sampled softmax (7,000 positions
against 8,192 shared negatives) and amazon-beauty's full softmax (1,500 positions against
12,101 items), dimension 64.

Usage (give it the machine alone; about a minute, and 8 more with ``--steps``)::

    python benchmarks/losses.py --steps 100

Writes ``results/losses.json``: forward and backward seconds of each form (median of 5), and
the largest difference between their gradients; with ``--steps K``, the seconds of K real
fast-mode training steps on ``benchmarks/scale.py``'s synthetic shop of a million items and
5 million events with each form (the same batches, alternated twice in one process).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from promptrec.train.losses import FullSoftmaxLoss, SampledSoftmaxLoss

ROOT = Path(__file__).resolve().parents[1]


def stored_sampled(loss: SampledSoftmaxLoss, users, targets, items, negatives):  # type: ignore[no-untyped-def]
    """The sampled softmax as it was computed before (every logit stored)."""
    logq = torch.log(loss.q)
    pos = (users * items[targets]).sum(-1, keepdim=True) - logq[targets][:, None]
    neg = users @ items[negatives].T - logq[negatives][None, :]
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    zeros = torch.zeros(len(targets), dtype=torch.long)
    return F.cross_entropy(torch.cat([pos, neg], dim=1), zeros)


def stored_full(users, targets, items):  # type: ignore[no-untyped-def]
    """The full softmax as it was computed before (every logit stored)."""
    return F.cross_entropy(users @ items.T, targets)


def timed(fn, users, items, repeats: int = 5) -> dict:  # type: ignore[no-untyped-def]
    forward, backward = [], []
    for _ in range(repeats + 1):  # the first call warms up
        users.grad = items.grad = None
        started = time.perf_counter()
        value = fn()
        middle = time.perf_counter()
        value.backward()
        forward.append(middle - started)
        backward.append(time.perf_counter() - middle)
    return {
        "forward_s": round(statistics.median(forward[1:]), 3),
        "backward_s": round(statistics.median(backward[1:]), 3),
        "grads": (users.grad.clone(), items.grad.clone()),
    }


def compare(name: str, blocked, stored, users, items) -> dict:  # type: ignore[no-untyped-def]
    new, old = timed(blocked, users, items), timed(stored, users, items)
    pairs = zip(new.pop("grads"), old.pop("grads"), strict=True)
    gaps = [float((a - b).abs().max()) for a, b in pairs]
    row = {"blocked": new, "stored logits": old, "largest gradient difference": max(gaps)}
    total = {k: v["forward_s"] + v["backward_s"] for k, v in (("new", new), ("old", old))}
    row["speed-up"] = round(total["old"] / total["new"], 2)
    print(name, json.dumps(row))
    return row


def shop_steps(k: int) -> dict:
    """Seconds per training step at a million items, blocked and stored-logits forms."""
    from promptrec.data.loaders import load_dataset
    from promptrec.scorers.text import TextSpace
    from promptrec.train import TrainConfig, Trainer, fast
    from scale import make_shop, write_shop

    with tempfile.TemporaryDirectory() as folder:
        catalog, log = write_shop(*make_shop(1_000_000, 5_000_000), Path(folder))
        data = load_dataset(catalog=catalog, events=log)
    config = TrainConfig(encoder="hashing", max_minutes=None)  # scale.py's training settings
    trainer = Trainer(config, space=TextSpace("hashing"), progress=False, device="cpu")
    trainer.space.fit(data)
    mode = fast.FastMode(
        config,
        data,
        None,
        text=trainer.space.vectors,
        encode=trainer._encode_queries,
        queries=trainer._encoded_queries,
        device="cpu",
        precision="fp32",
        progress=False,
    )
    batches = fast.length_batches(mode.lengths, int(config.batch_size), torch.Generator())
    blocked = SampledSoftmaxLoss.sampled

    def stored(self, users, targets, items, negatives, ids):  # type: ignore[no-untyped-def]
        whole, self.q = self.q, self.q[ids]  # the batch's items' sampling probabilities
        try:
            return stored_sampled(self, users / self.temperature, targets, items, negatives)
        finally:
            self.q = whole

    every = fast.length_batches
    fast.length_batches = lambda *args, **kwargs: batches[:k]  # the same k batches each time
    seconds: dict[str, list[float]] = {"blocked": [], "stored logits": []}
    try:
        for name, form in [("blocked", blocked), ("stored logits", stored)] * 2:
            SampledSoftmaxLoss.sampled = form  # type: ignore[method-assign]
            started = time.perf_counter()
            mode.train_epoch(1)
            seconds[name].append((time.perf_counter() - started) / k)
    finally:
        fast.length_batches, SampledSoftmaxLoss.sampled = every, blocked  # type: ignore[method-assign]
    row = {name: round(min(s), 3) for name, s in seconds.items()}
    row |= {"steps timed": k, "steps an epoch": len(batches)}
    row["speed-up"] = round(row["stored logits"] / row["blocked"], 2)
    print("steps", json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--steps", type=int, default=0, help="also time K steps at 1M items")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    report: dict = {"machine": platform.processor() or platform.machine()}
    report["threads"] = torch.get_num_threads()

    # a million-item shop: the batch's ~30,000 items, 7,000 positions, 8,192 shared negatives
    popularity = torch.randint(0, 100, (30_000,), generator=gen)
    sampled = SampledSoftmaxLoss(popularity, num_negatives=8192, temperature=1.0)
    users = torch.randn(7000, 64, generator=gen, requires_grad=True)
    items = torch.randn(30_000, 64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 30_000, (7000,), generator=gen)
    negatives = sampled.draw(7000, 30_000, "cpu")
    report["sampled softmax, 7000 x 8192"] = compare(
        "sampled",
        lambda: sampled.sampled(users, targets, items, negatives),
        lambda: stored_sampled(sampled, users, targets, items, negatives),
        users,
        items,
    )

    # amazon-beauty: 12,101 items, 1,500 positions
    users = torch.randn(1500, 64, generator=gen, requires_grad=True)
    items = torch.randn(12_101, 64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 12_101, (1500,), generator=gen)
    full = FullSoftmaxLoss(temperature=1.0)
    report["full softmax, 1500 x 12101"] = compare(
        "full",
        lambda: full(users, targets, items),
        lambda: stored_full(users, targets, items),
        users,
        items,
    )
    if args.steps:
        report["training step at 1M items, 5M events (s)"] = shop_steps(args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "losses.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
