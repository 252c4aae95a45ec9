"""Fixtures for the gateway end-to-end suite.

The suite needs a running local stack (gateway + moto + provider mocks). It
reads the stack's state file: $GATEWAY_LOCAL_STATE, or <repo>/.local/stack.json.

Run from the repository root:  python -m pytest tests
"""

from __future__ import annotations

import json

import pytest

import contract
import helpers


@pytest.fixture(scope="session")
def state() -> dict:
    path = helpers.state_path()
    try:
        return helpers.load_state()
    except FileNotFoundError:
        pytest.fail(
            f"stack state file {path} not found: {helpers.STACK_HINT}", pytrace=False
        )
    except (ValueError, json.JSONDecodeError) as exc:
        pytest.fail(f"stack state file {path} is unusable ({exc}): {helpers.STACK_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def base_url(state) -> str:
    return state["base_url"].rstrip("/")


@pytest.fixture(scope="session")
def https_base_url(state) -> str:
    return state["https_base_url"].rstrip("/")


@pytest.fixture
def client_env(state, monkeypatch, tmp_path) -> contract.Env:
    """What the provider adapters need to build a client (tests/contract.py)."""
    return contract.Env(state, monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def secrets(state) -> dict:
    """Upstream credentials the gateway must inject, read from Secrets Manager (moto)."""
    return {name: helpers.get_secret(state, name) for name in state["secrets"]}


@pytest.fixture(scope="session")
def make_user(state):
    """Factory: make_user(*groups) -> {"username", "access_token", "id_token", ...}.

    Each call creates a fresh Cognito user (unique name) in moto, sets a
    permanent password, adds it to the groups and logs it in. Users are
    deleted at the end of the session.
    """
    created: list[str] = []

    def _make(*groups: str) -> dict:
        user = helpers.create_cognito_user(state, groups)
        created.append(user["username"])
        return user

    yield _make
    for username in created:
        helpers.delete_cognito_user(state, username)


@pytest.fixture(scope="session")
def all_user(make_user) -> dict:
    return make_user("gateway-all", "dept-engineering")


@pytest.fixture(scope="session")
def all_token(all_user) -> str:
    return all_user["access_token"]


@pytest.fixture(scope="session")
def openai_only_token(make_user) -> str:
    return make_user("gateway-openai", "dept-sales")["access_token"]


@pytest.fixture(scope="session")
def text_token(token_for) -> str:
    return token_for("gateway-text")


@pytest.fixture(scope="session")
def token_for(make_user):
    """Factory: token_for(*groups) -> an access token of a user in exactly those groups (one user per
    set of groups for the whole session)."""
    tokens: dict[tuple[str, ...], str] = {}

    def _token(*groups: str) -> str:
        key = tuple(sorted(groups))
        if key not in tokens:
            tokens[key] = make_user(*groups)["access_token"]
        return tokens[key]

    return _token


@pytest.fixture
def untouched_upstreams(state):
    """Clear all mocks; after the test, assert nothing was forwarded."""
    providers = (helpers.AZURE, helpers.BEDROCK, helpers.GEMINI)
    for provider in providers:
        helpers.clear_mock(state, provider)
    yield
    for provider in providers:
        forwarded = helpers.mock_requests(state, provider)
        assert forwarded == [], f"a rejected request reached the {provider} mock: {forwarded}"


@pytest.fixture
def clear_mocks(state):
    """Clear every provider mock's journal before the test."""
    for provider in state["mocks"]:
        helpers.clear_mock(state, provider)


def pytest_terminal_summary(terminalreporter):
    """The provider contract's opt-outs, with their reasons, at the end of every run that ran it."""
    from adapters import ADAPTERS

    ran_contract = any(
        "test_provider_contract.py" in report.nodeid
        for reports in terminalreporter.stats.values()
        for report in reports
        if hasattr(report, "nodeid")
    )
    if not ran_contract:
        return
    opt_outs = [(a.name, case, reason) for a in ADAPTERS for case, reason in a.opt_outs().items()]
    if opt_outs:
        terminalreporter.section("provider contract: cases a provider opts out of")
        for name, case, reason in opt_outs:
            terminalreporter.line(f"{name} / {case}: {reason}")
