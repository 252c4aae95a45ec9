"""Budgets enforced before forwarding (shared/src/budgets): a department's (and each user's) tokens per
minute and monthly tokens and cost, set through the admin API (`PUT /departments/{id}`), reserved from a
request's worst case before it leaves for the provider and settled to its real usage by the audit writer.

The department `accounting` is this module's own: no other test module uses it, and every test puts its
settings back to no budget when it ends.
"""

from __future__ import annotations

import json
import uuid
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import contract
from adapters import ADAPTERS
from helpers import HTTP_TIMEOUT, admin_call, mail_to, wait_for_events

DEPARTMENT = "accounting"
API_VERSION = "2024-10-21"
# The mock answers `...mock-slow` deployments after 300 ms; gpt-4o-mini* is priced.
SLOW_MODEL = "gpt-4o-mini-mock-slow"
SETTLE_TIMEOUT_S = 45


@pytest.fixture(scope="module")
def admin(token_for) -> str:
    return token_for("gateway-admins")


@pytest.fixture(scope="module")
def member(make_user) -> str:
    return make_user("gateway-all", f"dept-{DEPARTMENT}")["access_token"]


@pytest.fixture
def budget(state, admin):
    """Sets the department's settings; puts back no budget afterwards."""

    def put(**settings) -> dict:
        answer = admin_call(state, "PUT", f"/departments/{DEPARTMENT}", admin, json=settings)
        assert answer.status_code == 200, answer.text
        return answer.json()

    yield put
    put()


def usage(state, admin) -> dict:
    answer = admin_call(state, "GET", f"/departments/{DEPARTMENT}/usage", admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


def chat_body(max_tokens: int, model: str = SLOW_MODEL) -> bytes:
    # Sent as these exact bytes: the reservation is the body's length plus max_tokens.
    return json.dumps({"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "hi"}]}, separators=(",", ":")).encode()


def chat(state, token: str, body: bytes, deployment: str = SLOW_MODEL) -> requests.Response:
    return requests.post(
        f"{state['base_url']}/azure-openai/openai/deployments/{deployment}/chat/completions",
        params={"api-version": API_VERSION}, data=body,
        headers={"api-key": token, "content-type": "application/json"}, timeout=HTTP_TIMEOUT)


def until_enforced(state, token: str, limit: int) -> None:
    """Waits until the routes hold the new settings: a request larger than the whole limit is refused
    at once (it reserves nothing)."""
    too_big = chat_body(limit + 1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if chat(state, token, too_big).status_code == 429:
            return
        time.sleep(0.3)
    pytest.fail("the department's budget never applied")


def quiet(state, admin) -> int:
    """The month's tokens once no settlement has moved them for two seconds (requests sent before a
    budget applied are still being settled)."""
    last, since = usage(state, admin)["tokens"], time.monotonic()
    deadline = since + SETTLE_TIMEOUT_S
    while time.monotonic() - since < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = usage(state, admin)["tokens"]
        if now != last:
            last, since = now, time.monotonic()
    return last


def settled(state, admin, expected_tokens: int) -> dict:
    """The month's usage once every reservation is settled to `expected_tokens`."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = usage(state, admin)
        if now["tokens"] == expected_tokens or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def test_parallel_requests_stop_exactly_at_the_monthly_budget_and_settle_to_real_usage(state, admin, member, budget):
    body = chat_body(max_tokens=500)
    reserve = len(body) + 500
    before = usage(state, admin)["tokens"]
    admitted_at_most = 3
    limit = before + admitted_at_most * reserve + reserve // 2
    budget(budget={"monthly_tokens": limit})
    until_enforced(state, member, limit)
    # Requests sent while the routes still had the old settings went through and are settled; the
    # half request of slack keeps room for exactly three.
    before = quiet(state, admin)
    assert (limit - before) // reserve == admitted_at_most, (limit, before, reserve)

    # Eight at once, each held 300 ms by the mock: reservations outlive the burst, so exactly three fit.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: chat(state, member, body), range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * admitted_at_most + [429] * (8 - admitted_at_most), statuses
    refusal = next(a for a in answers if a.status_code == 429).json()["error"]
    assert refusal["code"] == "RateLimitExceeded"
    assert f"department {DEPARTMENT}'s monthly budget of {limit} tokens" in refusal["message"], refusal

    # Settled to what the provider reported, as the audit trail has it: the counter equals the events.
    ids = {a.headers["x-gateway-request-id"] for a in answers if a.status_code == 200}
    events, _ = wait_for_events(state, ids)
    finals = [e for e in events if e["request_id"] in ids and e.get("record") == "final"]
    assert len(finals) == admitted_at_most
    for event in finals:
        assert event["budget"]["tokens"] == reserve, event["budget"]
        assert f"d#{DEPARTMENT}#m#" in event["budget"]["counters"][0]
    used = sum(e["usage"]["total_tokens"] for e in finals)
    assert 0 < used < admitted_at_most * reserve
    after = settled(state, admin, before + used)
    assert after["tokens"] == before + used, (after, before, used)
    assert after["monthly_tokens_limit"] == limit

    # With the reservations released the department has room again.
    assert chat(state, member, body).status_code == 200


def test_tokens_per_minute_refuse_within_the_minute_and_recover_the_next(state, admin, member, budget):
    body = chat_body(max_tokens=200)
    reserve = len(body) + 200
    per_minute = 2 * reserve + reserve // 2
    budget(budget={"tokens_per_minute": per_minute})
    until_enforced(state, member, per_minute)
    # Start early in a minute, so the burst and its check fall in the same one.
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: chat(state, member, body), range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429], statuses
    message = next(a for a in answers if a.status_code == 429).json()["error"]["message"]
    assert "per-minute budget" in message and "next minute" in message, message
    # The next minute's counter is a new one.
    time.sleep(61 - time.time() % 60)
    assert chat(state, member, body).status_code == 200


def test_each_user_and_api_key_has_its_own_budget_within_the_department(state, admin, make_user, budget):
    # A fresh user and a fresh key: their month's counters start at zero.
    user = make_user("gateway-all", f"dept-{DEPARTMENT}")
    member, username = user["access_token"], user["username"]
    issued = admin_call(state, "POST", "/apikeys", admin,
                        json={"name": "budget-bot", "department": DEPARTMENT, "scopes": ["text:openai"]})
    assert issued.status_code == 201, issued.text
    key, key_id = issued.json()["key"], issued.json()["api_key"]["id"]
    body = chat_body(max_tokens=100)
    # A user may reserve one request at a time; the department as a whole is not limited. Another
    # user probes when the settings apply (its requests before that count on its own counter).
    budget(user_budget={"monthly_tokens": len(body) + 100 + 10})
    until_enforced(state, make_user("gateway-all", f"dept-{DEPARTMENT}")["access_token"], len(body) + 100 + 10)
    with ThreadPoolExecutor(max_workers=4) as pool:
        mine = list(pool.map(lambda _: chat(state, member, body), range(2)))
        keys = list(pool.map(lambda _: chat(state, key, body), range(2)))
    assert sorted(a.status_code for a in mine) == [200, 429]
    assert sorted(a.status_code for a in keys) == [200, 429], "the key's budget is its own"
    message = next(a for a in keys if a.status_code == 429).json()["error"]["message"]
    assert "your (in department accounting) monthly budget" in message, message
    # The user's month, with their department's per-user limit beside it.
    answer = admin_call(state, "GET", f"/users/{username}/usage", admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["department"] == DEPARTMENT
    assert answer.json()["monthly_tokens_limit"] == len(body) + 100 + 10
    assert answer.json()["tokens"] > 0
    # The key's month, from the same counters.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        key_usage = admin_call(state, "GET", f"/apikeys/{key_id}/usage", admin).json()
        if key_usage["requests"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert key_usage["requests"] == 1 and key_usage["tokens"] > 0, key_usage
    admin_call(state, "POST", f"/apikeys/{key_id}/revoke", admin)


def test_a_cost_budget_refuses_models_without_a_price(state, admin, member, budget):
    budget(budget={"monthly_cost_usd": 100.0})
    deadline = time.monotonic() + 15
    while True:
        answer = chat(state, member, chat_body(10, model="no-such-price"), deployment="no-such-price")
        if answer.status_code == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "PermissionDenied" and "does not price" in error["message"], error
    # A priced model passes under the same budget.
    assert chat(state, member, chat_body(10)).status_code == 200


def test_a_body_the_gateway_cannot_parse_is_reserved_as_its_worst_case(state, admin, member, budget):
    """A provider may accept what serde refuses (a trailing comma): such a body reserves its bytes and the
    model's default output limit, not nothing."""
    limit = quiet(state, admin) + 2_000
    budget(budget={"monthly_tokens": limit})
    until_enforced(state, member, 2_000)
    lenient = b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,}'
    answer = chat(state, member, lenient, deployment="gpt-4o-mini")
    assert answer.status_code == 429, answer.text
    assert "budget" in answer.json()["error"]["message"]
    # The same request as JSON the gateway reads fits the budget.
    assert chat(state, member, lenient.replace(b",}", b"}"), deployment="gpt-4o-mini").status_code == 200


def test_work_the_gateway_cannot_see_finish_is_refused_under_a_budget(state, member, budget):
    budget(budget={"monthly_tokens": 10_000_000})
    url = f"{state['base_url']}/azure-openai/openai/v1/responses"
    body = {"model": "gpt-4o-mini", "input": "summarize later", "background": True}
    deadline = time.monotonic() + 15
    while (answer := requests.post(url, json=body, headers={"api-key": member}, timeout=HTTP_TIMEOUT)).status_code != 403:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.3)
    error = answer.json()["error"]
    assert error["code"] == "PermissionDenied" and "background" in error["message"], error


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_every_route_and_sdk_refuses_past_the_budget_in_its_own_shape(adapter, state, client_env, member, budget):
    budget(budget={"monthly_tokens": 1})
    session = adapter.connect(adapter.default_place, member, client_env)
    deadline = time.monotonic() + 15
    while True:
        try:
            session.call("hello budget")
        except session.error_class(429) as raised:
            error = session.read_error(raised)
            # The routes may still hold the previous test's budget for a moment.
            if "monthly budget of 1 tokens" in error.message:
                break
        if time.monotonic() > deadline:
            pytest.fail(f"{adapter.name}: the budget never applied")
        time.sleep(0.3)
    contract.assert_gateway_error(adapter, error, 429)
    assert "monthly budget of 1 tokens" in error.message, error.message


def test_department_settings_are_checked_and_audited(state, admin, token_for):
    bad = admin_call(state, "PUT", f"/departments/{DEPARTMENT}", admin,
                     json={"budget": {"monthly_cost_usd": -5}, "contacts": ["nope"], "extra": 1})
    assert bad.status_code == 400, bad.text
    good = admin_call(state, "PUT", f"/departments/{DEPARTMENT}", admin,
                      json={"budget": {"monthly_tokens": 10**9}, "contacts": ["finance@example.com"],
                            "alert_thresholds_percent": [100, 50]})
    assert good.status_code == 200, good.text
    assert good.json()["alert_thresholds_percent"] == [50, 100]
    listed = admin_call(state, "GET", "/departments", admin).json()["departments"]
    assert [d["department"] for d in listed] == sorted(d["department"] for d in listed)
    assert next(d for d in listed if d["department"] == DEPARTMENT)["budget"]["monthly_tokens"] == 10**9
    assert admin_call(state, "GET", "/departments/nowhere", admin).status_code == 404
    assert admin_call(state, "GET", f"/departments/{DEPARTMENT}/usage?month=2026-13", admin).status_code == 400
    reader = token_for("gateway-admin-readers")
    assert admin_call(state, "GET", f"/departments/{DEPARTMENT}", reader).status_code == 200
    assert admin_call(state, "PUT", f"/departments/{DEPARTMENT}", reader, json={}).status_code == 403
    user = token_for("gateway-text")
    assert admin_call(state, "GET", "/departments", user).status_code == 403
    assert admin_call(state, "PUT", f"/departments/{DEPARTMENT}", admin, json={}).status_code == 200


def run_alerts(state) -> dict:
    answer = requests.post(f"{state['control_url']}/_local/scheduler", json={"job": "budget-alerts"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_contacts_are_told_once_when_the_month_passes_a_threshold(state, admin, member, budget):
    if quiet(state, admin) == 0:
        assert chat(state, member, chat_body(10)).status_code == 200
    used = quiet(state, admin)
    contact = f"finance-{uuid.uuid4().hex[:8]}@example.com"
    # Used is 85 % of the budget: past 80, short of 100.
    limit = used * 100 // 85
    budget(budget={"monthly_tokens": limit}, contacts=[contact], alert_thresholds_percent=[80, 100])
    first = run_alerts(state)
    # The stack's own five-minute schedule may have run the job first: either run sent it, once.
    ours = [a for a in first["sent"] if a["department"] == DEPARTMENT]
    assert [a["threshold"] for a in ours] in ([80], []), first
    assert all(a["mailed"] for a in ours)
    mails = mail_to(state, contact)
    assert len(mails) == 1, mails
    assert "80%" in mails[0]["subject"] and DEPARTMENT in mails[0]["subject"], mails[0]["subject"]
    assert f"{limit}" in mails[0]["body"], mails[0]["body"]
    # Once a month per threshold: the next run tells nobody again.
    again = run_alerts(state)
    assert not [a for a in again["sent"] if a["department"] == DEPARTMENT], again
    assert len(mail_to(state, contact)) == 1
