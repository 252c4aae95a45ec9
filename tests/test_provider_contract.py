"""The provider contract (tests/contract.py), run against every provider route through its stock SDK.

One test per contract case. `pytest_generate_tests` runs each one for every adapter (tests/adapters/)
that answers the case with RUN, and, where the test takes `place`, once per credential place of that
adapter. Cases an adapter opts out of are not collected for it; the reasons are printed at the end of the
run. Test ids read `test_<case>[<provider>-<place>-...]`.
"""

from __future__ import annotations

import time
import uuid

import jsonschema
import pytest

import helpers
from adapters import ADAPTERS
from contract import (
    CASES,
    Adapter,
    Env,
    assert_clean_upstream,
    assert_gateway_error,
    assert_request_id_headers,
    expect_error,
    expected_reply,
    expected_usage,
    word_chunks,
)
from helpers import (
    HTTP_TIMEOUT,
    alg_none_token,
    expired_claims,
    mock_requests,
    sign_with_foreign_key,
    sign_with_moto_key,
    unique_prompt,
    unverified_claims,
    unverified_header,
)

BAD_TOKEN_KINDS = ["junk", "expired", "foreign_key", "alg_none", "id_token"]
# The gateway answers every authentication failure with the same words, so a caller probing with forged
# tokens learns nothing about which check failed.
UNAUTHORIZED = "Unauthorized: the gateway token or API key is missing, expired or invalid."
CHUNK_GAP_S = 0.3  # the mocks' pause between `mock-slow` stream chunks


def pytest_generate_tests(metafunc):
    if "provider" not in metafunc.fixturenames:
        return
    case = metafunc.function.__name__.removeprefix("test_")
    assert case in CASES, f"{metafunc.function.__name__} is not a contract case"
    adapters = [adapter for adapter in ADAPTERS if adapter.runs(case)]
    if "place" in metafunc.fixturenames:
        params = [pytest.param(a, place, id=f"{a.name}-{place}") for a in adapters for place in a.places]
        metafunc.parametrize("provider,place", params)
    else:
        metafunc.parametrize("provider", [pytest.param(a, id=a.name) for a in adapters])


def test_every_contract_case_has_a_test():
    tests = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(CASES) <= tests, f"contract cases without a test: {sorted(set(CASES) - tests)}"


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def upstream(state, provider):
    """The provider mock's journal, cleared before the test; call it to read what reached upstream."""
    helpers.clear_mock(state, provider.mock)
    return lambda: mock_requests(state, provider.mock)


@pytest.fixture
def connect(provider, client_env: Env):
    """connect(token, place=None) -> a session of this provider's client (default: its usual place)."""
    return lambda token, place=None: provider.connect(place or provider.default_place, token, client_env)


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


def only_request(records: list[dict]) -> dict:
    assert len(records) == 1, [(r.get("method"), r.get("path"), r.get("query")) for r in records]
    return records[0]


# --------------------------------------------------------------------------
# Calls and streams
# --------------------------------------------------------------------------


def test_call(provider: Adapter, place, connect, upstream, secrets, all_token):
    session = connect(all_token, place)
    prompt = unique_prompt("call")
    reply = session.call(prompt)

    assert reply.text == expected_reply(provider, prompt)
    assert reply.usage == expected_usage(provider, prompt)
    assert_request_id_headers(reply.headers)

    path, query = provider.upstream_target(session, "call", provider.model())
    assert_clean_upstream(provider, only_request(upstream()), secrets, all_token, path, query)


def test_stream(provider: Adapter, place, connect, upstream, secrets, all_token):
    session = connect(all_token, place)
    prompt = unique_prompt("stream")
    result = session.stream(prompt)

    reply = expected_reply(provider, prompt)
    assert result.pieces == word_chunks(reply), "the chunks, in the order the provider sent them"
    assert len(result.pieces) >= 3
    assert result.ended, "the stream ends as the provider ends it"
    assert result.usage == expected_usage(provider, prompt)
    assert_request_id_headers(result.headers)

    path, query = provider.upstream_target(session, "stream", provider.model())
    assert_clean_upstream(provider, only_request(upstream()), secrets, all_token, path, query)


def test_stream_is_relayed_as_it_arrives(provider: Adapter, connect, all_token):
    result = connect(all_token).stream(unique_prompt("slow stream"), model=provider.model("mock-slow"))
    assert result.ended
    times = result.times
    assert len(times) >= 3, times
    spread = times[-1] - times[0]
    assert spread >= 2 * CHUNK_GAP_S * 0.8, f"chunks arrived together (buffered?): {times}"
    assert times[0] < times[-1] - CHUNK_GAP_S, times


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------


def test_no_token_is_refused(provider: Adapter, client_env, untouched_upstreams):
    session = provider.connect_without_token(client_env)
    error = expect_error(session, 401, lambda: session.call(unique_prompt("no token")))
    assert_gateway_error(provider, error, 401)
    assert error.message.startswith(UNAUTHORIZED), error.message


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_bad_token_is_refused(provider: Adapter, place, kind, bad_tokens, connect, untouched_upstreams):
    session = connect(bad_tokens[kind], place)
    error = expect_error(session, 401, lambda: session.call(unique_prompt("bad token")))
    assert_gateway_error(provider, error, 401)
    assert error.message.startswith(UNAUTHORIZED), error.message


def test_resigned_token_is_accepted(provider: Adapter, real_claims, connect, upstream):
    """The same claims as the `expired` bad token, signed the same way with moto's key but not expired,
    are accepted: the 401 there is about `exp`, not about how the suite signs tokens."""
    claims = dict(real_claims)
    claims["exp"] = int(time.time()) + 600
    prompt = unique_prompt("resigned")
    assert connect(sign_with_moto_key(claims)).call(prompt).text == expected_reply(provider, prompt)
    assert len(upstream()) == 1


def test_audit_names_the_credential_place(provider: Adapter, place, connect, state, untouched_upstreams):
    token = f"not-a-token-{uuid.uuid4().hex}"
    session = connect(token, place)
    error = expect_error(session, 401, lambda: session.call(unique_prompt("audited refusal")))
    request_id = assert_gateway_error(provider, error, 401)

    events, raw = helpers.wait_for_events(state, {request_id})
    ours = [e for e in events if e["request_id"] == request_id]
    assert len(ours) == 1, f"a request the authorizer refuses has its final record only: {ours}"
    event = ours[0]
    assert event["record"] == "final", event
    assert event["credential_source"] == provider.credential_source[place], event
    assert event["decision"] == "unauthorized" and event["status"] == 401, event
    assert event["provider"] == provider.name and event["principal"] is None, event
    assert token not in raw.decode(), "the refused token was written to the audit trail"


# --------------------------------------------------------------------------
# Authorization
# --------------------------------------------------------------------------


def test_missing_scope_is_forbidden(provider: Adapter, connect, token_for, untouched_upstreams):
    session = connect(token_for(provider.lacking_group))
    error = expect_error(session, 403, lambda: session.call(unique_prompt("no scope")))
    assert_gateway_error(provider, error, 403)
    assert provider.scope in error.message, error.message


@pytest.mark.parametrize("grant", ["route_group", "text_group"])
def test_narrow_token_is_allowed(provider: Adapter, grant, connect, token_for, upstream):
    group = provider.own_group if grant == "route_group" else "gateway-text"
    prompt = unique_prompt("narrow")
    assert connect(token_for(group)).call(prompt).text == expected_reply(provider, prompt)
    assert len(upstream()) == 1


def test_model_outside_allow_list_is_forbidden(provider: Adapter, connect, all_token, untouched_upstreams):
    session = connect(all_token)
    model = provider.disallowed_model()
    error = expect_error(session, 403, lambda: session.call(unique_prompt("model"), model=model))
    assert_gateway_error(provider, error, 403)
    assert model in error.message, error.message


def test_unknown_operation_is_not_found(provider: Adapter, connect, all_token, untouched_upstreams):
    session = connect(all_token)
    error = expect_error(session, 404, lambda: provider.call_unknown_operation(session))
    assert_gateway_error(provider, error, 404)
    assert f"is not an API the gateway relays on /{provider.name}" in error.message, error.message


# --------------------------------------------------------------------------
# Upstream failures
# --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500])
def test_upstream_error_is_relayed(provider: Adapter, status, connect, all_token, upstream):
    session = connect(all_token)
    model = provider.model(f"mock-error-{status}")
    error = expect_error(session, status, lambda: session.call(unique_prompt("fault"), model=model))

    assert error.code == provider.upstream_error_codes[status], (error.code, error.message)
    assert "(mock)" in error.message and "(mock)" in error.shown, "the provider's own message reaches the client"
    request_id = assert_request_id_headers(error.headers)
    assert request_id not in error.message, "relayed as the provider sent it, not rewritten by the gateway"
    assert len(upstream()) == 1, "neither the gateway nor the client retried"


def test_hanging_upstream_ends_in_504(provider: Adapter, connect, all_token, state):
    deadline_s = state["upstream_response_timeout_ms"] / 1000
    assert deadline_s < HTTP_TIMEOUT - 5, "the stack's deadline must end the call before the client's timeout"
    session = connect(all_token)
    started = time.monotonic()
    error = expect_error(session, 504, lambda: session.call(unique_prompt("hang"), model=provider.model("mock-hang")))
    elapsed = time.monotonic() - started

    assert_gateway_error(provider, error, 504)
    assert "did not answer" in error.message, error.message
    assert deadline_s * 0.9 <= elapsed < deadline_s + 10, f"the gateway's deadline ended the call: {elapsed:.1f} s"


# --------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------


def assert_audited(provider: Adapter, session, operation: str, headers, usage, sent: dict, all_user, state):
    """The one audit event of the request answered with `headers`."""
    request_id = assert_request_id_headers(headers)
    events, _ = helpers.wait_for_events(state, {request_id})
    records = helpers.records_of(events, request_id)
    assert sorted(records) == ["accepted", "authorized", "final"], f"{operation} {request_id}: {records}"
    assert all(len(found) == 1 for found in records.values()), records
    for record in records.values():
        jsonschema.validate(record[0], helpers.audit_schema())
    event = records["final"][0]
    accepted = records["accepted"][0]
    assert accepted["time"] >= event["time"], "the final is stamped with the request's arrival; accepted later"
    assert (accepted["operation"], accepted["model"]) == (event["operation"], event["model"]), accepted
    assert (event["decision"], event["status"], event["outcome"]) == ("allow", 200, "complete"), event
    assert event["provider"] == provider.name, event
    assert event["operation"] == provider.operations[operation], event
    assert event["model"] == provider.model(), event
    assert event["stream"] is (operation == "stream"), event
    assert event["transport"] == state["transports"][provider.mock], event
    assert event["principal"]["subject"] == all_user["sub"], event
    assert event["principal"]["username"] == all_user["username"], event
    assert event["principal"]["department"] == "engineering", event
    assert event["principal"]["client_id"] == state["app_client_id"], event
    assert event["usage"] == {
        "input_tokens": usage.input, "output_tokens": usage.output, "total_tokens": usage.total,
        "cached_input_tokens": 0, "cache_write_tokens": 0, "estimated": False,
    }, "the provider reported usage: it is taken as reported, not estimated (and nothing was cached)"
    path, _ = provider.upstream_target(session, operation, provider.model())
    assert sent["path"] == path, sent
    assert event["request_sha256"] == sent["body_sha256"], "the audit names the body the provider got"
    assert event["bytes_in"] == sent["body_len"] and event["bytes_out"] > 0, event
    assert event["latency"]["upstream_ms"] is not None, event


def test_audit_records_the_call(provider: Adapter, connect, all_user, state, upstream):
    session = connect(all_user["access_token"])
    reply = session.call(unique_prompt("audited call"))
    assert_audited(provider, session, "call", reply.headers, reply.usage, only_request(upstream()), all_user, state)


def test_audit_records_the_stream(provider: Adapter, connect, all_user, state, upstream):
    session = connect(all_user["access_token"])
    streamed = session.stream(unique_prompt("audited stream"))
    assert streamed.ended
    assert_audited(provider, session, "stream", streamed.headers, streamed.usage, only_request(upstream()), all_user, state)
