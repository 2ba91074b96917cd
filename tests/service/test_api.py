"""Every endpoint's success and error paths, on a real slice of amazon-beauty."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from promptrec.service.config import ArmSpec

AUTH = {"X-API-Key": "test-key"}


def a_user(client) -> str:
    """The user with the longest history."""
    return client.get("/users", params={"limit": 1}, headers=AUTH).json()["users"][0]


def test_recommend_for_a_known_user_excludes_history_and_explains(client, store) -> None:
    user = a_user(client)
    history = client.get(f"/users/{user}/history", params={"limit": 1000}, headers=AUTH).json()
    seen = {r["item_id"] for r in history["recent"]}
    r = client.get("/recommend", params={"user_id": user, "k": 7, "explain": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7 and not body["cold_start"]
    assert body["arm"] == "main" and body["model_version"] == "zero-shot"
    assert body["strategy"] == "mean-of-items" and len(body["request_id"]) == 32
    assert not seen & {i["item_id"] for i in body["items"]}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for item in body["items"]:
        because = item["explanation"]["because"]
        assert because and {b["item_id"] for b in because} <= seen
        assert item["explanation"]["text"].startswith("similar to")
    # keep_seen admits history items again
    kept = client.get(
        "/recommend", params={"user_id": user, "k": 50, "keep_seen": True}, headers=AUTH
    ).json()
    assert seen & {i["item_id"] for i in kept["items"]}


def test_live_query_steers_the_list_and_is_explained(client) -> None:
    user = a_user(client)
    plain = client.get("/recommend", params={"user_id": user, "k": 10}).json()
    asked = client.get(
        "/recommend",
        params={"user_id": user, "k": 10, "q": "nail polish", "explain": True},
        headers=AUTH,
    ).json()
    assert asked["query"] == "nail polish"
    assert [i["item_id"] for i in asked["items"]] != [i["item_id"] for i in plain["items"]]
    matched = [i for i in asked["items"] if i["explanation"]["query_terms"]]
    assert len(matched) >= 5
    assert all(set(i["explanation"]["query_terms"]) <= {"nail", "polish"} for i in matched)


def test_unknown_user_is_a_cold_start_and_a_query_helps(client) -> None:
    cold = client.get("/recommend", params={"user_id": "nobody-yet", "k": 5}).json()
    assert cold["cold_start"] and len(cold["items"]) == 5
    asked = client.get(
        "/recommend",
        params={"user_id": "nobody-yet", "k": 5, "q": "shampoo", "explain": True},
        headers=AUTH,
    ).json()
    assert not asked["cold_start"]
    assert sum("shampoo" in i["explanation"]["query_terms"] for i in asked["items"]) >= 3


def test_filters_and_their_errors(client, beauty_slice) -> None:
    user = a_user(client)
    r = client.get(
        "/recommend",
        params={"user_id": user, "k": 10, "price_min": 5, "price_max": 10},
    ).json()
    prices = [client.get(f"/items/{i['item_id']}").json()["price"] for i in r["items"]]
    assert prices and all(5 <= p <= 10 for p in prices)
    first = r["items"][0]["item_id"]
    denied = client.get(
        "/recommend",
        params={"user_id": user, "k": 10, "price_min": 5, "price_max": 10, "deny": first},
    ).json()
    assert first not in [i["item_id"] for i in denied["items"]]
    allowed = client.get(
        "/recommend", params={"user_id": user, "k": 10, "allow": f"{first},nope"}
    ).json()
    assert [i["item_id"] for i in allowed["items"]] == [first]
    nails = client.get(
        "/recommend", params={"user_id": user, "k": 5, "category": "Nail Polish"}
    ).json()
    for item in nails["items"]:
        assert "Nail Polish" in json.dumps(client.get(f"/items/{item['item_id']}").json())

    bad = client.get("/recommend", params={"user_id": user, "price_min": 9, "price_max": 1})
    assert bad.status_code == 422 and "price_min" in bad.json()["detail"]
    bad = client.get("/recommend", params={"user_id": user, "category": "Spaceships"})
    assert bad.status_code == 422 and "Spaceships" in bad.json()["detail"]
    bad = client.get("/recommend", params={"user_id": user, "k": 0})
    assert bad.status_code == 422 and "k" in bad.json()["detail"]
    assert client.get("/recommend").status_code == 422  # no user
    assert client.get("/recommend", params={"user_id": user, "reasons": True}).status_code == 400


def test_events_change_the_next_recommendation(client, store) -> None:
    user = a_user(client)
    before = client.get("/recommend", params={"user_id": user, "k": 10}).json()
    length = client.get(f"/users/{user}/history", headers=AUTH).json()["length"]
    clicked = before["items"][0]["item_id"]
    r = client.post(
        "/events",
        json={
            "events": [
                {
                    "user_id": user,
                    "item_id": clicked,
                    "event": "click",
                    "request_id": before["request_id"],
                }
            ]
        },
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "added": 1,
        "duplicates": 0,
        "searches": 0,
        "attributed": 1,
        "unknown_request_ids": 0,
        "replayed": False,
    }
    after = client.get("/recommend", params={"user_id": user, "k": 10}).json()
    assert client.get(f"/users/{user}/history", headers=AUTH).json()["length"] == length + 1
    assert clicked not in [i["item_id"] for i in after["items"]]
    assert [i["score"] for i in after["items"]] != [i["score"] for i in before["items"]]
    # a new user's first events make a personal list at once
    new = client.post(
        "/events",
        json={
            "events": [
                {
                    "user_id": "fresh",
                    "item_id": clicked,
                    "event": "purchase",
                    "timestamp": "2026-11-28T10:00:00Z",
                }
            ]
        },
        headers=AUTH,
    )
    assert new.json()["added"] == 1
    assert not client.get("/recommend", params={"user_id": "fresh"}).json()["cold_start"]
    assert store.counts()["events"] == client.app.state.engine.snapshot.data.n_events + 2


def test_a_search_without_an_item_becomes_the_query(client) -> None:
    r = client.post(
        "/events",
        json={"events": [{"user_id": "searcher", "event": "search", "query": "hair dryer"}]},
        headers=AUTH,
    )
    assert r.json()["searches"] == 1
    body = client.get(
        "/recommend", params={"user_id": "searcher", "explain": True}, headers=AUTH
    ).json()
    assert body["query"] == "hair dryer" and not body["cold_start"]


def test_a_stored_search_is_never_echoed_without_the_key(client) -> None:
    """The user's stored search is user data: a blank or white-space ``q`` is no query (the
    stored search answers the list), and the answer echoes that search only to a caller with
    the key; a query the caller gave is theirs and always echoed."""
    search = {"user_id": "private", "event": "search", "query": "private words"}
    assert client.post("/events", json={"events": [search]}, headers=AUTH).status_code == 200
    for blank in (None, " ", "\t", " \n "):
        params = {"user_id": "private"} | ({} if blank is None else {"q": blank})
        anonymous = client.get("/recommend", params=params)
        assert anonymous.status_code == 200 and anonymous.json()["query"] is None, blank
        keyed = client.get("/recommend", params=params, headers=AUTH).json()
        assert keyed["query"] == "private words", blank
        # the list answers the stored search either way: the same items
        assert [i["item_id"] for i in keyed["items"]] == [
            i["item_id"] for i in anonymous.json()["items"]
        ]
    asked = client.get("/recommend", params={"user_id": "private", "q": "  lip balm "}).json()
    assert asked["query"] == "lip balm"


def test_a_blank_search_is_refused_naming_the_field(client, store) -> None:
    before = store.counts()["searches"]
    for query in ("   ", "\t", ""):
        search = {"user_id": "blank", "event": "search", "query": query}
        r = client.post("/events", json={"events": [search]}, headers=AUTH)
        assert r.status_code == 422, (query, r.text)
        assert "events.0.query" in r.json()["detail"] and "needs a query" in r.json()["detail"]
    assert store.counts()["searches"] == before
    body = client.get("/recommend", params={"user_id": "blank"}, headers=AUTH).json()
    assert body["query"] is None and body["cold_start"]
    # a blank query beside an item is no query: the event is stored without one
    item = body["items"][0]["item_id"]
    view = {"user_id": "blank", "item_id": item, "event": "view", "query": "  "}
    assert client.post("/events", json={"events": [view]}, headers=AUTH).json()["added"] == 1
    assert store.user_history("blank", 5)[0][4] is None


def test_event_errors_write_nothing(client, store) -> None:
    user = a_user(client)
    events = store.counts()["events"]
    good = {
        "user_id": user,
        "item_id": client.get("/recommend", params={"user_id": user}).json()["items"][0]["item_id"],
        "event": "view",
    }
    cases = [
        ({"events": [good, {**good, "item_id": "no-such-item"}]}, 404, "events.1.item_id"),
        ({"events": [{**good, "event": "teleport"}]}, 422, "events.0.event"),
        ({"events": [{**good, "event": "rating"}]}, 422, "rating event needs a value"),
        ({"events": []}, 422, "events"),
        ({"events": [{**good, "colour": "red"}]}, 422, "colour"),
    ]
    for body, status, text in cases:
        r = client.post("/events", json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["detail"], r.json()
    r = client.post(
        "/events", content=b'{"events": [', headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    big = {"events": [good] * 3000}  # over the 64 KiB limit of the test app
    assert client.post("/events", json=big, headers=AUTH).status_code == 413
    assert store.counts()["events"] == events


def test_write_endpoints_need_a_key(client) -> None:
    body = {"events": [{"user_id": "u", "item_id": "x", "event": "view"}]}
    r = client.post("/events", json=body)
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert client.post("/events", json=body, headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.put("/items/z", json={"title": "Z"}).status_code == 401
    assert client.delete("/items/z").status_code == 401
    assert client.delete("/users/u").status_code == 401
    assert client.post("/admin/models/rollback").status_code == 401
    bearer = {"Authorization": "Bearer test-key"}
    assert client.delete("/users/never-seen", headers=bearer).status_code == 404
    assert client.get("/recommend", params={"user_id": "u"}).status_code == 200  # reads open


def test_protected_reads(store) -> None:
    from fastapi.testclient import TestClient

    from promptrec.service.app import create_app
    from promptrec.service.engine import Engine
    from promptrec.service.security import ApiKeys

    engine = Engine(store)
    client = TestClient(create_app(engine, ApiKeys(["k"], protect_reads=True)))
    assert client.get("/recommend", params={"user_id": "u"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/recommend", params={"user_id": "u"}, headers={"X-API-Key": "k"}).is_success
    assert client.get("/health").is_success  # liveness stays open
    engine.close()


def test_idempotency_key_stores_a_retry_once(client, store) -> None:
    user = a_user(client)
    item = client.get("/recommend", params={"user_id": user}).json()["items"][0]["item_id"]
    body = {"events": [{"user_id": user, "item_id": item, "event": "cart"}]}
    first = client.post("/events", json=body, headers={**AUTH, "Idempotency-Key": "abc"}).json()
    again = client.post("/events", json=body, headers={**AUTH, "Idempotency-Key": "abc"}).json()
    assert first["added"] == 1 and not first["replayed"]
    assert again == {**first, "replayed": True, "attributed": 0}
    n = store.counts()["events"]
    client.post("/events", json={**body, "idempotency_key": "abc"}, headers=AUTH)
    assert store.counts()["events"] == n


def test_new_item_is_recommendable_at_once_and_deleted_items_vanish(client) -> None:
    fields = {
        "title": "Lavender Moon Glow Night Cream",
        "category": "Skin Care",
        "price": 19.5,
        "description": "A lavender night cream that glows",
    }
    r = client.put("/items/new-1", json=fields, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"item_id": "new-1", "created": True}
    assert client.get("/items/new-1").json()["title"] == fields["title"]
    got = client.get("/recommend", params={"user_id": "x", "q": "lavender night cream glow"})
    assert got.json()["items"][0]["item_id"] == "new-1"
    again = client.put("/items/new-1", json={**fields, "price": 21.0}, headers=AUTH).json()
    assert again == {"item_id": "new-1", "created": False}
    assert client.get("/items/new-1").json()["price"] == 21.0

    assert client.delete("/items/new-1", headers=AUTH).status_code == 204
    assert client.get("/items/new-1").status_code == 404
    got = client.get("/recommend", params={"user_id": "x", "q": "lavender night cream glow"})
    assert "new-1" not in [i["item_id"] for i in got.json()["items"]]
    assert client.delete("/items/new-1", headers=AUTH).status_code == 404
    bad = client.put("/items/new-2", json={"price": 3}, headers=AUTH)
    assert bad.status_code == 422 and "text field" in bad.json()["detail"]
    assert client.get("/items/new-2").status_code == 404


def test_forget_user_removes_everything(client, store) -> None:
    user = a_user(client)
    served = client.get("/recommend", params={"user_id": user}).json()
    item = served["items"][0]["item_id"]
    client.post(
        "/events",
        json={
            "events": [
                {
                    "user_id": user,
                    "item_id": item,
                    "event": "click",
                    "request_id": served["request_id"],
                },
                {"user_id": user, "event": "search", "query": "lipstick"},
            ]
        },
        headers=AUTH,
    )
    r = client.delete(f"/users/{user}", headers=AUTH)
    assert r.status_code == 200
    counts = r.json()
    assert counts["events"] >= 2 and counts["searches"] == 1
    assert counts["impressions"] >= 1 and counts["attributions"] == 1
    for table in ("events", "searches", "impressions"):
        assert store.db.scalar(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (user,)) == 0
    assert client.get(f"/users/{user}/history", headers=AUTH).status_code == 404
    assert client.delete(f"/users/{user}", headers=AUTH).status_code == 404
    # served again, the user starts afresh (a new list is a new impression, forgettable too)
    assert client.get("/recommend", params={"user_id": user}).json()["cold_start"]


def test_metrics_count_requests_and_online_ctr_per_arm(store, make_client) -> None:
    engine, client = make_client(
        store, [ArmSpec("text", "mean-of-items"), ArmSpec("pop", "popularity")]
    )
    users = client.get("/users", params={"limit": 60}, headers=AUTH).json()["users"]
    arms = {u: engine.arm_for(u) for u in users}
    assert set(arms.values()) == {"text", "pop"}
    assert all(engine.arm_for(u) == a for u, a in arms.items())  # stable
    clicked = 0
    for n, user in enumerate(users[:20]):
        served = client.get("/recommend", params={"user_id": user}).json()
        assert served["arm"] == arms[user]
        if n % 2 == 0 and served["arm"] == "text":
            clicked += 1
            client.post(
                "/events",
                json={
                    "events": [
                        {
                            "user_id": user,
                            "item_id": served["items"][0]["item_id"],
                            "event": "click",
                        }
                    ]
                },
                headers=AUTH,
            )  # no request id: attributed to the latest list with the item
    text = client.get("/metrics").text
    shown = {a: [arms[u] for u in users[:20]].count(a) for a in ("text", "pop")}
    text_arm = 'arm="text",model_version="zero-shot",strategy="mean-of-items"'
    pop_arm = 'arm="pop",model_version="zero-shot",strategy="popularity"'
    assert f"promptrec_online_impressions{{{text_arm}}} {float(shown['text'])}" in text
    assert f"promptrec_online_clicked_lists{{{text_arm}}} {float(clicked)}" in text
    assert f"promptrec_online_ctr{{{text_arm}}} {clicked / shown['text']}" in text
    assert f"promptrec_online_ctr{{{pop_arm}}} 0.0" in text
    assert 'promptrec_requests_total{method="GET",route="/recommend",status="200"} 20.0' in text
    assert 'promptrec_request_seconds_bucket{le="0.03",method="GET",route="/recommend"}' in text
    # one request at a time: each POST /events is its own commit
    assert f"promptrec_event_writes_total {float(clicked)}" in text
    assert f"promptrec_event_commits_total {float(clicked)}" in text
    engine.close()


def test_weighted_arms_split_users_by_weight(store, make_client) -> None:
    engine, _ = make_client(
        store, [ArmSpec("a", "mean-of-items", 9.0), ArmSpec("b", "popularity", 1.0)]
    )
    share = np.mean([engine.arm_for(f"user-{i}") == "b" for i in range(4000)])
    assert 0.08 < share < 0.12
    engine.close()


def test_logs_carry_pseudonyms_only(client, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="promptrec.service")
    user = a_user(client)
    client.get("/recommend", params={"user_id": user})
    client.get(f"/users/{user}/history", headers=AUTH)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/recommend" in text and "user=" in text
    assert f"={user} " not in text and not text.rstrip().endswith(f"={user}")
    assert user not in [w.split("=")[-1] for w in text.split()]


def test_pages_docs_and_health(client) -> None:
    assert "promptrec" in client.get("/").text
    assert "dashboard" in client.get("/dashboard").text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/recommend", "/events", "/items/{item_id}", "/users/{user_id}"} <= set(spec["paths"])
    assert client.get("/health").json()["status"] == "ok"
    client.get("/recommend", params={"user_id": "x"})
    for png in ("/dashboard/ctr.png", "/dashboard/latency.png"):
        r = client.get(png)
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert client.get("/dashboard/evaluation").json() == {"dataset": None, "rows": []}


@pytest.mark.parametrize("spec", ["nonsense-strategy", "main=/no/such/model"])
def test_bad_arm_sources_are_config_errors(store, spec, make_client) -> None:
    from promptrec.errors import ConfigError

    with pytest.raises(ConfigError, match="neither a strategy"):
        make_client(store, [ArmSpec.parse(spec)])


def test_a_prompt_strategy_rebuilds_the_prompt_from_fresh_events(store, make_client) -> None:
    engine, client = make_client(store, [ArmSpec("prompts", "sectioned")])
    user = a_user(client)
    before = client.get(
        "/recommend", params={"user_id": user, "explain": True}, headers=AUTH
    ).json()
    assert before["strategy"] == "sectioned" and before["prompt"]
    item = before["items"][0]
    client.post(
        "/events",
        json={"events": [{"user_id": user, "item_id": item["item_id"], "event": "purchase"}]},
        headers=AUTH,
    )
    after = client.get("/recommend", params={"user_id": user, "explain": True}, headers=AUTH).json()
    assert after["prompt"] != before["prompt"]
    assert "purchase" in after["prompt"].lower() and item["title"][:30] in after["prompt"]
    assert item["item_id"] not in [i["item_id"] for i in after["items"]]
    plain = client.get("/recommend", params={"user_id": user}).json()
    assert plain["prompt"] is None  # the prompt is shown with explain only
    engine.close()


def test_the_item_template_is_fixed_per_catalogue(store, make_client) -> None:
    """An item with an unusual field (an article's topic in a shop) never re-templates the
    rest (the columns alone would now say 'article')."""
    engine, client = make_client(store)
    try:
        space = engine.snapshot.arms["main"].recommender.scorer.space
        assert space.template_name == "item_product" == store.meta("item_template")
        before = dict(zip(engine.snapshot.data.item_ids, space.texts, strict=True))
        odd = {"title": "How to choose a shampoo", "topic": "hair care"}
        assert client.put("/items/guide-1", json=odd, headers=AUTH).status_code == 200
        space = engine.snapshot.arms["main"].recommender.scorer.space
        assert space.template_name == "item_product"
        after = dict(zip(engine.snapshot.data.item_ids, space.texts, strict=True))
        assert all(after[i] == text for i, text in before.items())
    finally:
        engine.close()
