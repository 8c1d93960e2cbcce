"""Bad input at every edge of the API: each gets a clear problem+json answer and changes nothing.

docs/reliability.md ("API contract and bad input") tabulates what these try and what happens.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.api.problems import assert_problem
from tests.conftest import JWT_SECRET, TESTER, access_token

LOTS = "/api/v1/lots"
START = {"product": "LOGIC28", "fab": "F1", "wafer_count": 5}


async def _lot(client: httpx.AsyncClient) -> str:
    started = await client.post(LOTS, json=START)
    assert started.status_code == 201, started.text
    code: str = started.json()["code"]
    return code


async def _snapshot(client: httpx.AsyncClient, lot: str) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the lot count, the lot, its history."""
    total = (await client.get(LOTS, params={"limit": 1})).json()["total"]
    found = (await client.get(f"{LOTS}/{lot}")).json()
    history = (await client.get(f"{LOTS}/{lot}/history")).json()
    return total, found, history


async def test_an_oversized_body_is_413_whether_declared_or_streamed(client):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    limit = client._transport.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    padding = "x" * (limit + 1)
    declared = await client.post(
        f"{LOTS}/{lot}/hold", json={"hold_code": "QUALITY", "reason": padding}
    )
    assert_problem(declared, 413, "request.too_large")

    async def chunks():  # no Content-Length: counted as it arrives
        yield b'{"hold_code": "QUALITY", "reason": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    streamed = await client.post(
        f"{LOTS}/{lot}/hold", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413, "request.too_large")
    assert await _snapshot(client, lot) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"hold_code": "QUALITY", "reason": ', 422, "request.invalid"),  # cut short
        (b"[1, 2", 422, "request.invalid"),
        (b'{"hold_code": "QUALITY", "reason": "\xff\xfe"}', 400, "request.malformed_body"),
        (b"", 422, "request.invalid"),
        (b"null", 422, "request.invalid"),
        (b'"a string"', 422, "request.invalid"),
    ],
    ids=["truncated", "unclosed-array", "not-utf8", "empty", "null", "string"],
)
async def test_malformed_json_is_refused(client, body, status, code):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    answer = await client.post(
        f"{LOTS}/{lot}/hold", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(answer, status, code)
    assert await _snapshot(client, lot) == before


async def test_unknown_fields_are_refused_not_dropped(client):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    # "priorty" misspelt: before, the lot started with the default priority and a 201.
    answer = await client.post(LOTS, json={**START, "priorty": "HOT"})
    body = assert_problem(answer, 422, "request.invalid")
    assert body["errors"][0]["type"] == "extra_forbidden"
    assert body["errors"][0]["loc"] == ["body", "priorty"]
    nested = await client.post(
        f"{LOTS}/{lot}/track-out",
        json={"measurements": [{"name": "CD", "values": [1.0], "colour": "red"}]},
    )
    assert_problem(nested, 422, "request.invalid")
    assert await _snapshot(client, lot) == before


@pytest.mark.parametrize(
    "text",
    ["nul\x00byte", "bell\x07", "escape\x1b[31m", "del\x7f", "\ud800lone surrogate"],
    ids=["nul", "bell", "ansi-escape", "del", "surrogate"],
)
async def test_control_characters_in_texts_are_refused(client, text):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    # json.dumps spells the surrogate as \\ud800, which JSON allows and no database stores.
    hold = await client.post(
        f"{LOTS}/{lot}/hold",
        content=json.dumps({"hold_code": "QUALITY", "reason": text}),
        headers={"content-type": "application/json"},
    )
    assert_problem(hold, 422, "request.invalid")
    fab = await client.post(
        "/api/v1/fabs",
        content=json.dumps({"code": "F9", "name": text}),
        headers={"content-type": "application/json"},
    )
    assert_problem(fab, 422, "request.invalid")
    assert await _snapshot(client, lot) == before
    assert (await client.get("/api/v1/fabs/F9")).status_code == 404


async def test_unicode_texts_are_kept_and_unicode_ids_refused(client):
    lot = await _lot(client)
    reason = "Ätzrate zu hoch ✓ 日本語\ttab\nline"
    held = await client.post(f"{LOTS}/{lot}/hold", json={"hold_code": "QUALITY", "reason": reason})
    assert held.status_code == 200, held.text
    holds = (await client.get(f"{LOTS}/holds")).json()["items"]
    assert reason in [h["reason"] for h in holds]
    for bad_id in ("LÖT1", "L 1", "L/../1", "\uff2c1", "L1\u200b"):  # \uff2c: fullwidth L
        answer = await client.get(f"{LOTS}/{httpx.URL(bad_id).raw_path.decode()}")
        assert answer.status_code in (404, 422), (bad_id, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    in_body = await client.post(LOTS, json={**START, "code": "LÖT-1"})
    assert_problem(in_body, 422, "request.invalid")
    in_query = await client.get("/api/v1/durables", params={"tool": "x\x00y"})
    assert_problem(in_query, 422, "request.invalid")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 501}, 422),
        ({"limit": 10**12}, 422),
        ({"limit": -1}, 422),
        ({"offset": -1}, 422),
        ({"offset": 10**13}, 422),
        ({"offset": "1e3"}, 422),
        ({"offset": 10_000_000}, 200),
        ({"limit": 500}, 200),
    ],
)
async def test_page_sizes_and_offsets_are_bounded(client, params, status):
    answer = await client.get(LOTS, params=params)
    if status == 200:
        assert answer.status_code == 200, answer.text
        if params.get("offset"):
            assert answer.json()["items"] == []
    else:
        assert_problem(answer, status, "request.invalid")


@pytest.mark.parametrize(
    "change",
    [
        {"wafer_count": -1},
        {"wafer_count": 0},
        {"wafer_count": 10**9},
        {"wafer_count": 2**64},
        {"wafer_count": 1.5},
        {"wafer_count": "many"},
        {"wafer_count": None},
        {"wafer_count": True},  # pydantic's lax mode read true as 1
    ],
    ids=str,
)
async def test_negative_and_absurd_quantities_are_refused(client, change):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    assert_problem(await client.post(LOTS, json={**START, **change}), 422, "request.invalid")
    assert await _snapshot(client, lot) == before


async def test_true_and_false_are_not_numbers(client):
    """The fuzzer's finding: a setup change time of ``false`` was stored as 0 s; and in a list
    of numbers, ``true`` is no measurement."""
    change = {"from_setup": "S1", "to_setup": "S2", "time_s": False}
    assert_problem(
        await client.put("/api/v1/dispatch/setups/changes", json=change), 422, "request.invalid"
    )
    listed = (await client.get("/api/v1/dispatch/setups")).json()["changes"]
    assert all(row["from_setup"] != "S1" for row in listed), listed
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    answer = await client.post(
        f"{LOTS}/{lot}/track-out", json={"measurements": [{"name": "CD", "values": [True]}]}
    )
    assert_problem(answer, 422, "request.invalid")
    assert await _snapshot(client, lot) == before
    # The same change with a number is taken.
    taken = await client.put("/api/v1/dispatch/setups/changes", json={**change, "time_s": 30})
    assert taken.status_code == 200, taken.text


async def test_non_finite_numbers_are_refused(client):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"measurements": [{"name": "CD", "values": [' + number + "]}]}"
        answer = await client.post(
            f"{LOTS}/{lot}/track-out", content=body, headers={"content-type": "application/json"}
        )
        assert_problem(answer, 422, "request.invalid")
    assert await _snapshot(client, lot) == before


@pytest.mark.parametrize(
    "due_at",
    [
        "2026-03-01T08:00:00",  # naive: which fab's time zone?
        "0001-01-01T00:00:00Z",
        "1900-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59Z",
        "2026-02-30T08:00:00Z",
        "yesterday",
        "2026-03-01T08:00:00+25:00",
        1767600000,  # seconds since 1970: pydantic took these for times
        "1767600000",
        "0.5",
    ],
)
async def test_naive_and_far_timestamps_are_refused(client, due_at):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    answer = await client.post(LOTS, json={**START, "due_at": due_at})
    assert_problem(answer, 422, "request.invalid")
    assert await _snapshot(client, lot) == before


async def test_far_windows_in_queries_are_refused(client):
    for params in (
        {"end": "0.5"},
        {"start": "0001-01-01T00:00:00Z"},
        {"end": "9999-12-31T00:00:00Z"},
        {"start": "2026-01-01T00:00:00"},
    ):
        answer = await client.get("/api/v1/metrics/equipment", params=params)
        assert_problem(answer, 422, "request.invalid")
    since = await client.get(
        "/api/v1/dispatch/decisions", params={"fab": "F1", "since": "2026-01-01T00:00:00"}
    )
    assert_problem(since, 422, "request.invalid")
    # A window before any history is empty, not an error (it was a 500: no state to fold).
    early = await client.get(
        "/api/v1/metrics/equipment",
        params={
            "tool": "F1-WETC01",
            "start": "1999-01-01T00:00:00Z",
            "end": "2000-01-01T00:00:00Z",
        },
    )
    assert early.status_code == 200, early.text


async def test_405_names_the_methods_of_the_path_the_document_has(client):
    # /lots/bulk-start also matches /lots/{lot}, whose GET is another path of the document.
    answer = await client.request("OPTIONS", f"{LOTS}/bulk-start")
    assert_problem(answer, 405, "http.method_not_allowed")
    assert answer.headers["allow"] == "POST"
    me = await client.request("OPTIONS", "/api/v1/users/me")
    assert me.headers["allow"] == "GET"
    both = await client.request("OPTIONS", "/api/v1/carriers")
    assert both.headers["allow"] == "GET, POST"


async def test_same_idempotency_key_with_another_body_is_refused(client):
    key = {"Idempotency-Key": "bad-input-key-0001"}
    first = await client.post(LOTS, json=START, headers=key)
    assert first.status_code == 201
    lot = first.json()["code"]
    before = await _snapshot(client, lot)
    again = await client.post(LOTS, json={**START, "wafer_count": 7}, headers=key)
    assert_problem(again, 422, "idempotency.key_reused")
    replay = await client.post(LOTS, json=START, headers=key)
    assert replay.status_code == 201
    assert replay.json()["code"] == lot
    assert replay.headers["idempotent-replayed"] == "true"
    assert await _snapshot(client, lot) == before
    for bad_key in ("short", "x" * 129, "spaces in key", "ключ-ключ-ключ".encode()):
        answer = await client.post(LOTS, json=START, headers={"Idempotency-Key": bad_key})
        assert_problem(answer, 422, "request.invalid")
    assert await _snapshot(client, lot) == before


def _tampered(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": "admin"}).encode())
        .rstrip(b"=")
        .decode()
    )
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return [
        f"{header}.{forged_payload}.{signature}",  # claims changed, signature kept
        f"{header}.{payload}.{flipped}",  # signature changed
        f"{none_header}.{payload}.",  # "alg": "none"
        jwt.encode(claims, "another-secret-of-sufficient-length-0123456789", algorithm="HS256"),
        token + "x" * 5000,  # beyond any real token
        "",
    ]


async def test_expired_and_tampered_tokens_are_401_and_change_nothing(client, anonymous, clock):
    lot = await _lot(client)
    before = await _snapshot(client, lot)
    token = access_token(TESTER)
    for bad in _tampered(token):
        answer = await anonymous.post(
            f"{LOTS}/{lot}/hold",
            json={"hold_code": "QUALITY", "reason": "r"},
            headers={"Authorization": f"Bearer {bad}"},
        )
        assert answer.status_code == 401, (bad[:40], answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["www-authenticate"] == "Bearer"
    expired = jwt.encode(
        {
            **jwt.decode(token, options={"verify_signature": False}),
            "exp": int((clock.now() - timedelta(seconds=1)).timestamp()),
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    answer = await anonymous.post(
        f"{LOTS}/{lot}/hold",
        json={"hold_code": "QUALITY", "reason": "r"},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert_problem(answer, 401, "auth.invalid_token")
    assert await _snapshot(client, lot) == before
