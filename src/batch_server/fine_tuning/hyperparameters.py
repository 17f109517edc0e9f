"""OpenAI's fine-tuning hyperparameters (``n_epochs``, ``batch_size``,
``learning_rate_multiplier``, each a number or ``"auto"``) turned into the values a job
trains with, plus the LoRA settings behind them.

The ``"auto"`` rules:

- ``n_epochs``: OpenAI's published rule. 3 epochs, raised for a small file so that at
  least 100 examples are trained (at most 25 epochs), lowered for a large one so that at
  most 25,000 are (at least 1 epoch).
- ``batch_size``: about 0.2 % of the examples (OpenAI's rule of thumb), at least 1 and
  at most 16 (a CPU or a small GPU trains one batch at a time).
- ``learning_rate_multiplier``: 1.0, i.e. :data:`BASE_LEARNING_RATE`, a usual learning
  rate for LoRA; the multiplier scales it (OpenAI scales a learning rate it does not
  publish; ours is this one).

The LoRA adapter: rank :data:`LORA_R`, alpha :data:`LORA_ALPHA`, dropout
:data:`LORA_DROPOUT`, on every linear layer of the transformer blocks (attention and MLP
projections; not the embeddings or the output head).
"""

from __future__ import annotations

import math
from typing import Any

BASE_LEARNING_RATE = 5e-4
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
TARGET_MODULES = "all-linear"  # peft: every linear layer but the output head

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
MAX_AUTO_BATCH_SIZE = 16

# The three keys of OpenAI's ``hyperparameters`` object; the rest are ours.
OPENAI_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")

LIMITS = {
    "n_epochs": (1, 50),
    "batch_size": (1, 256),
    "learning_rate_multiplier": (0.0, 100.0),
}


class HyperparameterError(ValueError):
    """A hyperparameter out of range or of the wrong type; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def auto_epochs(n_examples: int) -> int:
    n = max(1, n_examples)
    epochs = TARGET_EPOCHS
    if n * epochs < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
    elif n * epochs > MAX_TARGET_EXAMPLES:
        epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return epochs


def auto_batch_size(n_examples: int) -> int:
    return max(1, min(MAX_AUTO_BATCH_SIZE, round(n_examples * 0.002)))


def check(requested: dict[str, Any] | None) -> None:
    """Raise :class:`HyperparameterError` for a value OpenAI would refuse (for the API to
    answer 400 before a job is made)."""
    for key, value in (requested or {}).items():
        if key not in LIMITS:
            raise HyperparameterError(key, f"Unknown hyperparameter '{key}'")
        if value == "auto" or value is None:
            continue
        low, high = LIMITS[key]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key != "learning_rate_multiplier" and not isinstance(value, int):
            is_number = False
        if not is_number:
            kind = "a number" if key == "learning_rate_multiplier" else "an integer"
            raise HyperparameterError(key, f"'{key}' must be {kind} or 'auto'")
        if not (low < value <= high if key == "learning_rate_multiplier" else low <= value <= high):
            raise HyperparameterError(key, f"'{key}' must be in ({low}, {high}]: {value}")


def resolve(requested: dict[str, Any] | None, n_examples: int) -> dict[str, Any]:
    """The values a job trains with: OpenAI's three (numbers, "auto" resolved) and ours
    (``learning_rate``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``)."""
    requested = requested or {}
    check(requested)

    def given(key: str) -> Any:
        value = requested.get(key)
        return None if value in (None, "auto") else value

    n_epochs = int(given("n_epochs") or auto_epochs(n_examples))
    batch_size = int(given("batch_size") or auto_batch_size(n_examples))
    multiplier = float(given("learning_rate_multiplier") or 1.0)
    return {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": multiplier,
        "learning_rate": BASE_LEARNING_RATE * multiplier,
        "lora_r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": LORA_DROPOUT,
        "target_modules": TARGET_MODULES,
    }


def complete(resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` with any of our keys it lacks (a job stored before they existed, or
    OpenAI's three alone) filled in as :func:`resolve` would."""
    multiplier = float(resolved.get("learning_rate_multiplier") or 1.0)
    defaults = {
        "learning_rate": BASE_LEARNING_RATE * multiplier,
        "lora_r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": LORA_DROPOUT,
        "target_modules": TARGET_MODULES,
    }
    return defaults | resolved


def openai_view(resolved: dict[str, Any]) -> dict[str, Any]:
    """The part of :func:`resolve`'s answer that OpenAI's job object shows."""
    return {key: resolved[key] for key in OPENAI_KEYS}


def total_steps(resolved: dict[str, Any], n_examples: int) -> int:
    per_epoch = math.ceil(max(1, n_examples) / int(resolved["batch_size"]))
    return per_epoch * int(resolved["n_epochs"])
