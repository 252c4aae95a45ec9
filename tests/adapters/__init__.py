"""The providers' adapters to the contract in tests/contract.py, one module per provider route."""

from adapters import azure_openai, bedrock_claude, gemini

ADAPTERS = (azure_openai.ADAPTER, bedrock_claude.ADAPTER, gemini.ADAPTER)
