"""/gemini beyond the provider contract (test_provider_contract.py): countTokens. Driven by the
google-genai SDK, built as tests/adapters/gemini.py builds it.
"""

from __future__ import annotations

from adapters.gemini import ADAPTER, MODEL, GeminiSdkSession, sdk_client
from contract import assert_clean_upstream
from helpers import single_request, unique_prompt


def test_count_tokens(base_url, state, secrets, all_token, clear_mocks):
    session = GeminiSdkSession(sdk_client(base_url, all_token), all_token)
    resp = session.client.models.count_tokens(model=MODEL, contents=unique_prompt("gmcount"))

    assert resp.total_tokens > 0, resp

    record = single_request(state, ADAPTER.mock, ":countTokens")
    assert_clean_upstream(ADAPTER, record, secrets, all_token, f"/{session.version}/models/{MODEL}:countTokens", {})
