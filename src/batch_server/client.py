"""A small HTTP client for a (possibly remote) batch server, used by the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://localhost:4080"


class ServerError(Exception):
    """The server answered with an error (its OpenAI-shaped message) or could not be
    reached."""


class Client:
    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/").removesuffix("/v1")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            self._raise(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object the server answered with."""
        return _object(self._call(method, path, **kwargs), path)

    def _data(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The ``data`` list of a list answer."""
        data = self._json(method, path, **kwargs)["data"]
        if not isinstance(data, list):
            raise ServerError(f"{path}: 'data' is {type(data).__name__}, not a list")
        return data

    def submit(
        self,
        path: Path,
        *,
        model: str | None,
        endpoint: str,
        completion_window: str,
        priority: int | None,
        metadata: dict[str, str] | None,
    ) -> dict[str, Any]:
        """Upload ``path`` and create a batch from it in one call."""
        form = {"endpoint": endpoint, "completion_window": completion_window}
        if model:
            form["model"] = model
        if priority is not None:
            form["priority"] = str(priority)
        if metadata:
            form["metadata"] = json.dumps(metadata)
        with open(path, "rb") as fh:
            return self._json("POST", "/v1/batches", data=form, files={"file": (path.name, fh)})

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/batches/{batch_id}")

    def queue(self) -> dict[str, Any]:
        return self._json("GET", "/v1/queue")

    def queue_entry(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's position and ETA, or ``None`` once it has left the queue."""
        resp = self.http.get(f"/v1/queue/{batch_id}")
        return _object(resp, f"/v1/queue/{batch_id}") if resp.status_code == 200 else None

    def history(self, status: str, limit: int) -> list[dict[str, Any]]:
        params = {"status": status, "limit": limit}
        return self._data("GET", "/v1/jobs/history", params=params)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/batches/{batch_id}/cancel")

    def set_priority(self, batch_id: str, priority: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/batches/{batch_id}/priority", json={"priority": priority})

    def models(self) -> list[dict[str, Any]]:
        return self._data("GET", "/v1/models")

    def download(self, file_id: str, dest: Path | None) -> int:
        """Stream a file's bytes to ``dest`` (or return them to stdout when ``None``)."""
        try:
            with self.http.stream("GET", f"/v1/files/{file_id}/content") as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise(resp)
                if dest is None:
                    n = 0
                    for chunk in resp.iter_bytes():
                        sys.stdout.buffer.write(chunk)
                        n += len(chunk)
                    sys.stdout.buffer.flush()
                    return n
                with open(dest, "wb") as out:
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
                    return out.tell()
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.url}: {exc}") from exc

    # -- benchmarks --------------------------------------------------------------------

    def create_benchmark(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/benchmarks", json=body)

    def benchmark(self, benchmark_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/benchmarks/{benchmark_id}")

    # -- collections -------------------------------------------------------------------

    def collection(self, ident: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/collections/{quote(ident, safe='')}")

    def collections(self, limit: int) -> list[dict[str, Any]]:
        return self._data("GET", "/v1/collections", params={"limit": limit})

    def create_collection(self, name: str, description: str | None) -> dict[str, Any]:
        body = {"name": name, "description": description}
        return self._json("POST", "/v1/collections", json=body)

    def add_version(self, collection_id: str, rule: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/v1/collections/{collection_id}/versions", json=rule)

    def export(self, collection_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/v1/collections/{collection_id}/exports", json=body)

    def upload(self, path: Path, purpose: str = "batch") -> dict[str, Any]:
        with open(path, "rb") as fh:
            return self._json(
                "POST", "/v1/files", data={"purpose": purpose}, files={"file": (path.name, fh)}
            )

    # -- comparisons -----------------------------------------------------------------

    def create_comparison(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/comparisons", json=body)

    def comparisons(self, limit: int) -> list[dict[str, Any]]:
        return self._data("GET", "/v1/comparisons", params={"limit": limit})

    def comparison(self, comparison_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/comparisons/{quote(comparison_id, safe='')}")

    def export_preferences(self, comparison_id: str) -> dict[str, Any]:
        path = f"/v1/comparisons/{quote(comparison_id, safe='')}/exports"
        return self._json("POST", path, json={})

    # -- fine-tuning jobs ------------------------------------------------------------

    def create_fine_tuning_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/fine_tuning/jobs", json=body)

    def fine_tuning_jobs(self, limit: int) -> list[dict[str, Any]]:
        return self._data("GET", "/v1/fine_tuning/jobs", params={"limit": limit})

    def fine_tuning_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}")

    def cancel_fine_tuning_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/cancel")

    def fine_tuning_events(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        path = f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/events"
        return self._data("GET", path, params={"limit": limit})

    @staticmethod
    def _raise(resp: httpx.Response) -> None:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:500]
        raise ServerError(f"{resp.status_code}: {message}")


def _object(resp: httpx.Response, path: str) -> dict[str, Any]:
    body = resp.json()
    if not isinstance(body, dict):
        raise ServerError(f"{path}: the answer is {type(body).__name__}, not a JSON object")
    return body
