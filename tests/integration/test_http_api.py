"""The HTTP API over a real socket: routes, tokens, errors, paging, health."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime, timezone

import httpx
import pytest
import trio

from orchestrator import Principal
from orchestrator._tokens import revoke_token
from tests.integration.helpers import ALICE, BOB, MALLORY_ADMIN, job_rows, make_orchestrator
from tests.integration.http_helpers import serving
from tests.pg import connections_refused, fetch

RECORD_FIELDS = {
    "id", "kind", "queue", "state", "owner", "priority", "attempt", "max_attempts", "payload", "run_at",
    "created_at", "started_at", "completed_at", "progress", "result", "error", "cancel_requested",
}  # fmt: skip


def utc(text: str) -> datetime:
    assert text.endswith("Z"), f"{text!r} is not UTC ISO 8601"
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timezone.utc.utcoffset(None)
    return moment


async def test_submit_get_and_wait_give_the_python_record(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch) as served, await served.client(ALICE) as alice:
        created = await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 21}, "priority": 3})
        assert created.status_code == 201, created.text
        job = created.json()
        done = (await alice.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 30})).json()
        got = (await alice.get(f"/api/jobs/{job['id']}")).json()
        python = await orch.get(job["id"], by=ALICE)
    assert set(job) == RECORD_FIELDS == set(type(python).model_fields)
    assert job["state"] == "queued" and job["priority"] == 3 and job["owner"] == {"user_id": "alice", "org_id": "acme"}
    assert done == got == json.loads(python.model_dump_json())
    assert done["state"] == "completed" and done["result"] == {"w": 42} and done["progress"] == 1.0
    assert utc(done["created_at"]) <= utc(done["started_at"]) <= utc(done["completed_at"])
    assert utc(done["created_at"]) == python.created_at


async def test_wait_answers_at_the_timeout_with_the_job_as_it_stands(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, await served.client(ALICE) as alice:
        job = (await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}})).json()
        waited = await alice.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 0.2})
    assert waited.status_code == 200 and waited.json()["state"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer orch_nope"}, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer"}],
    ids=["none", "unknown", "not-bearer", "empty"],
)
async def test_no_or_unknown_token_is_401(database_url: str, headers: dict[str, str]) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, httpx.AsyncClient(base_url=served.url, headers=headers) as anon:
        answers = [
            await anon.get("/api/jobs"),
            await anon.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}}),
            await anon.get(f"/api/jobs/{uuid.uuid4()}"),
            await anon.get("/api/events"),
        ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"] == "unauthenticated"
    assert await job_rows(database_url) == []


async def test_expired_and_revoked_tokens_are_401_and_last_use_is_recorded(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served:
        live = await served.token(ALICE, name="live")
        expiring = await served.token(ALICE, expires_in=0.5)
        async with httpx.AsyncClient(base_url=served.url) as client:

            def as_(token: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {token}"}

            assert (await client.get("/api/me", headers=as_(expiring))).status_code == 200
            [row] = await fetch(database_url, "SELECT expires_at FROM orchestrator.api_tokens WHERE expires_at IS NOT NULL")
            # Wait (without sleeping a guessed time) until the database clock passes the expiry.
            with trio.fail_after(10):
                while (await fetch(database_url, "SELECT clock_timestamp() > $1 AS past", row["expires_at"]))[0]["past"] is False:
                    await trio.sleep(0.05)
            assert (await client.get("/api/me", headers=as_(expiring))).status_code == 401
            me = await client.get("/api/me", headers=as_(live))
            assert me.json() == {"user_id": "alice", "org_id": "acme", "role": "member", "kinds": ["double", "gated"]}
            [token] = await fetch(database_url, "SELECT token_id, last_used_at FROM orchestrator.api_tokens WHERE name = 'live'")
            assert token["last_used_at"] is not None
            await revoke_token(orch.store, token["token_id"])
            assert (await client.get("/api/me", headers=as_(live))).status_code == 401


async def test_tokens_store_only_a_hash(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served:
        secret = await served.token(ALICE)
    rows = await fetch(database_url, "SELECT * FROM orchestrator.api_tokens")
    assert len(rows) == 1
    assert all(secret not in str(value) and secret.encode() != value for value in rows[0].values())
    assert len(rows[0]["token_hash"]) == 32


async def test_another_organisation_and_unknown_ids_are_404(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, await served.client(ALICE) as alice, await served.client(
        MALLORY_ADMIN
    ) as mallory:
        job = (await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}})).json()
        for path in (f"/api/jobs/{job['id']}", f"/api/jobs/{uuid.uuid4()}", f"/api/jobs/{job['id']}/wait?timeout=0"):
            answer = await mallory.get(path)
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"] == "not_found"
        assert (await mallory.post(f"/api/jobs/{uuid.uuid4()}/cancel")).status_code == 404
        assert (await mallory.get("/api/jobs")).json() == {"jobs": [], "next_cursor": None}
        not_an_id = await alice.get("/api/jobs/not-a-uuid")
    assert not_an_id.status_code == 422 and not_an_id.json()["field"] == "job_id"
    assert (await job_rows(database_url))[0]["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "nope", "payload": {"w": 1}}, "kind"),
        ({"kind": "double", "payload": {"w": "wide"}}, "payload.w"),
        ({"kind": "double", "payload": {}}, "payload.w"),
        ({"kind": "double", "payload": {"w": 1}, "delay": -1}, "delay"),
        ({"kind": "double", "payload": {"w": 1}, "max_attempts": 0}, "max_attempts"),
        ({"kind": "double", "payload": {"w": 1}, "colour": "red"}, "colour"),
        ({"payload": {"w": 1}}, "kind"),
        # The submission boundary shared with the library and the CLI.
        ({"kind": "double", "payload": {"w": 1}, "delay": 1e12}, "delay"),
        ({"kind": "double", "payload": {"w": 1}, "priority": 2**40}, "priority"),
        ({"kind": "double", "payload": {"w": 1}, "priority": True}, "priority"),
        ({"kind": "double", "payload": {"w": 1}, "queue": ""}, "queue"),
        ({"kind": "dou\u0000ble", "payload": {"w": 1}}, "kind"),
        ({"kind": "k" * 10_000, "payload": {"w": 1}}, "kind"),
        ({"kind": "gated", "payload": {"note": "a\u0000b"}}, "payload.note"),
        ({"kind": "gated", "payload": {"note": "\ud800"}}, "payload.note"),
        ({"kind": "gated", "payload": {"x": float("nan")}}, "payload.x"),
        ({"kind": "gated", "payload": {"x": float("inf")}}, "payload.x"),
        ({"kind": "gated", "payload": functools.reduce(lambda inner, _: [inner], range(100), [])}, "payload[0][0]"),
    ],
)
async def test_bad_submissions_are_422_naming_the_field_and_write_nothing(
    database_url: str, body: dict[str, object], field: str
) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, await served.client(ALICE) as alice:
        # As a hostile client sends it: lone surrogates escaped, NaN as a literal.
        answer = await alice.post("/api/jobs", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    # A path hundreds of levels deep is named by its start.
    assert answer.json()["field"].startswith(field), answer.json()
    assert field.split(".")[-1] in answer.json()["message"]
    assert len(answer.json()["message"]) < 400, "an error quotes only a prefix of the input"
    assert await job_rows(database_url) == []


async def test_malformed_json_is_400_and_an_oversized_body_413(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False, body_limit=1000) as served, await served.client(ALICE) as alice:
        malformed = await alice.post("/api/jobs", content=b'{"kind": ', headers={"Content-Type": "application/json"})
        big = {"kind": "double", "payload": {"w": 1, "pad": "x" * 2000}}
        declared = await alice.post("/api/jobs", json=big)

        async def chunks() -> object:
            for _ in range(40):
                yield b" " * 100
            yield json.dumps(big).encode()

        streamed = await alice.post("/api/jobs", content=chunks(), headers={"Content-Type": "application/json"})
        fits = await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}})
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_json"
    assert declared.status_code == 413 and declared.json()["error"] == "body_too_large"
    assert streamed.status_code == 413, streamed.text
    assert fits.status_code == 201
    assert len(await job_rows(database_url)) == 1


async def test_listing_filters_and_pages_newest_first_stable_under_inserts(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, await served.client(ALICE) as alice, await served.client(BOB) as bob:
        mine = [(await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": i}})).json()["id"] for i in range(7)]
        bobs = (await bob.post("/api/jobs", json={"kind": "gated", "payload": {"w": 0}, "queue": "slow"})).json()["id"]
        await orch.submit("double", {"w": 0}, owner=MALLORY_ADMIN)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 3, "owner": "alice", **({"cursor": cursor} if cursor else {})}
            page = (await alice.get("/api/jobs", params=params)).json()
            seen += [j["id"] for j in page["jobs"]]
            pages += 1
            # Jobs submitted while paging come before the cursor: no repeats, no gaps.
            await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 99}})
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == mine[::-1] and pages == 3
        by_kind = (await alice.get("/api/jobs", params={"kind": "gated"})).json()["jobs"]
        by_queue = (await alice.get("/api/jobs", params={"queue": "slow"})).json()["jobs"]
        by_state = (await alice.get("/api/jobs", params={"state": "cancelled"})).json()["jobs"]
        everyone = (await alice.get("/api/jobs", params={"limit": 500})).json()["jobs"]
        bad_state = await alice.get("/api/jobs", params={"state": "sleeping"})
        bad_cursor = await alice.get("/api/jobs", params={"cursor": "garbage"})
        bad_limit = await alice.get("/api/jobs", params={"limit": 0})
    assert [j["id"] for j in by_kind] == [j["id"] for j in by_queue] == [bobs]
    assert by_state == []
    assert {j["owner"]["org_id"] for j in everyone} == {"acme"} and len(everyone) == 7 + 1 + 3
    created = [j["created_at"] for j in everyone]
    assert created == sorted(created, reverse=True)
    assert (bad_state.status_code, bad_state.json()["field"]) == (422, "state")
    assert (bad_cursor.status_code, bad_cursor.json()["field"]) == (422, "cursor")
    assert (bad_limit.status_code, bad_limit.json()["field"]) == (422, "limit")


async def test_healthz_openapi_and_the_dashboard_need_no_token(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, httpx.AsyncClient(base_url=served.url) as anon:
        health = await anon.get("/healthz")
        document = (await anon.get("/openapi.json")).json()
        page = await anon.get("/")
        script = await anon.get("/static/app.js")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/wait",
            "/api/events", "/healthz"} <= set(document["paths"])  # fmt: skip
    assert set(document["components"]["schemas"]["JobRecord"]["properties"]) == RECORD_FIELDS
    assert "kind" in document["components"]["schemas"]["SubmitRequest"]["properties"]
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_healthz_is_503_while_the_database_does_not_answer(database_url: str, pg_server: str) -> None:
    orch = make_orchestrator(database_url, pool_size=1)
    async with serving(orch, work=False) as served, httpx.AsyncClient(base_url=served.url) as anon:
        assert (await anon.get("/healthz")).status_code == 200
        async with connections_refused(pg_server, database_url):
            down = await anon.get("/healthz")
        with trio.fail_after(20):
            while (up := await anon.get("/healthz")).status_code != 200:
                await trio.sleep(0.05)
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert up.json() == {"status": "ok", "detail": None}


async def test_a_member_and_an_admin_principal_come_from_the_token(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    admin = Principal(user_id="root", org_id="acme", role="admin")
    async with serving(orch, work=False) as served, await served.client(admin) as client:
        me = (await client.get("/api/me")).json()
    assert (me["user_id"], me["org_id"], me["role"]) == ("root", "acme", "admin")
