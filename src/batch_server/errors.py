"""The one exception type of the API and its OpenAI-shaped rendering."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class NotFound(APIError):
    status_code = 404

    def __init__(self, kind: str, ident: str, param: str | None = None) -> None:
        super().__init__(f"No such {kind}: '{ident}'", param=param, code="not_found")


class PayloadTooLarge(APIError):
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"File is larger than the limit of {limit} bytes", param="file", code="file_too_large"
        )


class Conflict(APIError):
    status_code = 409


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
