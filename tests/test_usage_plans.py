"""Usage plans as the local stack emulates them (local/src/usage_plans.rs): the authorizer's
usage-plan key picks the caller's department plan (config/gateway.json `departments`: rate, burst,
daily quota) or the `default` plan (the stage's throttle), and a request past the plan's rate gets
API Gateway's 429 in the provider's error shape, which the stock SDK raises as its rate-limit error.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from helpers import HTTP_TIMEOUT

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
