"""vLLM Batch Server: a self-hosted, OpenAI-compatible Batch API."""
