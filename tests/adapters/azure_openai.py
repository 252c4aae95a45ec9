"""/azure-openai through the openai SDK's AzureOpenAI client.

Credential places: `api_key` (sent as the `api-key` header) and `azure_ad_token` (sent as
`Authorization: Bearer`). The gateway injects the Azure key from Secrets Manager as `api-key`.
"""

from __future__ import annotations

import openai

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
from helpers import AZURE, HTTP_TIMEOUT, header

API_VERSION = "2024-10-21"
CHAT_DEPLOYMENT = "gpt-4o"
NO_TOKEN_PLACEHOLDER = "placeholder-not-sent"

_STATUS_ERRORS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
}


def sdk_client(base_url: str, place: str, token: str) -> openai.AzureOpenAI:
    """The AzureOpenAI client as a user builds it, with the token in `place` and a cookie that must not
    travel upstream."""
    assert place in AzureOpenAIAdapter.places, place
    return openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/azure-openai",
        api_version=API_VERSION,
        default_headers={"Cookie": LEAKY_COOKIE},
        max_retries=0,
        timeout=HTTP_TIMEOUT,
        **{place: token},
    )


class AzureSession(Session):
    def __init__(self, client: openai.AzureOpenAI, place: str, token: str | None, extra_headers=None):
        self.client = client
        self.place = place
        self.token = token
        self.extra_headers = extra_headers or {}

    def call(self, prompt: str, model: str | None = None) -> Reply:
        raw = self.client.chat.completions.with_raw_response.create(
            model=model or CHAT_DEPLOYMENT,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": prompt},
            ],
            extra_headers=self.extra_headers,
        )
        assert raw.status_code == 200
        completion = raw.parse()
        assert completion.choices, completion
        message = completion.choices[0].message
        assert message.role == "assistant", message
        assert completion.usage is not None, completion
        usage = completion.usage
        return Reply(
            text=message.content,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
            headers=lower_headers(raw.headers),
        )

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        raw = self.client.chat.completions.with_raw_response.create(
            model=model or CHAT_DEPLOYMENT,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=self.extra_headers,
        )
        chunks, times = timed(raw.parse())
        pieces, last_text, stop = [], -1, -1
        for i, chunk in enumerate(chunks):
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    pieces.append(choice.delta.content)
                    last_text = i
                if choice.finish_reason == "stop":
                    stop = i
        last = chunks[-1] if chunks else None
        # The end: a `stop` after the last text, then (include_usage) a usage chunk without choices.
        ended = last is not None and last_text < stop < len(chunks) - 1 and last.usage is not None and not last.choices
        usage = last.usage if last is not None else None
        return StreamResult(
            pieces=pieces,
            ended=ended,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage else None,
            headers=lower_headers(raw.headers),
            times=times,
        )

    def error_class(self, status: int) -> type[BaseException]:
        return openai.InternalServerError if status >= 500 else _STATUS_ERRORS[status]

    def read_error(self, exc: BaseException) -> SeenError:
        assert isinstance(exc, openai.APIStatusError), exc
        body = exc.body if isinstance(exc.body, dict) else {}
        return SeenError(
            status=exc.status_code,
            code=exc.code,
            message=str(body.get("message") or ""),
            shown=str(exc),
            body=exc.response.text,
            headers=lower_headers(exc.response.headers),
        )


class AzureOpenAIAdapter(Adapter):
    name = "azure-openai"
    mock = AZURE
    mock_name = "Azure OpenAI"
    places = ("api_key", "azure_ad_token")
    credential_source = {"api_key": "api-key-header", "azure_ad_token": "authorization-bearer"}
    scope = "text:openai"
    own_group = "gateway-openai"
    lacking_group = "gateway-gemini"
    operations = {"call": "chat.completions", "stream": "chat.completions"}
    gateway_error_codes = {401: "Unauthorized", 403: "PermissionDenied", 404: "NotFound", 429: "RateLimitExceeded", 504: "Timeout"}
    upstream_error_codes = {429: "429", 500: "500"}
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
            "no model allow-list on /azure-openai: policy/scopes.json `models` lists bedrock-claude only "
            "(an Azure deployment name is the customer's own)"
        ),
        "unknown_operation_is_not_found": RUN,
        "upstream_error_is_relayed": RUN,
        "hanging_upstream_ends_in_504": RUN,
        "audit_records_the_call": RUN,
        "audit_records_the_stream": RUN,
    }

    def connect(self, place: str, token: str, env: Env) -> AzureSession:
        return AzureSession(sdk_client(env.state["base_url"].rstrip("/"), place, token), place, token)

    def connect_without_token(self, env: Env) -> AzureSession:
        # openai>=2 refuses api_key="" client-side, so build a client and strip the api-key header from
        # each request: nothing authenticates it.
        client = sdk_client(env.state["base_url"].rstrip("/"), "api_key", NO_TOKEN_PLACEHOLDER)
        return AzureSession(client, "none", None, extra_headers={"api-key": openai.Omit()})

    def model(self, kind: str = "default") -> str:
        return CHAT_DEPLOYMENT if kind == "default" else kind

    def upstream_target(self, session: Session, operation: str, model: str) -> tuple[str, dict]:
        return f"/openai/deployments/{model}/chat/completions", {"api-version": [API_VERSION]}

    def call_unknown_operation(self, session: AzureSession) -> None:
        session.client.moderations.create(input="is this relayed?")

    def assert_injected_credential(self, record: dict, secrets: dict) -> None:
        assert header(record, "api-key") == secrets[AZURE], "gateway must inject the Secrets Manager key"
        assert header(record, "authorization") is None, "client Authorization header must not be forwarded"


ADAPTER = AzureOpenAIAdapter()
