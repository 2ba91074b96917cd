"""The OpenAI-compatible embeddings backend end to end, against a stand-in ``/v1/embeddings``
server on loopback: every text scorer, ``promptrec recommend`` and ``promptrec serve``; and a
service stopped while its workers are still encoding the catalogue."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from promptrec import Recommender
from promptrec.encoders import load_encoder
from promptrec.scorers import BASELINES, SCORERS
from promptrec.service.process import LiveServer, free_port

TEXT_SCORERS = [name for name in SCORERS if name not in BASELINES] + ["mean-of-items"]


@pytest.mark.parametrize("strategy", TEXT_SCORERS)
def test_every_text_scorer_ranks_with_the_backend(
    beauty_slice, embeddings_stand_in, strategy
) -> None:
    encoder = load_encoder("openai:stand-in", cache=False)
    rec = Recommender(strategy, encoder=encoder).fit(beauty_slice)
    assert rec.scorer.item_vectors.shape == (beauty_slice.n_items, 48)
    users = beauty_slice.user_ids[:3]
    for query in (None, "red nail polish"):
        for r in rec.recommend(users, n=5, query=query, explain=True):
            assert len(r.items) == 5 and r.scores == sorted(r.scores, reverse=True)
            assert all(np.isfinite(r.scores))
    assert embeddings_stand_in.requests > 0


def test_recommend_and_serve_through_the_backend(cli, store, embeddings_stand_in, tmp_path) -> None:
    user = store.most_active_users(1)[0]
    db = str(store.path)
    code, out, err = cli(["recommend", "--db", db, "--user", user, "--encoder", "openai:one"])
    assert code == 0, err
    assert f"user {user}" in out and " 10. " in out and "Traceback" not in out + err
    server = LiveServer(
        ["--db", db, "--encoder", "openai:one", "--strategy", "mean-of-items"],
        tmp_path / "serve.log",
    ).start()
    try:
        for params in ({"user_id": user}, {"user_id": "new", "q": "argan oil shampoo"}):
            r = httpx.get(f"{server.url}/recommend", params=params, timeout=30)
            assert r.status_code == 200, r.text
            assert len(r.json()["items"]) == 10
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_a_stop_during_a_slow_start_is_prompt(store, embeddings_stand_in, tmp_path) -> None:
    """SIGTERM while two workers still encode the catalogue (the stand-in answers each batch
    in half a second: their build would take well over a minute) ends the service, workers
    included, within seconds."""
    embeddings_stand_in.delay = 0.5
    log = tmp_path / "serve.log"
    args = ["serve", "--db", str(store.path), "--encoder", "openai:slow", "--workers", "2"]
    args += ["--strategy", "mean-of-items", "--port", str(free_port()), "--api-key", "k"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptrec.cli.main", *args], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while embeddings_stand_in.requests < 4 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert embeddings_stand_in.requests >= 4, "the workers never started encoding"
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 10.0, f"the service took {took:.1f} s to stop"
    answered = embeddings_stand_in.requests
    time.sleep(1.5)
    assert embeddings_stand_in.requests == answered  # no worker is left encoding
