"""The Label Studio round trip: a batch's requests go to a Label Studio project as tasks
(the model's answer as a prediction, so the annotator starts from it), and the
annotations made there come back as annotations here (``source="label_studio"``).

Which request became which task is kept in ``label_studio_tasks``: a request is sent to a
project once, and only tasks sent from here are read back. What maps to what is in
docs/label-studio.md; :data:`LABEL_CONFIG` is the project's labeling interface.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from batch_server.curation import annotations as notes
from batch_server.curation import requests, texts
from batch_server.curation.label_studio_client import LabelStudio, LabelStudioError
from batch_server.curation.requests import RequestPair
from batch_server.db.session import Database
from batch_server.db.tables import AnnotationRow, BatchRow, LabelStudioTaskRow
from batch_server.storage import FileStore

__all__ = ["LABEL_CONFIG", "LabelStudio", "LabelStudioError", "Filter", "export", "pull"]

# The names below (fixed_answer, label, rating, note) are what :func:`verdict` reads back.
LABEL_CONFIG = """<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Model answer ($custom_id)"/>
  <Text name="answer" value="$answer"/>
  <Header value="Corrected answer (edit it if the answer needs fixing)"/>
  <TextArea name="fixed_answer" toName="answer" editable="true" maxSubmissions="1" rows="6"/>
  <Header value="Verdict"/>
  <Choices name="label" toName="answer" choice="single" showInline="true">
    <Choice value="golden" hint="right as is"/>
    <Choice value="fixed" hint="right once corrected"/>
    <Choice value="wrong"/>
    <Choice value="skip"/>
  </Choices>
  <Rating name="rating" toName="answer" maxRating="5"/>
  <TextArea name="note" toName="answer" placeholder="Note" maxSubmissions="1" rows="2"/>
</View>"""

CHUNK = 100  # tasks per import call
_EXPORTING = threading.Lock()  # one export at a time: a request is never sent twice


@dataclass(frozen=True)
class Filter:
    """Which requests of a batch to send: those with one of ``labels`` here (``"none"``:
    not annotated yet), only ``custom_ids``, only failed (True) or only answered (False)
    requests, and at most ``limit`` new tasks."""

    labels: Sequence[str] | None = None
    custom_ids: Sequence[str] | None = None
    failed: bool | None = None
    limit: int | None = None


@dataclass
class Exported:
    project_id: int
    project_created: bool
    tasks_created: int = 0
    already_sent: int = 0
    task_ids: list[int] = field(default_factory=list)


@dataclass
class Pulled:
    imported: int = 0
    unchanged: int = 0
    not_annotated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# -- export ------------------------------------------------------------------------------


def export(
    db: Database,
    store: FileStore,
    ls: LabelStudio,
    batch: BatchRow,
    project_id: int | None,
    flt: Filter,
) -> Exported:
    """Send the requests of ``batch`` that ``flt`` selects to project ``project_id`` (a
    new project when None) as tasks with the model's answer as a prediction."""
    with _EXPORTING:
        if project_id is None:
            description = f"Answers of batch {batch.id} ({batch.model or 'default model'})"
            created = ls.create_project(f"Review {batch.id}", LABEL_CONFIG, description)
            out = Exported(created, project_created=True)
        else:
            ls.project(project_id)
            out = Exported(project_id, project_created=False)
        sent = _sent(db, batch.id, out.project_id)
        for chunk in _chunks(_selected(db, store, batch, flt, sent, out), CHUNK):
            tasks = [_task(batch, pair) for pair in chunk]
            ids = ls.import_tasks(out.project_id, tasks)
            _record(db, batch.id, out.project_id, [p.custom_id for p in chunk], ids)
            out.tasks_created += len(ids)
            out.task_ids += ids
        return out


def _selected(
    db: Database,
    store: FileStore,
    batch: BatchRow,
    flt: Filter,
    sent: set[str],
    out: Exported,
) -> Iterator[RequestPair]:
    wanted = set(flt.custom_ids) if flt.custom_ids is not None else None
    labels = set(flt.labels) if flt.labels is not None else None
    taken = 0
    for chunk in _chunks(requests.iter_pairs(db, store, batch), CHUNK):
        found = notes.for_batch(db, batch.id, [p.custom_id for p in chunk]) if labels else {}
        for pair in chunk:
            if flt.limit is not None and taken >= flt.limit:
                return
            if wanted is not None and pair.custom_id not in wanted:
                continue
            if pair.status_code is None:
                continue  # not run yet: nothing to review
            failed = pair.status_code != 200
            if flt.failed is not None and failed != flt.failed:
                continue
            if labels is not None:
                row = found.get(pair.custom_id)
                label = row.label if row is not None and row.label is not None else "none"
                if label not in labels:
                    continue
            if pair.custom_id in sent:
                out.already_sent += 1
                continue
            taken += 1
            yield pair


def _task(batch: BatchRow, pair: RequestPair) -> dict[str, Any]:
    answer = answer_text(pair)
    model = pair.model or batch.model or "unknown"
    task: dict[str, Any] = {
        "data": {
            "custom_id": pair.custom_id,
            "batch_id": batch.id,
            "request_index": pair.index,
            "model": model,
            "prompt": texts.prompt_text(pair.request),
            "answer": answer,
        }
    }
    if pair.status_code == 200:
        task["predictions"] = [
            {
                "model_version": model,
                "result": [
                    {
                        "from_name": "fixed_answer",
                        "to_name": "answer",
                        "type": "textarea",
                        "value": {"text": [answer]},
                    }
                ],
            }
        ]
    return task


def _sent(db: Database, batch_id: str, project_id: int) -> set[str]:
    with db.read() as s:
        return set(
            s.execute(
                select(LabelStudioTaskRow.custom_id).where(
                    LabelStudioTaskRow.batch_id == batch_id,
                    LabelStudioTaskRow.project_id == project_id,
                )
            ).scalars()
        )


def _record(
    db: Database, batch_id: str, project_id: int, custom_ids: list[str], task_ids: list[int]
) -> None:
    now = time.time()
    with db.write() as s:
        for custom_id, task_id in zip(custom_ids, task_ids, strict=True):
            s.add(
                LabelStudioTaskRow(
                    batch_id=batch_id,
                    custom_id=custom_id,
                    project_id=project_id,
                    task_id=task_id,
                    pushed_at=now,
                    pulled_at=None,
                )
            )


# -- import ------------------------------------------------------------------------------


def pull(
    db: Database,
    store: FileStore,
    ls: LabelStudio,
    batch: BatchRow,
    project_id: int | None,
) -> Pulled:
    """Read the annotations of the tasks sent from ``batch`` (to ``project_id``, or to
    every project) and write them here as annotations."""
    out = Pulled()
    rows = _tasks_of(db, batch.id, project_id)
    if project_id is not None and not rows:
        ls.project(project_id)  # a clear error for a project that does not exist
    users: dict[int, str] | None = None
    for pid in sorted({r.project_id for r in rows}):
        mine = {r.task_id: r for r in rows if r.project_id == pid}
        found = {int(t["id"]): t for t in ls.tasks(pid, list(mine)) if "id" in t}
        for task_id, row in mine.items():
            task = found.get(task_id)
            if task is None:
                out.skip("task deleted in Label Studio")
                continue
            latest = _latest(task.get("annotations") or [])
            if latest is None:
                out.not_annotated += 1
                continue
            if users is None:
                users = ls.user_names()
            _apply(db, store, batch, row, task, latest, users, out)
    return out


def _apply(
    db: Database,
    store: FileStore,
    batch: BatchRow,
    row: LabelStudioTaskRow,
    task: dict[str, Any],
    annotation: dict[str, Any],
    users: dict[int, str],
    out: Pulled,
) -> None:
    data = task.get("data") or {}
    answer = data.get("answer")
    answer = answer if isinstance(answer, str) else ""
    try:
        v = verdict(annotation, answer)
    except ValueError as exc:
        out.skip(str(exc))
        return
    rater = _rater(annotation, users)
    existing = notes.get(db, batch.id, row.custom_id)
    if existing is not None and _same(existing, v, rater):
        out.unchanged += 1
        _pulled(db, row.id)
        return
    if (
        existing is not None
        and existing.source != "label_studio"
        and existing.updated_at > _timestamp(annotation.get("updated_at"))
    ):
        out.skip("changed here after it was annotated in Label Studio")
        return
    pair = requests.find(db, store, batch, row.custom_id)
    if pair is None:
        out.skip("request no longer in the batch")
        return
    target = notes.Target(
        batch.id, row.custom_id, pair.index, batch.owner, pair.model or batch.model
    )
    try:
        notes.put(db, target, v, rater, source="label_studio")
    except notes.InvalidAnnotation as exc:
        out.skip(str(exc))
        return
    out.imported += 1
    _pulled(db, row.id)


def verdict(annotation: dict[str, Any], answer: str) -> notes.Verdict:
    """An annotation of the labeling config as a verdict here. The choice is the label; a
    corrected answer (the TextArea's text differs from the model's answer) makes it
    ``fixed`` unless the choice is ``wrong`` or ``skip``; Label Studio's "Skip" button is
    ``skip``. Raises ValueError (the reason) for an annotation that says nothing usable."""
    if annotation.get("was_cancelled"):
        return notes.Verdict(label="skip")
    choice: str | None = None
    text: str | None = None
    note: str | None = None
    rating: int | None = None
    for item in annotation.get("result") or []:
        if not isinstance(item, dict):
            continue
        name, value = item.get("from_name"), item.get("value") or {}
        if name == "label" and value.get("choices"):
            choice = str(value["choices"][0])
        elif name == "fixed_answer" and value.get("text"):
            text = "\n".join(str(t) for t in value["text"])
        elif name == "note" and value.get("text"):
            note = "\n".join(str(t) for t in value["text"]).strip() or None
        elif name == "rating" and isinstance(value.get("rating"), int | float):
            rating = int(value["rating"])
    corrected = text is not None and text.strip() != "" and text.strip() != answer.strip()
    label = choice
    if corrected and label in (None, "golden", "fixed"):
        return notes.Verdict("fixed", text, note, rating)
    if label == "fixed":
        raise ValueError("'fixed' without a corrected answer")
    if label is None and note is None and rating is None:
        raise ValueError("annotation without a verdict, rating or note")
    return notes.Verdict(label, None, note, rating)


def _same(row: AnnotationRow, v: notes.Verdict, rater: str) -> bool:
    return (row.label, row.fixed_answer, row.note, row.rating, row.rater, row.source) == (
        v.label,
        v.fixed_answer,
        v.note,
        v.rating,
        rater,
        "label_studio",
    )


def _latest(items: Iterable[Any]) -> dict[str, Any] | None:
    found = [a for a in items if isinstance(a, dict)]
    if not found:
        return None
    return max(found, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))


def _rater(annotation: dict[str, Any], users: dict[int, str]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # an export that expands the user
        return str(who.get("email") or who.get("username") or f"user {who.get('id')}")
    if isinstance(who, int) and who in users:
        return users[who]
    return f"label studio user {who}"


def _timestamp(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _tasks_of(db: Database, batch_id: str, project_id: int | None) -> list[LabelStudioTaskRow]:
    query = select(LabelStudioTaskRow).where(LabelStudioTaskRow.batch_id == batch_id)
    if project_id is not None:
        query = query.where(LabelStudioTaskRow.project_id == project_id)
    with db.read() as s:
        rows = list(s.execute(query.order_by(LabelStudioTaskRow.id)).scalars())
        for r in rows:
            s.expunge(r)
        return rows


def _pulled(db: Database, row_id: int) -> None:
    with db.write() as s:
        row = s.get(LabelStudioTaskRow, row_id)
        if row is not None:
            row.pulled_at = time.time()


# -- texts -------------------------------------------------------------------------------


def answer_text(pair: RequestPair) -> str:
    """The model's answer as text; a failed request's error message."""
    if pair.status_code != 200 or pair.response is None:
        message = (pair.error or {}).get("message") if pair.error else None
        return f"[request failed: {message or pair.status_code}]"
    text = texts.answer_text(pair.response)
    return text if text is not None else json.dumps(pair.response, ensure_ascii=False, indent=2)


def _chunks(items: Iterable[RequestPair], size: int) -> Iterator[list[RequestPair]]:
    chunk: list[RequestPair] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
