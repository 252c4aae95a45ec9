"""Authentication and authorization failures, as each SDK's user sees them.

Every rejected call must surface as the SDK's normal exception type with a
readable message (and, for the OpenAI and Gemini routes, a request id in the
error body), and must never reach the provider mock.
"""

from __future__ import annotations

import json
import time

import botocore.exceptions
import openai
import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from helpers import (
    AZURE,
    BEDROCK,
    GEMINI,
    HTTP_TIMEOUT,
    alg_none_token,
    assert_mentions_request_id,
    bedrock_runtime_client,
    clear_mock,
    expired_claims,
    mock_requests,
    sign_with_foreign_key,
    sign_with_moto_key,
    unique_prompt,
    unverified_claims,
    unverified_header,
)

AZURE_API_VERSION = "2024-10-21"
AZURE_DEPLOYMENT = "gpt-4o"
GEMINI_MODEL = "gemini-2.0-flash"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NO_TOKEN_PLACEHOLDER = "placeholder-not-sent"


# --------------------------------------------------------------------------
# Clients and calls
# --------------------------------------------------------------------------


def azure_client(base_url: str, token: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/azure-openai",
        api_version=AZURE_API_VERSION,
        api_key=token,
        max_retries=0,
        timeout=HTTP_TIMEOUT,
    )


def azure_chat(client: openai.AzureOpenAI, **kwargs):
    return client.chat.completions.create(
        model=AZURE_DEPLOYMENT,
        messages=[{"role": "user", "content": unique_prompt("neg")}],
        **kwargs,
    )


def gemini_client(base_url: str, token: str) -> genai.Client:
    return genai.Client(
        api_key=token,
        http_options=genai_types.HttpOptions(base_url=f"{base_url}/gemini", timeout=HTTP_TIMEOUT * 1000),
    )


def gemini_generate(client: genai.Client):
    return client.models.generate_content(model=GEMINI_MODEL, contents=unique_prompt("neg"))


def bedrock_converse(client):
    return client.converse(
        modelId=BEDROCK_MODEL,
        messages=[{"role": "user", "content": [{"text": unique_prompt("neg")}]}],
        inferenceConfig={"maxTokens": 64},
    )


# --------------------------------------------------------------------------
# Assertions on the SDK errors
# --------------------------------------------------------------------------


def assert_openai_error(exc: openai.APIStatusError, status: int) -> None:
    assert exc.status_code == status, exc
    text = str(exc)
    assert text and text != f"Error code: {status}", f"unreadable error: {text!r}"
    assert "<html" not in exc.response.text.lower(), exc.response.text[:200]
    assert_mentions_request_id(text, exc.response.text)


def assert_genai_error(exc: genai_errors.ClientError, status: int) -> None:
    assert exc.code == status, exc
    assert exc.message, f"gemini error without a message: {exc!r}"
    assert_mentions_request_id(exc.message, str(exc), json.dumps(exc.details, default=str))


def assert_boto_error(exc: botocore.exceptions.ClientError, status: int, code: str | None = None) -> None:
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == status, exc.response
    error = exc.response.get("Error", {})
    if code is not None:
        assert error.get("Code") == code, error
    assert error.get("Message"), f"bedrock error without a message: {exc.response!r}"


# --------------------------------------------------------------------------
# Bad tokens
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_claims(all_token) -> dict:
    claims = unverified_claims(all_token)
    assert claims.get("token_use") == "access", claims
    assert unverified_header(all_token).get("kid") == "dummy", "moto signs with kid 'dummy'"
    return claims


@pytest.fixture(scope="module")
def bad_tokens(real_claims, all_user) -> dict:
    id_token = all_user["id_token"]
    assert unverified_claims(id_token).get("token_use") == "id"
    return {
        "junk": "x",
        "expired": sign_with_moto_key(expired_claims(real_claims)),
        "foreign_key": sign_with_foreign_key(real_claims),
        "alg_none": alg_none_token(real_claims),
        "id_token": id_token,
    }


BAD_TOKEN_KINDS = ["junk", "expired", "foreign_key", "alg_none", "id_token"]


def test_resigned_access_token_is_accepted(base_url, real_claims, state):
    """Control for the 'expired' case: the same claims, signed the same way
    with moto's key but not expired, are accepted. So the 401 below is about
    `exp`, not about how the suite signs tokens."""
    clear_mock(state, AZURE)
    claims = dict(real_claims)
    claims["exp"] = int(time.time()) + 600
    token = sign_with_moto_key(claims)
    resp = azure_chat(azure_client(base_url, token))
    assert resp.choices[0].message.content
    assert len(mock_requests(state, AZURE)) == 1


def test_azure_no_token(base_url, untouched_upstreams):
    # openai>=2 refuses api_key="" client-side, so build a client and strip
    # the api-key header from the request: nothing authenticates it.
    client = azure_client(base_url, NO_TOKEN_PLACEHOLDER)
    with pytest.raises(openai.AuthenticationError) as info:
        azure_chat(client, extra_headers={"api-key": openai.Omit()})
    assert_openai_error(info.value, 401)


def test_gemini_no_token_raw(base_url, untouched_upstreams):
    resp = requests.post(
        f"{base_url}/gemini/v1beta/models/{GEMINI_MODEL}:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 401, resp.text[:300]
    assert_mentions_request_id(resp.text)


def test_bedrock_no_token_raw(https_base_url, state, untouched_upstreams):
    resp = requests.post(
        f"{https_base_url}/bedrock-claude/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse",
        json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        verify=state["ca_bundle"],
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 401, resp.text[:300]


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_azure_rejects_bad_token(kind, bad_tokens, base_url, untouched_upstreams):
    with pytest.raises(openai.AuthenticationError) as info:
        azure_chat(azure_client(base_url, bad_tokens[kind]))
    assert_openai_error(info.value, 401)


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_azure_rejects_bad_bearer_token(kind, bad_tokens, base_url, untouched_upstreams):
    client = openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/azure-openai",
        api_version=AZURE_API_VERSION,
        azure_ad_token=bad_tokens[kind],
        max_retries=0,
        timeout=HTTP_TIMEOUT,
    )
    with pytest.raises(openai.AuthenticationError) as info:
        azure_chat(client)
    assert_openai_error(info.value, 401)


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_gemini_rejects_bad_token(kind, bad_tokens, base_url, untouched_upstreams):
    with pytest.raises(genai_errors.ClientError) as info:
        gemini_generate(gemini_client(base_url, bad_tokens[kind]))
    assert_genai_error(info.value, 401)


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_bedrock_rejects_bad_token(kind, bad_tokens, state, monkeypatch, tmp_path, untouched_upstreams):
    client = bedrock_runtime_client(state, bad_tokens[kind], monkeypatch, tmp_path)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bedrock_converse(client)
    assert_boto_error(info.value, 401)


def test_gemini_key_query_rejects_bad_token(bad_tokens, base_url, untouched_upstreams):
    resp = requests.post(
        f"{base_url}/gemini/v1beta/models/{GEMINI_MODEL}:generateContent",
        params={"key": bad_tokens["expired"]},
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 401, resp.text[:300]
    assert_mentions_request_id(resp.text)


# --------------------------------------------------------------------------
# Scopes (Cognito groups)
# --------------------------------------------------------------------------


def test_openai_only_token_forbidden_on_gemini(openai_only_token, base_url, untouched_upstreams):
    with pytest.raises(genai_errors.ClientError) as info:
        gemini_generate(gemini_client(base_url, openai_only_token))
    assert_genai_error(info.value, 403)


def test_openai_only_token_forbidden_on_bedrock(openai_only_token, state, monkeypatch, tmp_path, untouched_upstreams):
    client = bedrock_runtime_client(state, openai_only_token, monkeypatch, tmp_path)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bedrock_converse(client)
    assert_boto_error(info.value, 403, code="AccessDeniedException")


def test_text_token_forbidden_on_audio(text_token, base_url, untouched_upstreams):
    client = azure_client(base_url, text_token)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.audio.transcriptions.create(
            model="whisper",
            file=("a.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
        )
    assert_openai_error(info.value, 403)


# Positive controls: the same tokens do work where their groups allow, so the
# 403s above are about scope, not about broken tokens.


def test_openai_only_token_allowed_on_azure(openai_only_token, base_url, state):
    clear_mock(state, AZURE)
    resp = azure_chat(azure_client(base_url, openai_only_token))
    assert resp.choices[0].message.content
    assert len(mock_requests(state, AZURE)) == 1


@pytest.mark.parametrize("route", ["azure", "gemini", "bedrock"])
def test_text_token_allowed_on_text_routes(route, text_token, base_url, state, monkeypatch, tmp_path):
    if route == "azure":
        clear_mock(state, AZURE)
        assert azure_chat(azure_client(base_url, text_token)).choices[0].message.content
        assert len(mock_requests(state, AZURE)) == 1
    elif route == "gemini":
        clear_mock(state, GEMINI)
        assert gemini_generate(gemini_client(base_url, text_token)).text
        assert len(mock_requests(state, GEMINI)) == 1
    else:
        clear_mock(state, BEDROCK)
        client = bedrock_runtime_client(state, text_token, monkeypatch, tmp_path)
        assert bedrock_converse(client)["output"]["message"]["content"]
        assert len(mock_requests(state, BEDROCK)) == 1
