"""/bedrock-claude beyond the provider contract (test_provider_contract.py, which speaks the Converse
API): InvokeModel with an Anthropic messages body, its response stream, and the X-Amzn-Bedrock-*
settings headers. Driven by boto3's bedrock-runtime client with the bearer token, built as
tests/adapters/bedrock_claude.py builds it.
"""

from __future__ import annotations

import json

import pytest

from adapters.bedrock_claude import ADAPTER, MODEL_ID, model_path, sdk_client
from contract import assert_clean_upstream
from helpers import BEDROCK, header, single_request, unique_prompt


@pytest.fixture
def bedrock(all_token, client_env):
    return sdk_client(client_env, all_token)


def assert_signed_upstream(record: dict, token: str, operation: str) -> None:
    """SigV4-signed with the gateway's role (no secret to compare: `secrets` is `{}`), nothing of the client's."""
    assert_clean_upstream(ADAPTER, record, {}, token, f"{model_path(MODEL_ID)}/{operation}", {})


def anthropic_body(prompt: str) -> str:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }
    )


def test_invoke_model(bedrock, state, all_token, clear_mocks):
    prompt = unique_prompt("brinvoke")
    resp = bedrock.invoke_model(
        modelId=MODEL_ID,
        body=anthropic_body(prompt),
        contentType="application/json",
        accept="application/json",
    )

    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    payload = json.loads(resp["body"].read())
    assert payload.get("type") == "message", payload
    text = "".join(block.get("text", "") for block in payload["content"] if block.get("type") == "text")
    assert prompt in text, payload
    assert payload["usage"]["input_tokens"] > 0 and payload["usage"]["output_tokens"] > 0

    assert_signed_upstream(single_request(state, BEDROCK, "/invoke"), all_token, "invoke")


def test_invoke_model_with_response_stream(bedrock, state, all_token, clear_mocks):
    prompt = unique_prompt("brstream")
    resp = bedrock.invoke_model_with_response_stream(
        modelId=MODEL_ID,
        body=anthropic_body(prompt),
        contentType="application/json",
        accept="application/json",
    )

    events = []
    for event in resp["body"]:
        assert "chunk" in event, f"unexpected stream event {event!r}"
        events.append(json.loads(event["chunk"]["bytes"]))

    types = [e.get("type") for e in events]
    assert len(events) >= 3, types
    assert types[0] == "message_start", types
    assert types[-1] == "message_stop", types
    deltas = [
        e["delta"]["text"]
        for e in events
        if e.get("type") == "content_block_delta" and e.get("delta", {}).get("type") == "text_delta"
    ]
    assert len(deltas) >= 2, types
    assert prompt in "".join(deltas)

    assert_signed_upstream(
        single_request(state, BEDROCK, "/invoke-with-response-stream"),
        all_token,
        "invoke-with-response-stream",
    )


def test_bedrock_api_headers_reach_upstream(bedrock, state, all_token, clear_mocks):
    """Guardrail and trace settings travel as X-Amzn-Bedrock-* headers and must not be stripped."""
    bedrock.invoke_model(
        modelId=MODEL_ID,
        body=anthropic_body(unique_prompt("brguardrail")),
        contentType="application/json",
        accept="application/json",
        guardrailIdentifier="gr-test-1",
        guardrailVersion="1",
        trace="ENABLED",
    )
    record = single_request(state, BEDROCK, "/invoke")
    assert header(record, "x-amzn-bedrock-guardrailidentifier") == "gr-test-1"
    assert header(record, "x-amzn-bedrock-guardrailversion") == "1"
    assert header(record, "x-amzn-bedrock-trace") == "ENABLED"
    assert_signed_upstream(record, all_token, "invoke")
