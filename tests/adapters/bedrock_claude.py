"""/bedrock-claude through boto3's bedrock-runtime client (Converse API), and through raw HTTP.

Credential places: `bearer_token_env` (the SDK reads AWS_BEARER_TOKEN_BEDROCK and sends
`Authorization: Bearer`, which botocore only allows over HTTPS, hence the gateway's TLS listener) and
`authorization_header` (raw HTTP with `Authorization: Bearer`, as curl users do). The gateway re-signs the
upstream call with SigV4 under its own role: there is no Bedrock secret in Secrets Manager.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import botocore.exceptions
import requests
from botocore.eventstream import EventStreamBuffer

from contract import (
    LEAKY_COOKIE,
    RUN,
    Adapter,
    Env,
    Reply,
    SeenError,
    Session,
    StreamResult,
    Usage,
    lower_headers,
    timed,
)
from helpers import BEDROCK, HTTP_TIMEOUT, bedrock_runtime_client, header

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def model_path(model: str) -> str:
    """boto3 percent-encodes the ':' in a model id; the gateway forwards the path byte for byte (SigV4
    signs the encoded path)."""
    return "/model/" + quote(model, safe="")


assert model_path(MODEL_ID) == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"


def sdk_client(env: Env, token: str):
    """The bedrock-runtime client with only the bearer token (every other AWS credential source removed,
    see helpers.bedrock_runtime_client), sending a cookie that must not travel upstream."""
    client = bedrock_runtime_client(env.state, token, env.monkeypatch, env.tmp_path)

    def add_cookie(request, **_):
        request.headers["Cookie"] = LEAKY_COOKIE

    client.meta.events.register("before-sign.bedrock-runtime.*", add_cookie)
    return client


def converse_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"text": prompt}]}]


def _usage(raw: dict) -> Usage:
    return Usage(raw["inputTokens"], raw["outputTokens"], raw["totalTokens"])


def _read_converse_stream(events: list[tuple[str, dict]], times: list[float], headers) -> StreamResult:
    kinds = [kind for kind, _ in events]
    pieces, usage, last_text = [], None, -1
    for i, (kind, payload) in enumerate(events):
        if kind == "contentBlockDelta":
            pieces.append(payload["delta"].get("text", ""))
            last_text = i
        elif kind == "metadata":
            usage = _usage(payload["usage"])
    ended = bool(kinds) and kinds[0] == "messageStart" and "messageStop" in kinds and kinds.index("messageStop") > last_text
    return StreamResult(pieces=pieces, ended=ended, usage=usage, headers=lower_headers(headers), times=times)


class BedrockSdkSession(Session):
    def __init__(self, client, token: str):
        self.client = client
        self.place = "bearer_token_env"
        self.token = token

    def call(self, prompt: str, model: str | None = None) -> Reply:
        resp = self.client.converse(
            modelId=model or MODEL_ID, messages=converse_messages(prompt), inferenceConfig={"maxTokens": 256}
        )
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
        message = resp["output"]["message"]
        assert message["role"] == "assistant", message
        assert resp["stopReason"], resp
        return Reply(
            text="".join(block.get("text", "") for block in message["content"]),
            usage=_usage(resp["usage"]),
            headers=lower_headers(resp["ResponseMetadata"]["HTTPHeaders"]),
        )

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        resp = self.client.converse_stream(
            modelId=model or MODEL_ID, messages=converse_messages(prompt), inferenceConfig={"maxTokens": 256}
        )
        raw_events, times = timed(resp["stream"])
        events = []
        for event in raw_events:
            (kind,) = event.keys()
            events.append((kind, event[kind]))
        return _read_converse_stream(events, times, resp["ResponseMetadata"]["HTTPHeaders"])

    def error_class(self, status: int) -> type[BaseException]:
        return botocore.exceptions.ClientError

    def read_error(self, exc: BaseException) -> SeenError:
        assert isinstance(exc, botocore.exceptions.ClientError), exc
        error = exc.response.get("Error", {})
        return SeenError(
            status=exc.response["ResponseMetadata"]["HTTPStatusCode"],
            code=error.get("Code"),
            message=error.get("Message") or "",
            shown=str(exc),
            body=json.dumps(exc.response, default=str),
            headers=lower_headers(exc.response["ResponseMetadata"]["HTTPHeaders"]),
        )


class BedrockHttpSession(Session):
    """Raw HTTP to the Converse API with `Authorization: Bearer <token>` (or no token at all)."""

    def __init__(self, env: Env, token: str | None):
        self.base = env.state["https_base_url"].rstrip("/") + "/bedrock-claude"
        self.verify = env.state["ca_bundle"]
        self.place = "authorization_header" if token is not None else "none"
        self.token = token

    def _post(self, model: str, operation: str, prompt: str, stream: bool) -> requests.Response:
        headers = {"Cookie": LEAKY_COOKIE}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        resp = requests.post(
            f"{self.base}{model_path(model)}/{operation}",
            headers=headers,
            json={"messages": converse_messages(prompt), "inferenceConfig": {"maxTokens": 256}},
            verify=self.verify,
            timeout=HTTP_TIMEOUT,
            stream=stream,
        )
        resp.raise_for_status()
        return resp

    def call(self, prompt: str, model: str | None = None) -> Reply:
        resp = self._post(model or MODEL_ID, "converse", prompt, stream=False)
        body = resp.json()
        message = body["output"]["message"]
        assert message["role"] == "assistant", body
        assert body["stopReason"], body
        return Reply(
            text="".join(block.get("text", "") for block in message["content"]),
            usage=_usage(body["usage"]),
            headers=lower_headers(resp.headers),
        )

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        resp = self._post(model or MODEL_ID, "converse-stream", prompt, stream=True)
        assert resp.headers["content-type"] == "application/vnd.amazon.eventstream", resp.headers

        def frames():
            buffer = EventStreamBuffer()
            for data in resp.iter_content(chunk_size=None):
                buffer.add_data(data)
                for message in buffer:
                    assert message.headers.get(":message-type") == "event", message.headers
                    yield message.headers[":event-type"], json.loads(message.payload)

        events, times = timed(frames())
        return _read_converse_stream(events, times, resp.headers)

    def error_class(self, status: int) -> type[BaseException]:
        return requests.HTTPError

    def read_error(self, exc: BaseException) -> SeenError:
        assert isinstance(exc, requests.HTTPError), exc
        resp = exc.response
        return SeenError(
            status=resp.status_code,
            code=resp.headers.get("x-amzn-errortype"),
            message=resp.json().get("message") or "",
            shown=resp.text,
            body=resp.text,
            headers=lower_headers(resp.headers),
        )


class BedrockClaudeAdapter(Adapter):
    name = "bedrock-claude"
    mock = BEDROCK
    mock_name = "Bedrock"
    places = ("bearer_token_env", "authorization_header")
    credential_source = {"bearer_token_env": "authorization-bearer", "authorization_header": "authorization-bearer"}
    scope = "text:claude"
    own_group = "gateway-claude"
    lacking_group = "gateway-openai"
    operations = {"call": "converse", "stream": "converse-stream"}
    gateway_error_codes = {
        401: "UnrecognizedClientException",
        403: "AccessDeniedException",
        404: "ResourceNotFoundException",
        429: "ThrottlingException",
        504: "ModelTimeoutException",
    }
    upstream_error_codes = {429: "ThrottlingException", 500: "InternalServerException"}
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
        "model_outside_allow_list_is_forbidden": RUN,
        "unknown_operation_is_not_found": RUN,
        "upstream_error_is_relayed": RUN,
        "hanging_upstream_ends_in_504": RUN,
        "audit_records_the_call": RUN,
        "audit_records_the_stream": RUN,
    }

    def connect(self, place: str, token: str, env: Env) -> Session:
        if place == "bearer_token_env":
            return BedrockSdkSession(sdk_client(env, token), token)
        assert place == "authorization_header", place
        return BedrockHttpSession(env, token)

    def connect_without_token(self, env: Env) -> Session:
        # boto3 refuses to send a request without credentials, so this one is raw HTTP.
        return BedrockHttpSession(env, None)

    def model(self, kind: str = "default") -> str:
        return MODEL_ID if kind == "default" else f"anthropic.claude-{kind}-v1:0"

    def disallowed_model(self) -> str:
        return "amazon.nova-pro-v1:0"

    def upstream_target(self, session: Session, operation: str, model: str) -> tuple[str, dict]:
        return f"{model_path(model)}/{self.operations[operation]}", {}

    def call_unknown_operation(self, session: BedrockSdkSession) -> None:
        session.client.apply_guardrail(
            guardrailIdentifier="gr-test-1", guardrailVersion="1", source="INPUT", content=[{"text": {"text": "hi"}}]
        )

    def assert_injected_credential(self, record: dict, secrets: dict) -> None:
        auth = header(record, "authorization") or ""
        assert auth.startswith("AWS4-HMAC-SHA256 Credential="), f"upstream must be SigV4-signed, got {auth[:60]!r}"
        assert "/bedrock/aws4_request" in auth, f"SigV4 scope must be the bedrock service: {auth[:120]!r}"
        assert header(record, "x-amz-date"), "SigV4 needs x-amz-date"
        assert "bearer" not in auth.lower()


ADAPTER = BedrockClaudeAdapter()
