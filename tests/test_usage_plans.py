"""Usage plans as the local stack emulates them (local/src/usage_plans.rs): the authorizer's
usage-plan key picks the caller's department plan (config/gateway.json `departments`: rate, burst,
daily quota) or the `default` plan (the stage's throttle), and a request past the plan's rate gets
API Gateway's 429 in the provider's error shape, which the stock SDK raises as its rate-limit error.

A department's plan is also part of its settings (`PUT /admin/departments/{id}` `usage_plan`): the admin
API changes the plan in the local API Gateway (moto) with UpdateUsagePlan, the emulation follows it, and
the scheduler's `usage-plans` job puts back a plan changed outside the settings.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from helpers import HTTP_TIMEOUT, admin_call, audit_events, aws_client

API_VERSION = "2024-10-21"
CONFIG = json.loads((Path(__file__).resolve().parents[1] / "config" / "gateway.json").read_text())
THROTTLE_WORDS = "request rate limit was exceeded"


def client(state, token: str) -> openai.AzureOpenAI:
    # No retries: the SDK would otherwise wait out the 429s this test is about.
    return openai.AzureOpenAI(azure_endpoint=f"{state['base_url']}/azure-openai", api_version=API_VERSION,
                              api_key=token, max_retries=0, timeout=HTTP_TIMEOUT)


def call(sdk: openai.AzureOpenAI):
    try:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        return "ok"
    except openai.RateLimitError as error:
        return error


def until_admitted(sdk: openai.AzureOpenAI, timeout_s: float = 10) -> float:
    """Seconds until a request is admitted again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if call(sdk) == "ok":
            return time.monotonic() - start
        time.sleep(0.1)
    pytest.fail(f"still throttled after {timeout_s} s")


def test_a_departments_burst_is_admitted_and_the_rest_throttled_in_the_providers_shape(state, make_user):
    plan = CONFIG["departments"]["sales"]
    burst, rate = plan["burstLimit"], plan["rateLimit"]
    sdk = client(state, make_user("gateway-openai", "dept-sales")["access_token"])
    until_admitted(sdk)
    # Let the bucket fill, then send twice the burst at once.
    time.sleep(burst / rate + 0.5)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: call(sdk), range(2 * burst)))
    admitted = results.count("ok")
    refused = [r for r in results if r != "ok"]
    elapsed_allowance = 2  # requests refilled while the batch ran (it takes well under a second here)
    assert burst <= admitted <= burst + rate * elapsed_allowance, (admitted, refused[:1])
    assert refused, "twice the burst at once must be throttled"
    for error in refused:
        assert error.status_code == 429
        # Azure OpenAI's error shape: the SDK reads the message from `error.message`.
        assert THROTTLE_WORDS in error.message, error.message
        assert error.body["code"] == "RateLimitExceeded", error.body
    # The bucket refills at the plan's rate: a request is admitted again within a couple of refills.
    assert until_admitted(sdk) < 2


def test_a_caller_in_no_department_falls_under_the_default_plan(state, make_user):
    throttle = CONFIG["environments"]["dev"]["api"]["throttle"]
    sdk = client(state, make_user("gateway-openai")["access_token"])
    until_admitted(sdk)
    # Well under the stage's burst: a department's smaller limits do not apply to it.
    sales_burst = CONFIG["departments"]["sales"]["burstLimit"]
    count = min(sales_burst + 10, throttle["burstLimit"] // 2)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: call(sdk), range(count)))
    assert results.count("ok") == count, [r for r in results if r != "ok"][:1]


def test_departments_have_separate_buckets(state, make_user):
    sales = client(state, make_user("gateway-openai", "dept-sales")["access_token"])
    hr = client(state, make_user("gateway-openai", "dept-hr")["access_token"])
    until_admitted(sales)
    burst = CONFIG["departments"]["sales"]["burstLimit"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        drained = list(pool.map(lambda _: call(sales), range(2 * burst)))
    assert any(r != "ok" for r in drained), "sales' bucket was not drained"
    assert call(hr) == "ok", "another department's bucket is its own"
    until_admitted(sales)


PLANNED = "engineering"


def moto_plan(state, department: str) -> dict:
    """The department's usage plan in the local API Gateway (moto), as API Gateway answers it."""
    apigateway = aws_client(state, "apigateway")
    plans = apigateway.get_usage_plans()["items"]
    return next(p for p in plans if p["name"].endswith(f"-{department}"))


def run_job(state, job: str) -> dict:
    answer = requests.post(f"{state['control_url']}/_local/scheduler", json={"job": job}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_administrator_sets_a_departments_plan_and_the_deployments_comes_back(state, make_user, token_for):
    admin = token_for("gateway-admins")
    deployed = CONFIG["departments"][PLANNED]
    sdk = client(state, make_user("gateway-openai", f"dept-{PLANNED}")["access_token"])
    own = {"rate_limit": 1, "burst_limit": 2, "quota_per_day": 1000}
    try:
        answer = admin_call(state, "PUT", f"/departments/{PLANNED}", admin, json={"usage_plan": own})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["usage_plan"], answer.json()["usage_plan_source"]) == (own, "settings")
        plan = moto_plan(state, PLANNED)
        assert plan["throttle"] == {"rateLimit": 1.0, "burstLimit": 2}, plan
        assert plan["quota"]["limit"] == 1000 and plan["quota"]["period"] == "DAY", plan
        # API Gateway holds the new plan: twice its burst at once is throttled.
        time.sleep(2.5)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda _: call(sdk), range(6)))
        assert 1 <= results.count("ok") <= 3, results
        assert all(r == "ok" or (r.status_code == 429 and THROTTLE_WORDS in r.message) for r in results)
    finally:
        back = admin_call(state, "PUT", f"/departments/{PLANNED}", admin, json={})
    assert back.status_code == 200, back.text
    assert back.json()["usage_plan_source"] == "deployment"
    assert back.json()["usage_plan"] == {"rate_limit": deployed["rateLimit"], "burst_limit": deployed["burstLimit"],
                                         "quota_per_day": deployed["quotaPerDay"]}
    assert moto_plan(state, PLANNED)["throttle"]["burstLimit"] == deployed["burstLimit"]
    until_admitted(sdk)
    assert audited(state, "departments.update", "admin-api")


def audited(state, action: str, actor: str) -> list[dict]:
    """The audit trail's `action` events on the planned department by `actor`, once there are any."""
    deadline = time.monotonic() + 45
    while True:
        events, _ = audit_events(state)
        found = [e for e in events if (e.get("admin") or {}).get("action") == action
                 and e["admin"]["target"] == PLANNED and e["admin"]["actor"] == actor
                 and "usage_plan" in e["admin"]["changed"]]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_scheduler_puts_back_a_plan_changed_outside_the_settings(state, token_for):
    """A deploy (configured limits again) or a hand in the console: the usage-plans job restores the
    department's settings, and audits it."""
    deployed = CONFIG["departments"][PLANNED]
    plan = moto_plan(state, PLANNED)
    aws_client(state, "apigateway").update_usage_plan(
        usagePlanId=plan["id"], patchOperations=[{"op": "replace", "path": "/throttle/rateLimit", "value": "3"}])
    assert moto_plan(state, PLANNED)["throttle"]["rateLimit"] == 3
    answer = run_job(state, "usage-plans")
    assert PLANNED in answer["applied"], answer
    assert moto_plan(state, PLANNED)["throttle"] == {"rateLimit": float(deployed["rateLimit"]),
                                                    "burstLimit": deployed["burstLimit"]}
    assert run_job(state, "usage-plans")["applied"] == [], "nothing left to mend"
    assert audited(state, "departments.usage_plan.apply", "scheduler"), "the scheduler's change is audited"


def test_a_plan_is_checked_and_only_for_a_configured_department(state, token_for):
    admin = token_for("gateway-admins")
    bad = admin_call(state, "PUT", f"/departments/{PLANNED}", admin,
                     json={"usage_plan": {"rate_limit": 0, "burst_limit": 99999, "quota_per_day": 1}})
    assert bad.status_code == 400
    assert {d["field"] for d in bad.json()["error"]["details"]} == {"usage_plan.rate_limit", "usage_plan.burst_limit"}
    reader = token_for("gateway-admin-readers")
    assert admin_call(state, "PUT", f"/departments/{PLANNED}", reader,
                      json={"usage_plan": {"rate_limit": 1, "burst_limit": 1, "quota_per_day": 1}}).status_code == 403
    assert moto_plan(state, PLANNED)["throttle"]["burstLimit"] == CONFIG["departments"][PLANNED]["burstLimit"]
