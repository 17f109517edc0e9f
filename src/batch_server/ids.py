"""OpenAI-style identifiers."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def file_id() -> str:
    return f"file-{_random(24)}"


def batch_id() -> str:
    return f"batch_{secrets.token_hex(16)}"


def batch_request_id() -> str:
    return f"batch_req_{secrets.token_hex(16)}"


def request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


def completion_id(prefix: str) -> str:
    return f"{prefix}-{_random(29)}"


def response_id(prefix: str) -> str:
    """An id of the Responses API's form: a ``response`` (``resp``) and its output items
    (``msg``, ``fc``)."""
    return f"{prefix}_{secrets.token_hex(24)}"


def tool_call_id() -> str:
    """A tool call id in OpenAI's form."""
    return f"call_{secrets.token_hex(12)}"


def token() -> str:
    return secrets.token_hex(16)


def comparison_id() -> str:
    """A comparison (``POST /v1/comparisons``), an extension object."""
    return f"cmp_{secrets.token_hex(16)}"


def model_test_id() -> str:
    """A model test load (``POST /v1/admin/models/{id}/test``)."""
    return f"mtest_{secrets.token_hex(12)}"


def fine_tuning_job_id() -> str:
    """A fine-tuning job, in OpenAI's form (``ftjob-…``)."""
    return f"ftjob-{_random(24)}"


def fine_tuning_event_id() -> str:
    return f"ftevent-{_random(24)}"


def fine_tuning_checkpoint_id() -> str:
    return f"ftckpt-{_random(24)}"
