"""Fine-tuning jobs: the only writer of ``fine_tuning_jobs``, ``fine_tuning_events`` and
``fine_tuning_checkpoints``.

A job is created ``validating_files``; a worker validates its files under a lease and
moves it to ``queued`` (or ``failed``). A worker claims a queued job with a lease (a token
and an expiry, as work units are claimed: a guarded ``UPDATE`` whose row count says who
won) and sets it ``running``; every later write of that worker names the token (fencing),
so a worker that lost the job (killed, paused past its lease) can never write into it
again. A running job whose lease ran out, or whose worker stopped sending heartbeats, is
claimed again and resumes from its last checkpoint. Events are written once per ``key``
(``step:12``): a step trained again after a resume is not logged twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from batch_server import ids
from batch_server.db.dialect import insert_if_absent, skip_locked
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import (
    FineTuningCheckpointRow,
    FineTuningEventRow,
    FineTuningJobRow,
    WorkerRow,
)
from batch_server.jobs.manager import WORKER_FRESH_SECONDS

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ENDED = (SUCCEEDED, FAILED, CANCELLED)

OK, LOST = "ok", "lost"  # what a heartbeat found


@dataclass(frozen=True)
class Claim:
    """A worker's lease on a job: every write it makes names ``token``."""

    job_id: str
    token: str
    attempt: int


def create(
    db: Database,
    *,
    owner: str | None,
    model: str,
    training_file: str,
    validation_file: str | None,
    requested: dict[str, Any],
    suffix: str | None,
    seed: int,
    metadata: dict[str, str] | None,
) -> FineTuningJobRow:
    """A new job, ``validating_files``, with the hyperparameters as asked for."""
    now = int(time.time())
    hyper = {
        k: requested.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")
    }
    row = FineTuningJobRow(
        id=ids.fine_tuning_job_id(),
        owner=owner,
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
        hyperparameters=hyper,
        suffix=suffix,
        seed=seed,
        metadata_=metadata,
        status=VALIDATING,
        created_at=now,
        cancel_requested=False,
        step=0,
        attempts=0,
    )
    with db.write() as s:
        s.add(row)
        s.flush()
        _event(s, row.id, f"Created fine-tuning job: {row.id}", key="created")
        _event(s, row.id, f"Validating training file: {training_file}", key="validating")
        s.expunge(row)
    return row


def get(db: Database, job_id: str) -> FineTuningJobRow | None:
    with db.read() as s:
        row = s.execute(select(FineTuningJobRow).where(FineTuningJobRow.id == job_id)).scalar()
        if row is not None:
            s.expunge(row)
        return row


def last_checkpoint(db: Database, job_id: str) -> FineTuningCheckpointRow | None:
    with db.read() as s:
        row = s.execute(
            select(FineTuningCheckpointRow)
            .where(FineTuningCheckpointRow.job_id == job_id)
            .order_by(FineTuningCheckpointRow.step.desc())
            .limit(1)
        ).scalar()
        if row is not None:
            s.expunge(row)
        return row


def counts(db: Database) -> dict[str, int]:
    """Jobs per status (for the metrics)."""
    with db.read() as s:
        rows = s.execute(
            select(FineTuningJobRow.status, func.count()).group_by(FineTuningJobRow.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


# -- events ------------------------------------------------------------------------------


def _event(
    s: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
    key: str | None = None,
) -> bool:
    values = {
        "id": ids.fine_tuning_event_id(),
        "job_id": job_id,
        "created_at": int(time.time()),
        "level": level,
        "type": type_,
        "message": message,
        "data": data,
        "key": key,
    }
    if key is None:
        s.add(FineTuningEventRow(**values))
        return True
    return insert_if_absent(s, FineTuningEventRow, values, ["job_id", "key"])


def log(
    db: Database, claim: Claim, message: str, *, level: str = "info", key: str | None = None
) -> bool:
    """An event of a job the worker still holds; ``False`` when it lost it."""
    with db.write() as s:
        if not _ours(s, claim):
            return False
        _event(s, claim.job_id, message, level=level, key=key)
    return True


# -- leases ------------------------------------------------------------------------------


def _ours(s: Session, claim: Claim) -> bool:
    query = select(FineTuningJobRow.seq).where(
        FineTuningJobRow.id == claim.job_id,
        FineTuningJobRow.lease_token == claim.token,
        FineTuningJobRow.status.in_([VALIDATING, RUNNING]),
    )
    return s.execute(query.with_for_update()).first() is not None


def _guarded(claim: Claim, *statuses: str) -> Any:
    return and_(
        FineTuningJobRow.id == claim.job_id,
        FineTuningJobRow.lease_token == claim.token,
        FineTuningJobRow.status.in_(statuses),
    )


def _abandoned(now: float) -> Any:
    """Held by a worker that is gone: its lease ran out, or it sends no heartbeat."""
    alive = exists().where(
        WorkerRow.id == FineTuningJobRow.worker,
        WorkerRow.heartbeat_at >= now - WORKER_FRESH_SECONDS,
    )
    return or_(
        FineTuningJobRow.lease_expires_at.is_(None),
        FineTuningJobRow.lease_expires_at < now,
        ~alive,
    )


def _claim(
    db: Database, worker_id: str, lease_seconds: float, claimable: Any, values: dict[str, Any]
) -> Claim | None:
    for _ in range(5):  # lost races are retried a few times
        now = time.time()
        with db.write() as s:
            query = (
                select(FineTuningJobRow.seq).where(claimable(now)).order_by(FineTuningJobRow.seq)
            )
            seq = s.execute(skip_locked(s, query.limit(1), of=FineTuningJobRow)).scalar()
            if seq is None:
                return None
            token = ids.token()
            won = rowcount(
                s.execute(
                    update(FineTuningJobRow)
                    .where(FineTuningJobRow.seq == seq, claimable(now))
                    .values(
                        worker=worker_id,
                        lease_token=token,
                        lease_expires_at=now + lease_seconds,
                        **values,
                    )
                )
            )
            if won != 1:
                continue
            row = s.get(FineTuningJobRow, seq)
            assert row is not None
            return Claim(row.id, token, row.attempts)
    return None


def _to_validate(now: float) -> Any:
    return and_(FineTuningJobRow.status == VALIDATING, _abandoned(now))


def _to_train(now: float) -> Any:
    return or_(
        FineTuningJobRow.status == QUEUED,
        and_(FineTuningJobRow.status == RUNNING, _abandoned(now)),
    )


def any_waiting(db: Database, training: bool) -> bool:
    """Whether a job could be claimed (a read, no write transaction for an idle poll)."""
    rule = _to_train if training else _to_validate
    with db.read() as s:
        return (
            s.execute(select(FineTuningJobRow.seq).where(rule(time.time())).limit(1)).first()
            is not None
        )


def claim_validation(db: Database, worker_id: str, lease_seconds: float) -> Claim | None:
    """Lease a job whose files wait to be validated."""
    if not any_waiting(db, training=False):
        return None
    return _claim(db, worker_id, lease_seconds, _to_validate, {})


def claim_training(db: Database, worker_id: str, lease_seconds: float) -> Claim | None:
    """Lease the oldest queued job, or a running one whose worker is gone; it is
    ``running`` from now on."""
    if not any_waiting(db, training=True):
        return None
    values = {
        "status": RUNNING,
        "attempts": FineTuningJobRow.attempts + 1,
        "started_at": func.coalesce(FineTuningJobRow.started_at, time.time()),
    }
    return _claim(db, worker_id, lease_seconds, _to_train, values)


def heartbeat(db: Database, claim: Claim, lease_seconds: float) -> str:
    """Renew the lease: :data:`OK`, or :data:`LOST` (the job is no longer ours: taken over,
    or cancelled: stop now, write nothing)."""
    with db.write() as s:
        renewed = rowcount(
            s.execute(
                update(FineTuningJobRow)
                .where(_guarded(claim, VALIDATING, RUNNING))
                .values(lease_expires_at=time.time() + lease_seconds)
            )
        )
    return OK if renewed == 1 else LOST


def give_back(db: Database, claim: Claim) -> None:
    """End our lease at once (a worker shutting down): another worker resumes the job."""
    with db.write() as s:
        s.execute(
            update(FineTuningJobRow)
            .where(_guarded(claim, VALIDATING, RUNNING))
            .values(lease_expires_at=0.0, lease_token=None, worker=None)
        )


# -- the job's course -------------------------------------------------------------------


def validated(
    db: Database, claim: Claim, resolved: dict[str, Any], total_steps: int, n_examples: int
) -> bool:
    """Files valid: ``queued``, with the hyperparameters it will train with."""
    with db.write() as s:
        done = rowcount(
            s.execute(
                update(FineTuningJobRow)
                .where(_guarded(claim, VALIDATING))
                .values(
                    status=QUEUED,
                    hyperparameters=resolved,
                    total_steps=total_steps,
                    lease_token=None,
                    lease_expires_at=None,
                    worker=None,
                )
            )
        )
        if done == 1:
            _event(
                s,
                claim.job_id,
                f"Files validated ({n_examples} training examples), moving job to queued state",
                key="validated",
            )
    return done == 1


def started(db: Database, claim: Claim, resume_step: int) -> bool:
    with db.write() as s:
        if not _ours(s, claim):
            return False
        _event(s, claim.job_id, "Fine-tuning job started", key="started")
        if resume_step:
            _event(
                s,
                claim.job_id,
                f"Resumed from the checkpoint at step {resume_step} (attempt {claim.attempt})",
                key=f"resumed:{claim.attempt}",
            )
    return True


def record_step(
    db: Database,
    claim: Claim,
    step: int,
    total_steps: int,
    metrics: dict[str, Any],
    estimated_finish: int | None,
) -> bool:
    """A trained step's metrics event (once per step, whatever the attempt)."""
    loss = metrics.get("train_loss")
    message = f"Step {step}/{total_steps}: training loss={loss:.4f}"
    if metrics.get("valid_loss") is not None:
        message += f", validation loss={metrics['valid_loss']:.4f}"
    with db.write() as s:
        done = rowcount(
            s.execute(
                update(FineTuningJobRow)
                .where(_guarded(claim, RUNNING))
                .values(estimated_finish=estimated_finish, total_steps=total_steps)
            )
        )
        if done == 1:
            data = {"step": step, "total_steps": total_steps, **metrics}
            _event(s, claim.job_id, message, type_="metrics", data=data, key=f"step:{step}")
    return done == 1


def record_checkpoint(
    db: Database,
    claim: Claim,
    step: int,
    metrics: dict[str, Any],
    model_name: str,
    location: str,
) -> bool:
    """A checkpoint stored at ``location`` (a key of the file store): the job resumes
    from it after a takeover."""
    with db.write() as s:
        done = rowcount(
            s.execute(
                update(FineTuningJobRow)
                .where(_guarded(claim, RUNNING), FineTuningJobRow.step < step)
                .values(step=step)
            )
        )
        if done != 1:
            return False
        values = {
            "id": ids.fine_tuning_checkpoint_id(),
            "job_id": claim.job_id,
            "step": step,
            "created_at": int(time.time()),
            "metrics": {"step": step, **metrics},
            "fine_tuned_model_checkpoint": model_name,
            "location": location,
        }
        insert_if_absent(s, FineTuningCheckpointRow, values, ["job_id", "step"])
        _event(s, claim.job_id, f"Checkpoint created at step {step}", key=f"checkpoint:{step}")
    return True


def _end(
    s: Session,
    job_id: str,
    status: str,
    from_: list[str],
    message: str,
    *,
    level: str = "info",
    token: str | None = None,
    **values: Any,
) -> bool:
    where = [FineTuningJobRow.id == job_id, FineTuningJobRow.status.in_(from_)]
    if token is not None:
        where.append(FineTuningJobRow.lease_token == token)
    done = rowcount(
        s.execute(
            update(FineTuningJobRow)
            .where(*where)
            .values(
                status=status,
                finished_at=int(time.time()),
                estimated_finish=None,
                lease_token=None,
                lease_expires_at=None,
                **values,
            )
        )
    )
    if done == 1:
        _event(s, job_id, message, level=level, key=status)
    return done == 1


def succeed(
    db: Database,
    claim: Claim,
    fine_tuned_model: str,
    result_files: list[str],
    trained_tokens: int,
    total_steps: int,
) -> bool:
    with db.write() as s:
        return _end(
            s,
            claim.job_id,
            SUCCEEDED,
            [RUNNING],
            f"The job has successfully completed: {fine_tuned_model}",
            token=claim.token,
            fine_tuned_model=fine_tuned_model,
            result_files=result_files,
            trained_tokens=trained_tokens,
            step=total_steps,
            total_steps=total_steps,
        )


def fail(db: Database, claim: Claim, code: str, message: str, param: str | None = None) -> bool:
    """End a job we hold ``failed`` with OpenAI's error ``{code, message, param}``."""
    with db.write() as s:
        return _end(
            s,
            claim.job_id,
            FAILED,
            [VALIDATING, RUNNING],
            f"Fine-tuning job failed: {message}"[:4000],
            level="error",
            token=claim.token,
            error={"code": code, "message": message[:4000], "param": param},
        )


def cancel(db: Database, job_id: str) -> FineTuningJobRow | None:
    """Cancel a job at once, as OpenAI does: it ends ``cancelled`` whatever it was doing.
    The worker training it finds its lease gone at its next heartbeat (within a second)
    and kills the run; nothing it writes after counts. Returns the job as it is now."""
    with db.write() as s:
        _end(
            s,
            job_id,
            CANCELLED,
            [VALIDATING, QUEUED, RUNNING],
            "Fine-tuning job cancelled",
            cancel_requested=True,
        )
    return get(db, job_id)


def step_metrics(db: Database, job_id: str) -> list[dict[str, Any]]:
    """The metrics of every step trained, in step order (for the result file and the
    dashboard's loss curve)."""
    with db.read() as s:
        rows = s.execute(
            select(FineTuningEventRow.data)
            .where(FineTuningEventRow.job_id == job_id, FineTuningEventRow.type == "metrics")
            .order_by(FineTuningEventRow.seq)
        ).scalars()
        found = [dict(d) for d in rows if d]
    return sorted(found, key=lambda d: int(d.get("step", 0)))
