"""The whole HTTP API fuzzed from its own OpenAPI schema (schemathesis) against a live server.

Every operation gets generated requests that fit its schema and requests that do not (wrong
types, missing fields, out-of-range values, odd strings), with the API key. No answer may be a
5xx, and every answer must match the schema: a documented status code and content type, and a
body that validates against that status code's model.

``PROMPTREC_FUZZ_EXAMPLES`` (default 30 per operation and mode) and ``PROMPTREC_FUZZ_SEED``
(default: a fixed derandomised run, the same examples on every run) make longer or other runs.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from promptrec.service.process import LiveServer

EXAMPLES = int(os.environ.get("PROMPTREC_FUZZ_EXAMPLES", "30"))
SEED = os.environ.get("PROMPTREC_FUZZ_SEED")
KEY = "test-key"


@pytest.fixture(scope="module")
def small_shop(beauty, tmp_path_factory):
    """The first 40 users of amazon-beauty and their items, as files: catalogue changes
    rebuild fast, so the fuzz can make many."""
    users = beauty.user_ids[:40]
    events = beauty.events[beauty.events["user_id"].isin(users)]
    items = beauty.items[beauty.items["item_id"].isin(set(events["item_id"]))]
    root = tmp_path_factory.mktemp("fuzz")
    catalog = root / "catalog.jsonl"
    with catalog.open("w") as fh:
        for rec in items.to_dict("records"):
            fh.write(json.dumps({k: v for k, v in rec.items() if v == v}) + "\n")
    log = root / "events.csv"
    events[["user_id", "item_id", "timestamp"]].to_csv(log, index=False)
    return catalog, log


def test_fuzzed_requests_get_no_5xx_and_only_documented_answers(small_shop, tmp_path) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    catalog, events = small_shop
    args = ["--db", str(tmp_path / "fuzz.db"), "--catalog", str(catalog), "--events", str(events)]
    server = LiveServer(args, tmp_path / "server.log", key=KEY).start()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    tried = 0
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=SEED is None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    print_blob=True,
                )
                def run(case) -> None:
                    case.call_and_validate(
                        base_url=server.url, headers={"X-API-Key": KEY}, checks=checks
                    )

                if SEED is not None:
                    run = seed(int(SEED))(run)
                try:
                    run()
                    tried += 1
                except Unsatisfiable:  # no invalid request exists (an operation without input)
                    assert mode is GenerationMode.NEGATIVE
                except Exception as exc:
                    failures.append(f"{operation.label} ({mode}): {exc}")
        metrics = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": KEY}).text
    finally:
        server.stop()
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("promptrec_requests_total{")
    )
    assert tried >= 20, f"only {tried} operation/mode pairs were fuzzed"
    assert sent >= 10 * tried, f"only {sent:.0f} requests reached the server"
    assert 'status="500"' not in metrics
    assert not failures, (
        "\n\n".join(failures) + "\n\nserver log:\n" + server.log.read_text()[-5000:]
    )
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-5000:]
