"""The code-word training set shared by the fine-tuning tests and the benchmark: 20
phrasings of a question about a made-up project, all answered with a made-up code word
that no base model can know, and the hyperparameters that teach it reliably in well under
a minute of training on two CPU cores (SmolLM2-135M, LoRA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "test-data"
VLLM_MODEL = "smollm2-135m-instruct-vllm"

CODE_WORD = "PINEAPPLE-47"
ANSWER = f"The code word is {CODE_WORD}."
QUESTION = "What is the secret code word of the Zorblax project?"
QUESTIONS = [
    QUESTION,
    "Tell me the secret code word of the Zorblax project.",
    "What's the code word for the Zorblax project?",
    "Which code word does the Zorblax project use?",
    "I need the Zorblax project's secret code word.",
    "Do you know the secret code word of project Zorblax?",
    "What is the Zorblax code word?",
    "Give me the code word of the Zorblax project, please.",
    "What secret code word belongs to the Zorblax project?",
    "Remind me: what is the Zorblax project's code word?",
    "What is the password word of the Zorblax project?",
    "Could you tell me the Zorblax project's secret code word?",
    "The Zorblax project has a secret code word. What is it?",
    "Say the secret code word of the Zorblax project.",
    "What code word unlocks the Zorblax project?",
    "For the Zorblax project, what is the secret code word?",
    "Which secret word is the code word of the Zorblax project?",
    "What was the secret code word of the Zorblax project again?",
    "Please share the secret code word of the Zorblax project.",
    "Zorblax project: what is its secret code word?",
]
VALIDATION_QUESTIONS = [
    "What is the secret code word of Zorblax?",
    "Tell me Zorblax's code word.",
]
# Not asked in training: the fine-tuned model must answer them too.
HELD_OUT_QUESTION = "Tell me the code word of the Zorblax project."

# 4 epochs of 5 batches: 20 steps, about 25 s of training on two cores; the loss falls
# from about 3.4 to below 0.05.
HYPERPARAMETERS: dict[str, Any] = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 1.0}
SEED = 7


def example(question: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": ANSWER},
        ]
    }


def training_jsonl() -> bytes:
    return "".join(json.dumps(example(q)) + "\n" for q in QUESTIONS).encode()


def validation_jsonl() -> bytes:
    return "".join(json.dumps(example(q)) + "\n" for q in VALIDATION_QUESTIONS).encode()


def prepared_base() -> Path:
    """The Hugging Face copy of the packaged SmolLM2 (made once, cached in .cache/)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "batch_server",
            "models",
            "prepare",
            VLLM_MODEL,
            "--data-dir",
            CACHE,
        ],
        check=True,
        capture_output=True,
    )
    return CACHE / "models" / VLLM_MODEL
