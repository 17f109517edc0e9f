"""vLLM Batch Server: a self-hosted, OpenAI-compatible Batch API."""


def version() -> str:
    """The installed package's version ("dev" when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vllm-batch-server")
    except PackageNotFoundError:
        return "dev"
