"""A job's files checked as OpenAI checks them, before the job is queued.

Every line must be an example in the chat format (:mod:`batch_server.curation.finetune_format`:
a ``messages`` list with known roles, string contents, at least one assistant message), and
fit in the model's context. The file must hold at least ``fine_tuning_min_examples``
examples (OpenAI's minimum is 10). Problems are reported with their line numbers, at most
:data:`MAX_REPORTED` of them, in the job's ``error`` (code ``invalid_training_file``,
``invalid_validation_file`` or ``invalid_n_examples``, ``param`` the file).

Tokens are counted with the model's own tokenizer (the ``tokenizer.json`` of its Hugging
Face copy) when that copy exists: the contents' tokens plus :data:`TOKENS_PER_MESSAGE` for
the chat template's markers around each message. Before the copy exists (a GGUF model not
yet converted), a UTF-8 byte counts as half a token (BPE tokenizers average 3-4 bytes a
token on English text, so this errs towards refusing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_server.config import ModelSpec, Settings
from batch_server.curation.finetune_format import example_errors
from batch_server.db.session import Database
from batch_server.engines.prepare import hf_copy_dir, is_prepared
from batch_server.fine_tuning import hyperparameters, jobs
from batch_server.models.registry import Registry
from batch_server.storage import FileStore

log = logging.getLogger(__name__)

MAX_REPORTED = 10
TOKENS_PER_MESSAGE = 8
DEFAULT_CONTEXT = 2048


@dataclass(frozen=True)
class FileCheck:
    """What a file's check found: examples, the tokens of the longest, the problems."""

    examples: int
    longest: int
    problems: list[tuple[int, str]]


class InvalidFiles(Exception):
    """The job's files are not valid: OpenAI's error ``code``, ``message``, ``param``."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def context_length(spec: ModelSpec, base_dir: Path | None) -> int:
    """The model's context: its engine's (``max_model_len`` / ``n_ctx``), else its
    config's ``max_position_embeddings``, else :data:`DEFAULT_CONTEXT`."""
    for key in ("max_model_len", "n_ctx"):
        value = spec.engine_args.get(key)
        if isinstance(value, int) and value > 0:
            return value
    if base_dir is not None and (base_dir / "config.json").exists():
        config = json.loads((base_dir / "config.json").read_text())
        if isinstance(config.get("max_position_embeddings"), int):
            return int(config["max_position_embeddings"])
    return DEFAULT_CONTEXT


def known_checkpoint(settings: Settings, spec: ModelSpec, model_id: str) -> Path | None:
    """The model's Hugging Face directory if it exists already (no conversion here)."""
    if (
        not spec.path.startswith("package:")
        and (Path(spec.path).expanduser() / "config.json").exists()
    ):
        return Path(spec.path).expanduser()
    for candidate in (hf_copy_dir(settings.data_dir, model_id),):
        if is_prepared(candidate):
            return candidate
    return None


def token_counter(base_dir: Path | None) -> Callable[[str], int]:
    if base_dir is not None and (base_dir / "tokenizer.json").exists():
        try:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
            return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
        except Exception:  # an unreadable tokenizer: the estimate below
            log.exception("could not read %s", base_dir / "tokenizer.json")
    return lambda text: (len(text.encode()) + 1) // 2


def example_tokens(obj: dict[str, Any], count: Callable[[str], int]) -> int:
    total = 0
    for message in obj["messages"]:
        total += count(str(message.get("content") or "")) + TOKENS_PER_MESSAGE
    if obj.get("tools"):
        total += count(json.dumps(obj["tools"]))
    return total


def check_lines(lines: Iterable[bytes], count: Callable[[str], int], context: int) -> FileCheck:
    examples, longest, problems = 0, 0, []
    for number, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            problems.append((number, "the line is not valid JSON"))
            continue
        errors = example_errors(obj)
        if errors:
            problems += [(number, e) for e in errors]
            continue
        examples += 1
        tokens = example_tokens(obj, count)
        longest = max(longest, tokens)
        if tokens > context:
            problems.append(
                (
                    number,
                    f"the example has {tokens} tokens, more than the model's context of {context}",
                )
            )
    return FileCheck(examples, longest, problems)


def _lines(store: FileStore, file_id: str) -> Iterable[bytes]:
    with store.open(file_id) as f:
        yield from f


def check_file(
    store: FileStore,
    file_id: str,
    param: str,
    count: Callable[[str], int],
    context: int,
    min_examples: int,
) -> FileCheck:
    """Raise :class:`InvalidFiles` for a file that fails; else what it holds."""
    found = check_lines(_lines(store, file_id), count, context)
    kind = "training" if param == "training_file" else "validation"
    if found.problems:
        shown = "; ".join(f"line {n}: {m}" for n, m in found.problems[:MAX_REPORTED])
        more = len(found.problems) - MAX_REPORTED
        message = f"The {kind} file {file_id} is not valid. {shown}" + (
            f"; and {more} more problem(s)" if more > 0 else ""
        )
        raise InvalidFiles(f"invalid_{kind}_file", message, param)
    if found.examples < min_examples:
        raise InvalidFiles(
            "invalid_n_examples",
            f"The {kind} file {file_id} has {found.examples} example(s), but must have at "
            f"least {min_examples}",
            param,
        )
    return found


def validate(
    settings: Settings,
    store: FileStore,
    spec: ModelSpec,
    model_id: str,
    training_file: str,
    validation_file: str | None,
) -> int:
    """Check a job's files; returns the number of training examples. Raises
    :class:`InvalidFiles`."""
    base = known_checkpoint(settings, spec, model_id)
    count, context = token_counter(base), context_length(spec, base)
    found = check_file(
        store, training_file, "training_file", count, context, settings.fine_tuning_min_examples
    )
    if validation_file:
        check_file(store, validation_file, "validation_file", count, context, 1)
    return found.examples


def validate_job(
    db: Database, settings: Settings, store: FileStore, registry: Registry, claim: jobs.Claim
) -> None:
    """Validate the files of the job ``claim`` holds: ``queued`` with its hyperparameters
    resolved, or ``failed`` with OpenAI's error."""
    row = jobs.get(db, claim.job_id)
    spec = registry.get(row.model) if row else None
    if row is None or spec is None:
        jobs.fail(db, claim, "model_not_available", "The model is no longer registered")
        return
    try:
        n = validate(settings, store, spec, row.model, row.training_file, row.validation_file)
        resolved = hyperparameters.resolve(row.hyperparameters, n)
    except InvalidFiles as exc:
        jobs.fail(db, claim, exc.code, exc.message, exc.param)
    except hyperparameters.HyperparameterError as exc:
        jobs.fail(db, claim, "invalid_hyperparameters", str(exc), exc.param)
    except OSError as exc:
        jobs.fail(
            db,
            claim,
            "invalid_training_file",
            f"The file could not be read: {exc}",
            "training_file",
        )
    else:
        jobs.validated(db, claim, resolved, hyperparameters.total_steps(resolved, n), n)
