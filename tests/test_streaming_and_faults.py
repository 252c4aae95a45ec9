"""Streams are relayed chunk by chunk, provider errors pass through untouched, and an upstream that hangs
ends in a clean 504 in the provider's shape.

The mocks send `mock-slow` stream chunks 300 ms apart; tests/run.sh starts the stack with
GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS=3000 so `mock-hang` (which never answers in time) times out quickly.
"""

from __future__ import annotations

import time

import botocore.exceptions
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from helpers import HTTP_TIMEOUT, assert_mentions_request_id, bedrock_runtime_client, unique_prompt

API_VERSION = "2024-10-21"
CHUNK_GAP_S = 0.3


def azure(base_url: str, token: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/azure-openai",
        api_version=API_VERSION,
        api_key=token,
        max_retries=0,
        timeout=HTTP_TIMEOUT,
    )


def gemini(base_url: str, token: str) -> genai.Client:
    return genai.Client(
        api_key=token,
        http_options=genai_types.HttpOptions(
            base_url=f"{base_url}/gemini",
            timeout=HTTP_TIMEOUT * 1000,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


def arrival_times(chunks) -> list[float]:
    started = time.monotonic()
    times = []
    for _ in chunks:
        times.append(time.monotonic() - started)
    return times


def assert_incremental(times: list[float]) -> None:
    """The first chunk reached the client while the provider was still sending the rest."""
    assert len(times) >= 3, times
    spread = times[-1] - times[0]
    assert spread >= 2 * CHUNK_GAP_S * 0.8, f"chunks arrived together (buffered?): {times}"
    assert times[0] < times[-1] - CHUNK_GAP_S, times


def test_azure_stream_is_relayed_as_it_arrives(base_url, all_token):
    stream = azure(base_url, all_token).chat.completions.create(
        model="mock-slow",
        messages=[{"role": "user", "content": unique_prompt("slow azure stream")}],
        stream=True,
    )
    assert_incremental(arrival_times(stream))


def test_gemini_stream_is_relayed_as_it_arrives(base_url, all_token):
    client = gemini(base_url, all_token)  # keep a reference: the stream closes with its client
    stream = client.models.generate_content_stream(model="mock-slow", contents=unique_prompt("slow gemini stream"))
    assert_incremental(arrival_times(stream))


def test_bedrock_event_stream_is_relayed_as_it_arrives(state, all_token, monkeypatch, tmp_path):
    client = bedrock_runtime_client(state, all_token, monkeypatch, tmp_path)
    response = client.converse_stream(
        modelId="anthropic.claude-mock-slow-v1:0",
        messages=[{"role": "user", "content": [{"text": unique_prompt("slow bedrock stream")}]}],
    )
    assert_incremental(arrival_times(response["stream"]))


def test_provider_errors_pass_through_unchanged(base_url, all_token, state, monkeypatch, tmp_path):
    with pytest.raises(openai.RateLimitError) as azure_error:
        azure(base_url, all_token).chat.completions.create(
            model="mock-error-429", messages=[{"role": "user", "content": "hi"}]
        )
    assert "(mock)" in str(azure_error.value), "the provider's own message reaches the client"

    gemini_client = gemini(base_url, all_token)
    with pytest.raises(genai_errors.ServerError) as gemini_error:
        gemini_client.models.generate_content(model="mock-error-500", contents="hi")
    assert gemini_error.value.code == 500
    assert gemini_error.value.status == "INTERNAL"

    client = bedrock_runtime_client(state, all_token, monkeypatch, tmp_path)
    with pytest.raises(botocore.exceptions.ClientError) as bedrock_error:
        client.converse(
            modelId="anthropic.claude-mock-error-429-v1:0",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )
    assert bedrock_error.value.response["Error"]["Code"] == "ThrottlingException"
    assert bedrock_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_hanging_upstream_times_out_with_504_in_provider_shape(base_url, all_token):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as azure_error:
        azure(base_url, all_token).chat.completions.create(
            model="mock-hang", messages=[{"role": "user", "content": "hi"}]
        )
    assert azure_error.value.status_code == 504
    body = azure_error.value.body
    assert body["code"] == "Timeout", body
    assert_mentions_request_id(body["message"])
    assert time.monotonic() - started < 20, "the gateway's deadline, not the client's, ended the call"

    gemini_client = gemini(base_url, all_token)
    with pytest.raises(genai_errors.ServerError) as gemini_error:
        gemini_client.models.generate_content(model="mock-hang", contents="hi")
    assert gemini_error.value.code == 504
    assert gemini_error.value.status == "DEADLINE_EXCEEDED"
