"""Streaming multipart uploads with a size limit enforced while the bytes arrive."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from batch_server.api.guards import check_text
from batch_server.errors import APIError, PayloadTooLarge
from batch_server.jobs.retention import EXPIRES_AFTER_MAX_SECONDS, EXPIRES_AFTER_MIN_SECONDS

# multipart framing around the file: boundaries, headers of the parts, small fields
_OVERHEAD = 64 * 1024

# The routes whose multipart bodies read_form streams to disk under the upload limit. The
# edge guard (api/guards.py) reads every other body whole, up to max_json_body_bytes.
STREAMED_UPLOADS = frozenset(
    {"/v1/files", "/v1/batches", "/v1/batches/validate", "/ui/submit", "/ui/submit/check"}
)


async def read_form(request: Request, limit: int) -> FormData:
    """Parse a multipart body; file parts spool to disk (never whole in memory) and the
    upload is refused with 413 as soon as it exceeds ``limit`` bytes. Text fields and
    file names holding a lone surrogate (a ``charset=utf-7`` part can decode to one) or,
    in fields, a NUL are refused with 400."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise APIError(
            "Expected a multipart/form-data body", code="invalid_content_type", status_code=415
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _OVERHEAD:
        raise PayloadTooLarge(limit)

    async def limited() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit + _OVERHEAD:
                raise PayloadTooLarge(limit)
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=4, max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise APIError(f"Malformed multipart body: {exc}", code="invalid_multipart") from exc
    try:
        for name, value in form.multi_items():
            check_text(name, None, "A form field's name")
            if isinstance(value, str):
                check_text(value, name)
                continue
            # safe_filename replaces NULs
            check_text(value.filename or "", name, f"The file name of '{name}'", nul_ok=True)
            if value.size is not None and value.size > limit:
                raise PayloadTooLarge(limit)
    except APIError:
        await form.close()
        raise
    return form


def form_text(form: FormData, name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise APIError(f"'{name}' must be a text field", param=name)
    if value is None or value == "":
        if required:
            raise APIError(
                f"Missing required parameter: '{name}'",
                param=name,
                code="missing_required_parameter",
            )
        return None
    return str(value)


def form_expires_after(form: FormData, name: str) -> int | None:
    """The seconds of an expiration policy sent as OpenAI's SDKs send one in a form,
    ``NAME[anchor]=created_at`` and ``NAME[seconds]=3600`` (1 hour to 30 days), or
    ``None`` when neither field is there."""
    anchor_param, seconds_param = f"{name}[anchor]", f"{name}[seconds]"
    if form.get(name) is not None:
        raise APIError(
            f"Send '{name}' as the fields '{anchor_param}' and '{seconds_param}'",
            param=name,
            code="invalid_value",
        )
    anchor = form_text(form, anchor_param)
    seconds = form_text(form, seconds_param)
    if anchor is None and seconds is None:
        return None
    if anchor is None or seconds is None:
        missing = anchor_param if anchor is None else seconds_param
        raise APIError(
            f"Missing required parameter: '{missing}'",
            param=missing,
            code="missing_required_parameter",
        )
    if anchor != "created_at":
        raise APIError(
            f"Invalid '{anchor_param}': '{anchor[:40]}'; the only supported anchor is 'created_at'",
            param=anchor_param,
            code="invalid_value",
        )
    value = int(seconds) if re.fullmatch(r"[0-9]{1,9}", seconds.strip()) else None
    if value is None or not EXPIRES_AFTER_MIN_SECONDS <= value <= EXPIRES_AFTER_MAX_SECONDS:
        raise APIError(
            f"Invalid '{seconds_param}': '{seconds[:40]}'; expected a whole number of seconds "
            f"from {EXPIRES_AFTER_MIN_SECONDS} (1 hour) to {EXPIRES_AFTER_MAX_SECONDS} "
            "(30 days)",
            param=seconds_param,
            code="invalid_value",
        )
    return value


def form_file(form: FormData, name: str = "file") -> UploadFile:
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise APIError(
            f"Missing required file part: '{name}'", param=name, code="missing_required_parameter"
        )
    return value


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\\"]")


def safe_filename(name: str | None) -> str:
    """The last path component of a client's filename, without control characters."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return base[:255] or "upload.jsonl"
