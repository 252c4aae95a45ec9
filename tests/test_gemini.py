"""Gemini route, driven by the google-genai SDK and by raw HTTP (`?key=`)."""

from __future__ import annotations

import pytest
import requests
from google import genai
from google.genai import types

from helpers import (
    GEMINI,
    HTTP_TIMEOUT,
    assert_no_client_credential,
    clear_mock,
    header,
    query_params,
    single_request,
    unique_prompt,
)

MODEL = "gemini-2.0-flash"


def gemini_client(base_url: str, token: str) -> genai.Client:
    return genai.Client(
        api_key=token,
        http_options=types.HttpOptions(base_url=f"{base_url}/gemini", timeout=HTTP_TIMEOUT * 1000),
    )


@pytest.fixture
def gemini(state, base_url, all_token) -> genai.Client:
    clear_mock(state, GEMINI)
    return gemini_client(base_url, all_token)


def assert_clean_upstream(record: dict, secrets: dict, token: str, method_suffix: str) -> None:
    assert record["method"] == "POST"
    assert record["path"].endswith(f"/models/{MODEL}:{method_suffix}"), record["path"]
    assert header(record, "x-goog-api-key") == secrets[GEMINI], "gateway must inject the Secrets Manager key"
    assert header(record, "authorization") is None, "client Authorization must not be forwarded"
    assert "key" not in query_params(record), f"no key= may reach upstream: {record.get('query')!r}"
    assert "key=" not in (record.get("query") or "")
    assert_no_client_credential(record, token)


def test_generate_content(gemini, state, secrets, all_token):
    prompt = unique_prompt("gmgen")
    resp = gemini.models.generate_content(model=MODEL, contents=prompt)

    assert prompt in resp.text, resp
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.total_token_count > 0, resp.usage_metadata

    assert_clean_upstream(single_request(state, GEMINI, ":generateContent"), secrets, all_token, "generateContent")


def test_generate_content_stream(gemini, state, secrets, all_token):
    prompt = unique_prompt("gmstream")
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents=prompt))

    assert len(chunks) >= 3, f"expected a real stream, got {len(chunks)} chunk(s)"
    text = "".join(chunk.text or "" for chunk in chunks)
    assert prompt in text, text

    record = single_request(state, GEMINI, ":streamGenerateContent")
    assert_clean_upstream(record, secrets, all_token, "streamGenerateContent")
    assert query_params(record).get("alt") == ["sse"], record.get("query")


def test_count_tokens(gemini, state, secrets, all_token):
    resp = gemini.models.count_tokens(model=MODEL, contents=unique_prompt("gmcount"))

    assert resp.total_tokens > 0, resp

    assert_clean_upstream(single_request(state, GEMINI, ":countTokens"), secrets, all_token, "countTokens")


def test_raw_http_key_query_parameter(state, base_url, secrets, all_token):
    """`?key=<token>` (the Gemini REST convention) authenticates and is stripped."""
    clear_mock(state, GEMINI)
    prompt = unique_prompt("gmraw")
    resp = requests.post(
        f"{base_url}/gemini/v1beta/models/{MODEL}:generateContent",
        params={"key": all_token},
        json={"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
        timeout=HTTP_TIMEOUT,
    )

    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    text = "".join(part.get("text", "") for part in body["candidates"][0]["content"]["parts"])
    assert prompt in text, body
    assert body["usageMetadata"]["totalTokenCount"] > 0

    record = single_request(state, GEMINI, ":generateContent")
    assert record["path"] == f"/v1beta/models/{MODEL}:generateContent", record["path"]
    assert_clean_upstream(record, secrets, all_token, "generateContent")
