"""Every request's outcome carries its cost (issue 13, cost): the audit writer prices the final record's
usage from the price table (config/prices.json) on the request's day; a model the table does not price
is flagged (`cost_status` unknown_model, `cost_usd` empty), never counted as free."""

from __future__ import annotations

import json

import pytest
import requests

import helpers

API = "api-version=2024-10-21"
PRICES = json.loads((helpers.REPO_ROOT / "config" / "prices.json").read_text(encoding="utf-8"))


def price_of(provider: str, pattern: str) -> dict:
    return next(p for p in PRICES["prices"] if p["provider"] == provider and p["model"] == pattern)


def final_of(state: dict, request_id: str) -> dict:
    events, _ = helpers.wait_for_events(state, {request_id})
    finals = [e for e in events if e["request_id"] == request_id and helpers.is_final(e)]
    assert len(finals) == 1, finals
    return finals[0]


def chat(state: dict, token: str, deployment: str) -> str:
    resp = requests.post(
        f"{state['base_url']}/azure-openai/openai/deployments/{deployment}/chat/completions?{API}",
        headers={"api-key": token}, json={"messages": [{"role": "user", "content": "what does this cost"}]},
        timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-amzn-requestid"]


def test_a_request_is_priced_at_the_tables_rate(state, all_token):
    event = final_of(state, chat(state, all_token, "gpt-4o-mini"))
    assert event["model"] == "gpt-4o-mini" and event["usage"]
    price = price_of("azure-openai", "gpt-4o-mini*")
    expected = (event["usage"]["input_tokens"] * price["input_per_mtok"]
                + event["usage"]["output_tokens"] * price["output_per_mtok"]) / 1_000_000
    assert event["cost_status"] == "priced"
    assert event["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert event["cost_usd"] > 0


def test_a_model_without_a_price_is_flagged_not_free(state, all_token):
    event = final_of(state, chat(state, all_token, "unpriced-model-x"))
    assert event["usage"], "the request was relayed and used tokens"
    assert event["cost_status"] == "unknown_model"
    assert event["cost_usd"] is None


def test_prompt_cache_reads_and_writes_are_input_billed_at_their_rates(state, all_token, client_env):
    """Anthropic reports cache reads and writes beside `input_tokens`: the gateway counts them as input
    (a budget and chargeback see every token) and prices each at its rate. Driven by boto3."""
    from adapters.bedrock_claude import MODEL_ID, sdk_client

    bedrock = sdk_client(client_env, all_token)
    system = [{"type": "text", "text": f"house rules {helpers.unique_prompt('cache')} " + "be brief " * 40,
               "cache_control": {"type": "ephemeral"}}]
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "system": system,
                       "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    finals = []
    for _ in range(2):
        resp = bedrock.invoke_model(modelId=MODEL_ID, body=body, contentType="application/json")
        reported = json.loads(resp["body"].read())["usage"]
        finals.append((reported, final_of(state, resp["ResponseMetadata"]["HTTPHeaders"]["x-gateway-request-id"])))

    (wrote, first), (read, second) = finals
    assert wrote["cache_creation_input_tokens"] > 0 and read["cache_read_input_tokens"] > 0
    cached = wrote["cache_creation_input_tokens"]
    price = price_of("bedrock-claude", "*anthropic.claude-3-5-sonnet*")
    assert first["region"] == state["region"] and second["region"] == state["region"]
    for reported, event, field, rate in ((wrote, first, "cache_write_tokens", "cache_write_per_mtok"),
                                         (read, second, "cached_input_tokens", "cached_input_per_mtok")):
        usage = event["usage"]
        assert usage["input_tokens"] == reported["input_tokens"] + cached, usage
        assert usage[field] == cached, usage
        expected = ((reported["input_tokens"] * price["input_per_mtok"] + cached * price[rate]
                     + usage["output_tokens"] * price["output_per_mtok"]) / 1_000_000)
        assert event["cost_status"] == "priced"
        assert event["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert second["cost_usd"] < first["cost_usd"], "a cache read is cheaper than the write"
