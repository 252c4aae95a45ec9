"""/gemini through the google-genai SDK, and through raw HTTP with `?key=`.

Credential places: `api_key` (the SDK sends it as `x-goog-api-key`) and `key_query` (the Gemini REST
convention, `?key=<token>`, raw HTTP). The gateway strips both and injects the Gemini key from Secrets
Manager as `x-goog-api-key`.
"""

from __future__ import annotations

import json

import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from contract import (
    LEAKY_COOKIE,
    RUN,
    Adapter,
    Env,
    OptOut,
    Reply,
    SeenError,
    Session,
    StreamResult,
    Usage,
    lower_headers,
    timed,
)
from helpers import GEMINI, HTTP_TIMEOUT, header, query_params

MODEL = "gemini-2.0-flash"
REST_VERSION = "v1beta"  # what the REST examples (and so the raw HTTP client) use


def sdk_client(base_url: str, token: str) -> genai.Client:
    """The genai client with the token as api_key, one attempt only, and a cookie that must not travel."""
    return genai.Client(
        api_key=token,
        http_options=genai_types.HttpOptions(
            base_url=f"{base_url}/gemini",
            timeout=HTTP_TIMEOUT * 1000,
            headers={"Cookie": LEAKY_COOKIE},
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


class GeminiSdkSession(Session):
    def __init__(self, client: genai.Client, token: str):
        self.client = client  # keep a reference: a stream closes with its client
        self.place = "api_key"
        self.token = token
        # The API version the SDK puts in its paths (it picks one itself).
        self.version = client._api_client._http_options.api_version

    def call(self, prompt: str, model: str | None = None) -> Reply:
        resp = self.client.models.generate_content(model=model or MODEL, contents=prompt)
        meta = resp.usage_metadata
        assert meta is not None, resp
        return Reply(
            text=resp.text,
            usage=Usage(meta.prompt_token_count, meta.candidates_token_count, meta.total_token_count),
            headers=lower_headers(resp.sdk_http_response.headers),
        )

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        chunks, times = timed(self.client.models.generate_content_stream(model=model or MODEL, contents=prompt))
        pieces = [chunk.text for chunk in chunks if chunk.text]
        finishes = [c.candidates[0].finish_reason if c.candidates else None for c in chunks]
        # The end: only the last chunk says STOP.
        ended = bool(chunks) and finishes[-1] == genai_types.FinishReason.STOP and all(f is None for f in finishes[:-1])
        meta = chunks[-1].usage_metadata if chunks else None
        return StreamResult(
            pieces=pieces,
            ended=ended,
            usage=Usage(meta.prompt_token_count, meta.candidates_token_count, meta.total_token_count) if meta else None,
            headers=lower_headers(chunks[0].sdk_http_response.headers) if chunks else {},
            times=times,
        )

    def error_class(self, status: int) -> type[BaseException]:
        return genai_errors.ServerError if status >= 500 else genai_errors.ClientError

    def read_error(self, exc: BaseException) -> SeenError:
        assert isinstance(exc, genai_errors.APIError), exc
        return SeenError(
            status=exc.code,
            code=exc.status,
            message=exc.message or "",
            shown=str(exc),
            body=json.dumps(exc.details, default=str),
            headers=lower_headers(exc.response.headers),
        )


class GeminiHttpSession(Session):
    """Raw HTTP to the REST API with `?key=<token>` (or no token at all)."""

    version = REST_VERSION

    def __init__(self, env: Env, token: str | None):
        self.base = env.state["base_url"].rstrip("/") + f"/gemini/{REST_VERSION}/models"
        self.place = "key_query" if token is not None else "none"
        self.token = token

    def _post(self, model: str, method: str, prompt: str, params: dict, stream: bool) -> requests.Response:
        if self.token is not None:
            params = {**params, "key": self.token}
        resp = requests.post(
            f"{self.base}/{model}:{method}",
            params=params,
            headers={"Cookie": LEAKY_COOKIE},
            json={"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
            timeout=HTTP_TIMEOUT,
            stream=stream,
        )
        resp.raise_for_status()
        return resp

    @staticmethod
    def _text(body: dict) -> str:
        return "".join(part.get("text", "") for part in body["candidates"][0]["content"]["parts"])

    @staticmethod
    def _usage(body: dict) -> Usage:
        meta = body["usageMetadata"]
        return Usage(meta["promptTokenCount"], meta["candidatesTokenCount"], meta["totalTokenCount"])

    def call(self, prompt: str, model: str | None = None) -> Reply:
        resp = self._post(model or MODEL, "generateContent", prompt, {}, stream=False)
        assert resp.status_code == 200, resp.text[:500]
        body = resp.json()
        return Reply(text=self._text(body), usage=self._usage(body), headers=lower_headers(resp.headers))

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        resp = self._post(model or MODEL, "streamGenerateContent", prompt, {"alt": "sse"}, stream=True)
        assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers

        def events():
            for line in resp.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    yield json.loads(line[len("data:"):])

        chunks, times = timed(events())
        pieces = [text for text in (self._text(c) for c in chunks) if text]
        finishes = [c["candidates"][0].get("finishReason") for c in chunks]
        ended = bool(chunks) and finishes[-1] == "STOP" and all(f is None for f in finishes[:-1])
        return StreamResult(
            pieces=pieces,
            ended=ended,
            usage=self._usage(chunks[-1]) if chunks else None,
            headers=lower_headers(resp.headers),
            times=times,
        )

    def error_class(self, status: int) -> type[BaseException]:
        return requests.HTTPError

    def read_error(self, exc: BaseException) -> SeenError:
        assert isinstance(exc, requests.HTTPError), exc
        resp = exc.response
        error = resp.json()["error"]
        assert error["code"] == resp.status_code, error
        return SeenError(
            status=resp.status_code,
            code=error.get("status"),
            message=error.get("message") or "",
            shown=resp.text,
            body=resp.text,
            headers=lower_headers(resp.headers),
        )


class GeminiAdapter(Adapter):
    name = "gemini"
    mock = GEMINI
    mock_name = "Gemini"
    places = ("api_key", "key_query")
    credential_source = {"api_key": "x-goog-api-key-header", "key_query": "key-query-parameter"}
    scope = "text:gemini"
    own_group = "gateway-gemini"
    lacking_group = "gateway-openai"
    operations = {"call": "generateContent", "stream": "streamGenerateContent"}
    gateway_error_codes = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 504: "DEADLINE_EXCEEDED"}
    upstream_error_codes = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}
    cases = {
        "call": RUN,
        "stream": RUN,
        "stream_is_relayed_as_it_arrives": RUN,
        "no_token_is_refused": RUN,
        "bad_token_is_refused": RUN,
        "resigned_token_is_accepted": RUN,
        "audit_names_the_credential_place": RUN,
        "missing_scope_is_forbidden": RUN,
        "narrow_token_is_allowed": RUN,
        "model_outside_allow_list_is_forbidden": OptOut(
            "no model allow-list on /gemini: policy/scopes.json `models` lists bedrock-claude only"
        ),
        "unknown_operation_is_not_found": RUN,
        "upstream_error_is_relayed": RUN,
        "hanging_upstream_ends_in_504": RUN,
        "audit_records_the_call": RUN,
        "audit_records_the_stream": RUN,
    }

    def connect(self, place: str, token: str, env: Env) -> Session:
        if place == "api_key":
            return GeminiSdkSession(sdk_client(env.state["base_url"].rstrip("/"), token), token)
        assert place == "key_query", place
        return GeminiHttpSession(env, token)

    def connect_without_token(self, env: Env) -> Session:
        # genai.Client insists on an api_key, so this one is raw HTTP.
        return GeminiHttpSession(env, None)

    def model(self, kind: str = "default") -> str:
        return MODEL if kind == "default" else kind

    def upstream_target(self, session: Session, operation: str, model: str) -> tuple[str, dict]:
        method = {"call": "generateContent", "stream": "streamGenerateContent"}[operation]
        query = {"alt": ["sse"]} if operation == "stream" else {}
        return f"/{session.version}/models/{model}:{method}", query

    def call_unknown_operation(self, session: GeminiSdkSession) -> None:
        session.client.file_search_stores.list()

    def assert_injected_credential(self, record: dict, secrets: dict) -> None:
        assert header(record, "x-goog-api-key") == secrets[GEMINI], "gateway must inject the Secrets Manager key"
        assert header(record, "authorization") is None, "client Authorization must not be forwarded"
        assert "key" not in query_params(record), f"no key= may reach upstream: {record.get('query')!r}"
        assert "key=" not in (record.get("query") or "")


ADAPTER = GeminiAdapter()
