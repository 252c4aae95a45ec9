"""The provider contract: what every provider route of the gateway must do, whichever stock SDK calls it.

`test_provider_contract.py` holds one test per case below and runs it once per provider (and, where the
case says so, once per credential place). A provider takes part through an adapter (tests/adapters/):
how its SDK is built for each credential place, a `call` and a `stream`, how content, usage and errors
are read from the SDK's results, what the upstream must receive. Each adapter answers every case in
`CASES`, either `RUN` or `OptOut("why")`; an adapter that leaves a case out, or names one that does not
exist, fails at import, so a new case is never skipped by omission. The opt-outs are listed at the end of
every run (conftest.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

import helpers

# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------

CASES: dict[str, str] = {
    "call": "a non-streaming call through each credential place returns the mock's reply and usage; the "
    "upstream got the right method, path, query and a body, the injected credential and nothing of the "
    "client's (token, Authorization, cookies); the response carries the request id headers",
    "stream": "a streaming call through each credential place yields the mock's chunks in order, its end "
    "and its usage; the same upstream checks as `call`",
    "stream_is_relayed_as_it_arrives": "with a provider that pauses between chunks, the first chunk reaches "
    "the client while the provider is still sending",
    "no_token_is_refused": "a request without any token: 401 in the provider's error shape, nothing upstream",
    "bad_token_is_refused": "junk, expired, foreign-key, alg=none and ID tokens through each credential "
    "place: 401 in the provider's error shape raised as the SDK's exception, nothing upstream",
    "resigned_token_is_accepted": "control for `bad_token_is_refused`: the same claims re-signed with the "
    "pool's key and not expired are accepted",
    "audit_names_the_credential_place": "the audit event of a refused token through each credential place "
    "names the place the gateway read it from",
    "missing_scope_is_forbidden": "a valid token whose groups lack the route's scope: 403 in the provider's "
    "error shape naming the scope, nothing upstream",
    "narrow_token_is_allowed": "control for `missing_scope_is_forbidden`: tokens holding only this route's "
    "scope (its own group, the text group) are allowed",
    "model_outside_allow_list_is_forbidden": "a model the policy does not allow on the route: 403 in the "
    "provider's error shape, nothing upstream",
    "unknown_operation_is_not_found": "an SDK operation the gateway does not relay: 404 in the provider's "
    "error shape, nothing upstream",
    "upstream_error_is_relayed": "a provider 429 / 500 reaches the client unchanged (status, the provider's "
    "code and message) as the SDK's normal exception; the gateway called upstream once",
    "hanging_upstream_ends_in_504": "a provider that does not answer ends, at the gateway's deadline, in a "
    "504 in the provider's error shape",
    "audit_records_the_call": "a call is audited once, complete: principal, provider, operation, model, "
    "transport, the usage the client saw, the body the upstream got",
    "audit_records_the_stream": "the same for a stream the client read to its end, flagged as a stream",
}


@dataclass(frozen=True)
class OptOut:
    """A case a provider does not run, with the reason, in plain sight in its adapter."""

    reason: str

    def __post_init__(self):
        assert self.reason.strip(), "an opt-out needs its reason"


RUN = "run"


# --------------------------------------------------------------------------
# What the adapters return
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    input: int
    output: int
    total: int


@dataclass
class Reply:
    """A non-streaming answer as the SDK gave it."""

    text: str
    usage: Usage
    headers: Mapping[str, str]  # response headers, lowercase names


@dataclass
class StreamResult:
    """A consumed stream: the text pieces in order, whether the provider's end was seen, the usage."""

    pieces: list[str]
    ended: bool
    usage: Usage | None
    headers: Mapping[str, str]
    times: list[float] = field(default_factory=list)  # arrival of each SDK-level event, from the first read


@dataclass
class SeenError:
    """An error as the SDK raised it."""

    status: int
    code: str | None  # the provider's own error code (Azure error.code, Gemini error.status, AWS error type)
    message: str  # the error's message field
    shown: str  # what the user sees: str() of the SDK's exception, or the body for raw HTTP
    body: str
    headers: Mapping[str, str]


@dataclass
class Env:
    """What building a client may need: the stack's state, and pytest's monkeypatch and tmp_path (the
    boto3 client takes its bearer token from the environment)."""

    state: dict
    monkeypatch: pytest.MonkeyPatch
    tmp_path: Path


class Session:
    """One client of one provider with one token in one credential place."""

    place: str
    token: str | None

    def call(self, prompt: str, model: str | None = None) -> Reply:
        raise NotImplementedError

    def stream(self, prompt: str, model: str | None = None) -> StreamResult:
        raise NotImplementedError

    def error_class(self, status: int) -> type[BaseException]:
        """The exception this client raises for an HTTP error status."""
        raise NotImplementedError

    def read_error(self, exc: BaseException) -> SeenError:
        raise NotImplementedError


class Adapter:
    """A provider's side of the contract. Subclasses set the attributes and implement the methods."""

    name: str  # route prefix and audit `provider`: "azure-openai"
    mock: str  # key of state["mocks"]: helpers.AZURE
    mock_name: str  # how the mock names itself in replies: "Mock <mock_name> reply to: ..."
    places: tuple[str, ...]  # credential places, the SDK's usual one first
    credential_source: Mapping[str, str]  # place -> the audit event's credential_source
    scope: str  # the scope the contract's call needs
    own_group: str  # a group granting only this route's text scope
    lacking_group: str  # a group whose scopes do not include `scope`
    operations: Mapping[str, str]  # "call" / "stream" -> the audit event's operation
    gateway_error_codes: Mapping[int, str]  # status -> code of the gateway's own errors
    upstream_error_codes: Mapping[int, str]  # status -> code of the mock provider's errors
    cases: Mapping[str, Any]  # every name in CASES -> RUN or OptOut(reason)

    def __init__(self):
        declared = set(self.cases)
        missing = sorted(set(CASES) - declared)
        unknown = sorted(declared - set(CASES))
        assert not missing and not unknown, (
            f"{type(self).__name__} must answer every contract case with RUN or OptOut(reason): "
            f"missing {missing}, unknown {unknown}"
        )
        for case, answer in self.cases.items():
            assert answer == RUN or isinstance(answer, OptOut), f"{self.name}/{case}: {answer!r}"
        assert set(self.credential_source) == set(self.places), self.name

    def __repr__(self) -> str:
        return self.name

    def runs(self, case: str) -> bool:
        assert case in CASES, f"no contract case {case!r}"
        return self.cases[case] == RUN

    def opt_outs(self) -> dict[str, str]:
        return {case: answer.reason for case, answer in self.cases.items() if isinstance(answer, OptOut)}

    @property
    def default_place(self) -> str:
        return self.places[0]

    # Clients ---------------------------------------------------------------

    def connect(self, place: str, token: str, env: Env) -> Session:
        raise NotImplementedError

    def connect_without_token(self, env: Env) -> Session:
        """A client that sends no gateway token at all."""
        raise NotImplementedError

    # Models and paths --------------------------------------------------------

    def model(self, kind: str = "default") -> str:
        """The model to ask for: "default", or a mock fault ("mock-error-429", "mock-hang", "mock-slow"...)."""
        raise NotImplementedError

    def upstream_target(self, session: Session, operation: str, model: str) -> tuple[str, dict]:
        """(raw path, parsed query) the upstream must receive for "call" or "stream"."""
        raise NotImplementedError

    def disallowed_model(self) -> str:
        """A model outside the route's allow-list (only for providers that run that case)."""
        raise NotImplementedError

    def call_unknown_operation(self, session: Session) -> None:
        """Call, through the SDK, an operation the gateway does not relay."""
        raise NotImplementedError

    # Upstream ----------------------------------------------------------------

    def assert_injected_credential(self, record: dict, secrets: dict) -> None:
        """The upstream request carries the gateway's own credential (and no client Authorization)."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# Shared expectations
# --------------------------------------------------------------------------

LEAKY_COOKIE = "session=leak"
REQUEST_ID_HEADER = "x-gateway-request-id"


def words(text: str) -> int:
    return len(text.split())


def word_chunks(text: str) -> list[str]:
    """How the mocks cut a reply into stream chunks: each word with the whitespace after it."""
    return re.findall(r"^\s*\S+\s*|\S+\s*", text)


def expected_reply(adapter: Adapter, prompt: str) -> str:
    return f"Mock {adapter.mock_name} reply to: {prompt.strip()}"


def expected_usage(adapter: Adapter, prompt: str) -> Usage:
    """The mocks count words: the user's text in, the reply out."""
    prompt_words = max(1, words(prompt))
    reply_words = words(expected_reply(adapter, prompt))
    return Usage(prompt_words, reply_words, prompt_words + reply_words)


def lower_headers(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(headers).items()}


def assert_request_id_headers(headers: Mapping[str, str]) -> str:
    """Every response the gateway produces or relays names its request id, once as API Gateway does
    (x-amzn-requestid) and once as the gateway's own header; returns it."""
    headers = lower_headers(headers)
    request_id = headers.get(REQUEST_ID_HEADER)
    assert request_id, f"no {REQUEST_ID_HEADER} in {headers}"
    assert headers.get("x-amzn-requestid") == request_id, headers
    return request_id


def assert_clean_upstream(
    adapter: Adapter, record: dict, secrets: dict, token: str, path: str, query: dict, method: str = "POST"
) -> None:
    """What the mock received: the exact method, path and query, the injected credential, a body, and
    nothing of the client's: no token anywhere, no Authorization of its own, no cookie."""
    assert record["method"] == method, record
    assert record["path"] == path, (record["path"], path)
    assert helpers.query_params(record) == query, (record.get("query"), query)
    assert record["body_len"] > 0, record
    adapter.assert_injected_credential(record, secrets)
    assert helpers.header(record, "cookie") is None, "client cookies must not be forwarded"
    if token is not None:
        helpers.assert_no_client_credential(record, token)


def expect_error(session: Session, status: int, call: Callable[[], Any]) -> SeenError:
    """Run `call`, which must raise the client's normal exception for `status`; return what it carried."""
    expected = session.error_class(status)
    with pytest.raises(expected) as info:
        call()
    error = session.read_error(info.value)
    assert error.status == status, (error.status, error.message)
    return error


def assert_gateway_error(adapter: Adapter, error: SeenError, status: int) -> str:
    """One of the gateway's own errors, in the provider's shape: the provider's code for the status, a
    readable message naming the request id (also in the headers), no HTML. Returns the request id."""
    assert error.status == status
    assert error.code == adapter.gateway_error_codes[status], (error.code, error.message)
    request_id = assert_request_id_headers(error.headers)
    assert error.message and request_id in error.message, error.message
    helpers.assert_mentions_request_id(error.message)
    assert request_id in error.shown, f"the user does not see the request id: {error.shown!r}"
    assert error.shown.strip() != f"Error code: {status}", f"unreadable error: {error.shown!r}"
    assert "<html" not in error.body.lower(), error.body[:200]
    return request_id


def timed(events) -> tuple[list, list[float]]:
    """Consume an iterator, noting when each item arrived (seconds after the first read began)."""
    started = time.monotonic()
    items, times = [], []
    for item in events:
        times.append(time.monotonic() - started)
        items.append(item)
    return items, times
