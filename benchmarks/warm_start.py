"""Warm start against training from scratch, on a log that grew (issue: the feedback loop).

Protocol (``shared/EVALUATION.md``): the test targets (each user's last interaction) are held
out of everything. The rest of the log is cut by time: an **old** model is trained with the
``promptrec train`` defaults on all but its newest ``--new-share`` of events (what was served
before the log grew); then, on the whole log,

* ``no retraining``: the old model bound to the whole log (as a running service does: the new
  events enter the users' histories, not the weights nor the co-occurrence table);
* ``warm start``: ``promptrec train --init-from OLD`` (:mod:`promptrec.train.warm`);
* ``from scratch``: ``promptrec train`` with the defaults.

Each is scored on the test targets (full ranking, history excluded), with its training time on
this machine. A log ordered by position rather than time (amazon-beauty's: it has no clock common
to its users) is cut with ``--cut last``: the newest events are each user's last one.

Usage::

    python benchmarks/warm_start.py --data movielens-100k
    python benchmarks/warm_start.py --data amazon-beauty --cut last
    python benchmarks/warm_start.py --data amazon-beauty --scratch results/tmp/models/beauty
    python benchmarks/warm_start.py --data amazon-beauty --cut last \
        --checkpoints results/tmp/ckpt --keep results/tmp/models   # over several sittings

``--scratch DIR``, ``--old DIR`` and ``--warm DIR`` reuse a from-scratch, an old and a
warm-started model trained on the same logs (their ``train_log`` fingerprints are checked) with
their recorded training times (a run that does not fit in one sitting goes on from them);
``--keep DIR`` saves the old, warm and from-scratch models; ``--set KEY=VALUE`` gives the warm
start a training setting. ``--split validation`` holds the validation targets out as well and
scores on them: warm-start settings are compared there, never on test. Writes
``results/warm_start-<data>[-validation].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from promptrec import load_dataset
from promptrec.data.dataset import Dataset, chronological
from promptrec.data.split import leave_last_out
from promptrec.evaluation.evaluator import evaluate_scorer
from promptrec.scorers.base import Scorer
from promptrec.train import TrainConfig, Trainer
from promptrec.train.folder import log_fingerprint, read_model_config
from promptrec.train.load import load_model
from promptrec.train.warm import warm_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="movielens-100k")
    parser.add_argument("--new-share", type=float, default=0.1)
    parser.add_argument(
        "--cut",
        choices=("time", "last"),
        default="time",
        help="time: the newest --new-share of events by time; last: each user's last event",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="the protocol's targets the models are scored on (validation: to choose settings)",
    )
    parser.add_argument("--scratch", default=None, help="a from-scratch model of the same log")
    parser.add_argument("--warm", default=None, help="a warm-started model of the same log")
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="checkpoint every epoch of each training here, and resume from it (a run that "
        "does not fit in one sitting; its training times then add up the sittings)",
    )
    parser.add_argument("--old", default=None, help="an old model of the same cut log")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting of the warm start (e.g. lr=1e-3); repeatable",
    )
    parser.add_argument(
        "--keep", default=None, help="save the old, warm and from-scratch models here"
    )
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    given = dict(pair.split("=", 1) for pair in args.set)

    data = load_dataset(SHARED / "data" / args.data)
    test = leave_last_out(data)[args.split]
    whole = test.fit
    stamps = whole.events["timestamp"].to_numpy()
    if args.cut == "time":
        cut: float | None = float(np.quantile(stamps, 1 - args.new_share, method="lower"))
        older = whole.with_events(whole.events[stamps <= cut])
    else:
        cut = None
        ev = chronological(whole.events)
        last = ev.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy() == 0
        older = whole.with_events(ev[~last].sort_index())
    new_events = len(whole.events) - len(older.events)
    print(f"{args.data}: {new_events} of {len(whole.events)} events after the cut", flush=True)
    rows: dict[str, dict] = {}

    def score(name: str, scorer, seconds: float | None) -> None:  # type: ignore[no-untyped-def]
        res = evaluate_scorer(scorer, test, progress=False)
        summary = getattr(scorer, "info", {}).get("summary", {})
        rows[name] = {
            **{m: round(v, 6) for m, v in res.metrics.items()},
            "cooccurrence": [summary.get("cooccurrence_weight"), summary.get("cooccurrence_decay")],
            "train_seconds": None if seconds is None else round(seconds, 1),
            "best_epoch": summary.get("best_epoch"),
            "validation_ndcg10": summary.get("validation_ndcg10"),
            "validation_users": summary.get("validation_users"),
        }
        print(name, rows[name], flush=True)

    kept = Path(args.keep) if args.keep else None

    def obtained(
        name: str, reuse: str | None, trainer: Callable[[Path | None], Trainer], log: Dataset
    ) -> tuple[Scorer, float]:
        """The model ``reuse`` names, else one trained now (and kept at once, for a later run
        to go on from), with its training time."""
        if reuse:
            return reused(reuse, log)
        checkpoints = Path(args.checkpoints) / f"{args.data}-{name}" if args.checkpoints else None
        model, seconds = fit_over_sittings(trainer, log, checkpoints)
        if kept is not None:
            keep(model, kept / f"{args.data}-{name}", log, seconds)
        return model, seconds

    def from_scratch(checkpoints: Path | None) -> Trainer:
        return Trainer(TrainConfig(), checkpoint_dir=checkpoints)

    def warm_start(checkpoints: Path | None) -> Trainer:
        return Trainer(warm_config(old.config_, given), init_from=old, checkpoint_dir=checkpoints)

    old, old_seconds = obtained("old", args.old, from_scratch, older)
    score("no retraining", old, None)
    rows["no retraining"]["old_train_seconds"] = round(old_seconds, 1)
    warm, seconds = obtained("warm", args.warm, warm_start, whole)
    score("warm start", warm, seconds)
    rows["warm start"]["epochs"] = warm.info.get("validation")
    scratch, seconds = obtained("scratch", args.scratch, from_scratch, whole)
    score("from scratch", scratch, seconds)
    for name, reuse in (("warm start", args.warm), ("from scratch", args.scratch)):
        if reuse:
            rows[name]["reused"] = str(reuse)

    base, fresh = rows["from scratch"], rows["warm start"]
    result = {
        "data": args.data,
        "split": args.split,
        "warm_settings": given,
        "new_share": args.new_share if args.cut == "time" else None,
        "cut_by": args.cut,
        "cut": cut,
        "new_events": new_events,
        "events": len(whole.events),
        "test_users": len(test.histories),
        "rows": rows,
        "warm_vs_scratch_ndcg10": round(fresh["NDCG@10"] / base["NDCG@10"] - 1, 4),
        "warm_time_share": round(fresh["train_seconds"] / base["train_seconds"], 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"warm_start-{args.data}" + ("" if args.split == "test" else f"-{args.split}")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)


#: beside a model kept by this benchmark: the seconds its whole ``fit`` took
FIT_SECONDS = "fit_seconds.txt"


class SittingsClock:
    """The seconds a training took over every sitting: with a checkpoint folder, the time of
    the sittings before (a run stopped and resumed) is read from it, and this sitting's is
    written there every 10 s, so that a stop at any moment loses at most that much."""

    def __init__(self, checkpoints: Path | None) -> None:
        self.file = None if checkpoints is None else checkpoints / "sittings_seconds.txt"
        exists = self.file is not None and self.file.exists()
        self.before = float(self.file.read_text()) if exists else 0.0  # type: ignore[union-attr]
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._end: float | None = None

    def seconds(self) -> float:
        end = time.perf_counter() if self._end is None else self._end
        return self.before + end - self._start

    def _write(self) -> None:
        while not self._stop.wait(10.0) and self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text(f"{self.seconds():.1f}\n")

    def __enter__(self) -> SittingsClock:
        self._start = time.perf_counter()
        threading.Thread(target=self._write, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = time.perf_counter()
        self._stop.set()


def fit_over_sittings(
    make: Callable[[Path | None], Trainer], log: Dataset, checkpoints: Path | None
) -> tuple[Scorer, float]:
    """The model the trainer ``make(checkpoints)`` fits on ``log``, and its training time summed
    over the sittings (:class:`SittingsClock`; without ``checkpoints``: this sitting's)."""
    with SittingsClock(checkpoints) as clock:
        model = make(checkpoints).fit(log)
    return model, clock.seconds()


def keep(model: Scorer, directory: Path, log: Dataset, seconds: float) -> None:
    """Save ``model`` with the time its training took here (the whole ``fit``, as the rows
    report it), for :func:`reused`."""
    model.save(directory, log)
    (directory / FIT_SECONDS).write_text(f"{seconds:.1f}\n")


def reused(directory: str, log: Dataset) -> tuple[Scorer, float]:
    """The model saved in ``directory``, checked to be trained on ``log``, and its training
    time: the whole ``fit`` as :func:`keep` recorded it (else the trainer's summary, which
    leaves out the choices made after the epochs)."""
    config = read_model_config(Path(directory))
    if config.get("train_log") != log_fingerprint(log):
        raise SystemExit(f"{directory} was not trained on this log (its targets held out)")
    timed = Path(directory) / FIT_SECONDS
    seconds = float(timed.read_text()) if timed.exists() else config["summary"]["train_seconds"]
    return load_model(directory), seconds


def command(result: dict) -> str:
    """The command line that reproduces ``result``."""
    words = ["python benchmarks/warm_start.py", f"--data {result['data']}"]
    if result["cut_by"] == "last":
        words.append("--cut last")
    if result["split"] == "validation":
        words.append("--split validation")
    words += [f"--set {k}={v}" for k, v in result["warm_settings"].items()]
    return " ".join(words)


def markdown(result: dict) -> str:
    newest = (
        "each user's last event"
        if result["cut_by"] == "last"
        else f"the newest {result['new_share']:.0%} of the log by time"
    )
    lines = [
        f"# Warm start: {result['data']}",
        "",
        f"The old model was trained on all but {newest} "
        f"({result['new_events']} of {result['events']} events; test targets held out of "
        f"everything); then each row on the whole log. Scored on the {result['split']} "
        f"targets: {result['test_users']} users, full ranking (`{command(result)}`).",
        "",
        "| model | NDCG@10 | Recall@10 | best epoch | training time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["rows"].items():
        seconds = row["train_seconds"]
        lines.append(
            f"| {name} | {row['NDCG@10']:.4f} | {row['Recall@10']:.4f} | "
            f"{row['best_epoch']} | {'-' if seconds is None else f'{seconds:.0f} s'} |"
        )
    lines += [
        "",
        f"Warm start against from scratch: NDCG@10 {result['warm_vs_scratch_ndcg10']:+.1%}, "
        f"in {result['warm_time_share']:.0%} of its time.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
