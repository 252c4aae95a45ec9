"""/azure-openai beyond the provider contract (test_provider_contract.py): embeddings, and an operation
that needs another scope than chat. Driven by the openai SDK's AzureOpenAI client, built as
tests/adapters/azure_openai.py builds it.
"""

from __future__ import annotations

import pytest

from adapters.azure_openai import ADAPTER, API_VERSION, AzureSession, sdk_client
from contract import assert_clean_upstream, assert_gateway_error, expect_error
from helpers import single_request, unique_prompt

EMBED_DEPLOYMENT = "text-embedding-3-small"


@pytest.mark.parametrize("place", ADAPTER.places)
def test_embeddings(place, base_url, state, secrets, all_token, clear_mocks):
    client = sdk_client(base_url, place, all_token)
    resp = client.embeddings.create(model=EMBED_DEPLOYMENT, input=unique_prompt("azembed"))

    assert len(resp.data) == 1
    vector = resp.data[0].embedding
    assert isinstance(vector, list) and len(vector) == 8, vector
    assert all(isinstance(x, float) for x in vector), vector
    assert resp.usage.total_tokens > 0

    record = single_request(state, ADAPTER.mock, "/embeddings")
    path = f"/openai/deployments/{EMBED_DEPLOYMENT}/embeddings"
    assert_clean_upstream(ADAPTER, record, secrets, all_token, path, {"api-version": [API_VERSION]})


def test_text_token_forbidden_on_audio(text_token, base_url, untouched_upstreams):
    """The text group's token works on chat (test_narrow_token_is_allowed) but not on transcriptions,
    which need audio:stt."""
    session = AzureSession(sdk_client(base_url, "api_key", text_token), "api_key", text_token)
    error = expect_error(
        session,
        403,
        lambda: session.client.audio.transcriptions.create(
            model="whisper", file=("a.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav")
        ),
    )
    assert_gateway_error(ADAPTER, error, 403)
    assert "audio:stt" in error.message, error.message
