"""Azure OpenAI route, driven by the official openai SDK (AzureOpenAI client).

Every test runs twice: with the gateway token passed as `api_key` (sent as the
`api-key` header) and as `azure_ad_token` (sent as `Authorization: Bearer`).
"""

from __future__ import annotations

import openai
import pytest

from helpers import (
    AZURE,
    HTTP_TIMEOUT,
    assert_no_client_credential,
    clear_mock,
    header,
    query_params,
    request_id_headers,
    single_request,
    unique_prompt,
)

API_VERSION = "2024-10-21"
CHAT_DEPLOYMENT = "gpt-4o"
EMBED_DEPLOYMENT = "text-embedding-3-small"
LEAKY_COOKIE = "session=leak"


@pytest.fixture(params=["api_key", "azure_ad_token"])
def azure_client(request, base_url, all_token) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/azure-openai",
        api_version=API_VERSION,
        default_headers={"Cookie": LEAKY_COOKIE},
        max_retries=0,
        timeout=HTTP_TIMEOUT,
        **{request.param: all_token},
    )


@pytest.fixture
def azure_journal(state):
    clear_mock(state, AZURE)
    return state


def assert_clean_upstream(record: dict, secrets: dict, token: str, deployment: str, operation: str) -> None:
    """What the Azure mock received: the injected key, nothing of the client's."""
    assert record["method"] == "POST"
    assert record["path"] == f"/openai/deployments/{deployment}/{operation}", record["path"]
    assert query_params(record).get("api-version") == [API_VERSION], record.get("query")
    assert header(record, "api-key") == secrets[AZURE], "gateway must inject the Secrets Manager key"
    assert header(record, "authorization") is None, "client Authorization header must not be forwarded"
    assert header(record, "cookie") is None, "client cookies must not be forwarded"
    assert_no_client_credential(record, token)


def test_chat_completion(azure_client, azure_journal, secrets, all_token):
    prompt = unique_prompt("azchat")
    resp = azure_client.chat.completions.create(
        model=CHAT_DEPLOYMENT,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": prompt},
        ],
    )

    assert resp.choices, resp
    content = resp.choices[0].message.content
    assert prompt in content, content
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage is not None and resp.usage.total_tokens > 0, resp.usage

    record = single_request(azure_journal, AZURE, "/chat/completions")
    assert_clean_upstream(record, secrets, all_token, CHAT_DEPLOYMENT, "chat/completions")
    assert record["body_len"] > 0


def test_chat_completion_stream(azure_client, azure_journal, secrets, all_token):
    prompt = unique_prompt("azstream")
    stream = azure_client.chat.completions.create(
        model=CHAT_DEPLOYMENT,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert len(chunks) >= 3, f"expected a real stream, got {len(chunks)} chunk(s)"
    text = "".join(
        choice.delta.content or ""
        for chunk in chunks
        for choice in chunk.choices
        if choice.delta is not None
    )
    assert prompt in text, text
    last = chunks[-1]
    assert last.usage is not None, "include_usage asks for usage in the final chunk"
    assert last.usage.total_tokens > 0
    assert not last.choices, "the usage chunk carries no choices"

    record = single_request(azure_journal, AZURE, "/chat/completions")
    assert_clean_upstream(record, secrets, all_token, CHAT_DEPLOYMENT, "chat/completions")


def test_embeddings(azure_client, azure_journal, secrets, all_token):
    resp = azure_client.embeddings.create(model=EMBED_DEPLOYMENT, input=unique_prompt("azembed"))

    assert len(resp.data) == 1
    vector = resp.data[0].embedding
    assert isinstance(vector, list) and len(vector) == 8, vector
    assert all(isinstance(x, float) for x in vector), vector
    assert resp.usage.total_tokens > 0

    record = single_request(azure_journal, AZURE, "/embeddings")
    assert_clean_upstream(record, secrets, all_token, EMBED_DEPLOYMENT, "embeddings")


def test_raw_response_status_and_request_id(azure_client, azure_journal, secrets, all_token):
    prompt = unique_prompt("azraw")
    raw = azure_client.chat.completions.with_raw_response.create(
        model=CHAT_DEPLOYMENT,
        messages=[{"role": "user", "content": prompt}],
    )

    assert raw.status_code == 200
    ids = request_id_headers(raw.headers)
    assert ids, f"expected a request id header (x-amzn-requestid or similar), got {dict(raw.headers)}"
    completion = raw.parse()
    assert prompt in completion.choices[0].message.content

    record = single_request(azure_journal, AZURE, "/chat/completions")
    assert_clean_upstream(record, secrets, all_token, CHAT_DEPLOYMENT, "chat/completions")
