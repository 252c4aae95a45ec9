"""The data plane's promise, tried as an attacker would: what leaves for a provider is exactly what was
authorized. Each request below once reached another provider API with the gateway's own key (path
confusion through backslashes and dot segments, operations that ignored the method, a model id carrying
a path). Sent as raw request lines (no client library normalizes them), with a token holding every
scope, each must be refused in the provider's error shape, and the mocks' journals prove nothing went
upstream, on both transports.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from helpers import AZURE, HTTP_TIMEOUT, clear_mock, mock_requests

API = "api-version=2024-10-21"

CASES = [
    # (name, method, path, expected status)
    (
        "azure backslash walk to audio/speech",
        "POST",
        "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x\\..\\..\\..\\audio\\speech?" + API,
        400,
    ),
    (
        "azure backslash walk to v1/files",
        "POST",
        "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x\\..\\..\\..\\..\\..\\v1\\files?" + API,
        400,
    ),
    (
        "azure encoded backslash",
        "POST",
        "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x%5c..%5c..%5caudio%5cspeech?" + API,
        400,
    ),
    (
        "azure encoded dot segments",
        "POST",
        "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/%2e%2e/%2e%2e/audio/speech?" + API,
        400,
    ),
    (
        "azure double-encoded dot segments",
        "POST",
        "/azure-openai/openai/deployments/gpt-4o-mini/%252e%252e/audio/speech?" + API,
        400,
    ),
    ("azure path parameter", "POST", "/azure-openai/openai/deployments/gpt-4o-mini;x=1/chat/completions?" + API, 400),
    ("azure empty segment", "POST", "/azure-openai/openai//deployments/gpt-4o-mini/chat/completions?" + API, 400),
    ("azure deeper path, no prefix fallback", "POST", "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions/x?" + API, 404),
    ("azure list stored completions", "GET", "/azure-openai/openai/v1/chat/completions", 403),
    ("azure stored completion messages", "GET", "/azure-openai/openai/v1/chat/completions/chatcmpl-1/messages", 403),
    ("azure delete a response", "DELETE", "/azure-openai/openai/v1/responses/resp_1", 403),
    ("azure list files", "GET", "/azure-openai/openai/files?" + API, 403),
    ("azure GET of an inference path", "GET", "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions?" + API, 404),
    (
        "gemini backslash walk to veo",
        "POST",
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent.\\..\\veo-3.0-generate-001:predictLongRunning",
        400,
    ),
    ("gemini backslash walk to files", "GET", "/gemini/v1beta/models/gemini-2.0-flash:generateContent.\\..\\..\\..\\v1beta\\files", 400),
    ("gemini full-width dots", "POST", "/gemini/v1beta/models/%EF%BC%8E%EF%BC%8E/x:generateContent", 400),
    ("gemini files", "GET", "/gemini/v1beta/files", 403),
    ("gemini cached contents", "GET", "/gemini/v1beta/cachedContents", 403),
    ("gemini unknown method", "POST", "/gemini/v1beta/models/gemini-2.0-flash:deleteEverything", 404),
    (
        "bedrock model id carrying a path",
        "POST",
        "/bedrock-claude/model/anthropic.claude-3-5-sonnet-20241022-v2:0%2F..%2Famazon.nova-pro-v1:0/invoke",
        404,
    ),
    ("bedrock non-claude model", "POST", "/bedrock-claude/model/amazon.nova-pro-v1:0/invoke", 403),
    ("bedrock GET", "GET", "/bedrock-claude/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke", 404),
]


def raw_request(base_url: str, method: str, path: str, token: str, headers: dict | None = None):
    """Sends the request line exactly as given; returns (status, headers, body bytes)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        all_headers = {
            "api-key": token,
            "x-goog-api-key": token,
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            **(headers or {}),
        }
        body = b'{"messages":[{"role":"user","content":"hi"}]}' if method in ("POST", "PUT") else b""
        all_headers["content-length"] = str(len(body))
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name,method,path,status", CASES, ids=[c[0] for c in CASES])
def test_confused_requests_are_refused_and_never_relayed(
    name, method, path, status, base_url, all_token, untouched_upstreams
):
    got, headers, body = raw_request(base_url, method, path, all_token)
    assert got == status, f"{name}: {method} {path} -> {got} {body[:300]!r}"
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower.get("x-gateway-request-id"), headers
    if path.startswith("/bedrock-claude/"):
        assert lower.get("x-amzn-errortype"), headers
        assert json.loads(body)["message"]
    else:
        error = json.loads(body)["error"]
        assert error["message"] and lower["x-gateway-request-id"] in error["message"]
    if status == 403 and ("files" in path or "stored" in name or "responses/" in path):
        assert "shared key" in json.loads(body)["error"]["message"]


def test_a_header_the_adapter_choked_on_is_only_a_header(base_url, all_token, state):
    """`X-Forwarded-Proto: a b` once made the Lambda HTTP adapter panic (and end the process)."""
    clear_mock(state, AZURE)
    path = "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions?" + API
    status, _, body = raw_request(base_url, "POST", path, all_token, {"X-Forwarded-Proto": "a b"})
    assert status == 200, body
    # The stack is still up and relaying.
    status, _, _ = raw_request(base_url, "POST", path, all_token)
    assert status == 200
    forwarded = mock_requests(state, AZURE)
    assert len(forwarded) == 2
    assert all(r["path"] == "/openai/deployments/gpt-4o-mini/chat/completions" for r in forwarded), forwarded


def test_a_method_override_header_never_reaches_the_provider(base_url, all_token, state):
    """Google's front end (and others) read `X-HTTP-Method-Override` as the request's method: the method
    the gateway authorized is the one that leaves, so every such header is dropped."""
    clear_mock(state, AZURE)
    path = "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions?" + API
    overrides = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "GET", "X-Method-Override": "PATCH"}
    status, _, body = raw_request(base_url, "POST", path, all_token, overrides)
    assert status == 200, body
    [forwarded] = mock_requests(state, AZURE)
    assert forwarded["method"] == "POST", forwarded
    sent = {name.lower() for name in forwarded["headers"]}
    assert not sent & {name.lower() for name in overrides}, sorted(sent)
