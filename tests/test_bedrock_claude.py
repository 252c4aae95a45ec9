"""Bedrock (Claude) route, driven by boto3's bedrock-runtime client.

The client authenticates with the gateway token through
AWS_BEARER_TOKEN_BEDROCK (botocore sends `Authorization: Bearer <token>`,
which it only allows over HTTPS, hence the gateway's TLS listener). The
gateway must re-sign the upstream call with SigV4.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from helpers import (
    BEDROCK,
    assert_no_client_credential,
    bedrock_runtime_client,
    clear_mock,
    header,
    single_request,
    unique_prompt,
)

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
# boto3 percent-encodes the ':' in the model id; the gateway must forward the
# path byte-for-byte (SigV4 signs the encoded path).
ENCODED_MODEL_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
assert ENCODED_MODEL_PATH == "/model/" + quote(MODEL_ID, safe="")


@pytest.fixture
def bedrock(state, all_token, monkeypatch, tmp_path):
    clear_mock(state, BEDROCK)
    return bedrock_runtime_client(state, all_token, monkeypatch, tmp_path)


def assert_signed_upstream(record: dict, token: str, operation: str) -> None:
    assert record["method"] == "POST"
    assert record["path"] == f"{ENCODED_MODEL_PATH}/{operation}", record["path"]
    auth = header(record, "authorization") or ""
    assert auth.startswith("AWS4-HMAC-SHA256 Credential="), f"upstream must be SigV4-signed, got {auth[:60]!r}"
    assert "/bedrock/aws4_request" in auth, f"SigV4 scope must be the bedrock service: {auth[:120]!r}"
    assert header(record, "x-amz-date"), "SigV4 needs x-amz-date"
    assert "bearer" not in auth.lower()
    assert_no_client_credential(record, token)


def anthropic_body(prompt: str) -> str:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }
    )


def test_invoke_model(bedrock, state, all_token):
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


def test_invoke_model_with_response_stream(bedrock, state, all_token):
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


def test_converse(bedrock, state, all_token):
    prompt = unique_prompt("brconverse")
    resp = bedrock.converse(
        modelId=MODEL_ID,
        messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": 256},
    )

    message = resp["output"]["message"]
    assert message["role"] == "assistant"
    text = "".join(block.get("text", "") for block in message["content"])
    assert prompt in text, resp["output"]
    assert resp["stopReason"]
    assert resp["usage"]["totalTokens"] > 0, resp["usage"]

    assert_signed_upstream(single_request(state, BEDROCK, "/converse"), all_token, "converse")


def test_converse_stream(bedrock, state, all_token):
    prompt = unique_prompt("brconvstream")
    resp = bedrock.converse_stream(
        modelId=MODEL_ID,
        messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": 256},
    )

    kinds, texts, metadata = [], [], None
    for event in resp["stream"]:
        (kind,) = event.keys()
        kinds.append(kind)
        if kind == "contentBlockDelta":
            texts.append(event[kind]["delta"].get("text", ""))
        elif kind == "metadata":
            metadata = event[kind]

    assert kinds[0] == "messageStart", kinds
    assert "messageStop" in kinds, kinds
    assert len(texts) >= 2, kinds
    assert prompt in "".join(texts)
    assert metadata is not None, f"no metadata event in {kinds}"
    assert metadata["usage"]["totalTokens"] > 0, metadata

    assert_signed_upstream(single_request(state, BEDROCK, "/converse-stream"), all_token, "converse-stream")


def test_bedrock_api_headers_reach_upstream(bedrock, state, all_token):
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
