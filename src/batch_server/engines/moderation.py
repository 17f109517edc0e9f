"""``/v1/moderations`` on a small toxicity classifier, in NumPy on the CPU.

The model is the one the ``toxic-comment-classifier`` PyPI package ships (MIT licence): a
Keras bidirectional LSTM trained on the Jigsaw toxic comment data, with six sigmoid outputs
(``toxic``, ``severe_toxic``, ``obscene``, ``threat``, ``insult``, ``identity_hate``). Its
weights (``model.weights.h5``) are read with h5py and its word index
(``tokenizer.pickle``) with an unpickler that builds nothing but plain containers, so
neither TensorFlow nor any code from the pickle runs. The forward pass is written here:
embedding → bidirectional LSTM (50 units each way) → max over time → dense ReLU (50) →
dense sigmoid (6), as the package's ``model.py`` declares it.

:data:`CATEGORY_SOURCES` maps the six labels to OpenAI's categories; a category the model
has no label for scores 0 (see docs/api.md, "Moderations").
"""

from __future__ import annotations

import collections
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batch_server import ids
from batch_server.engines.base import (
    EngineRequest,
    EngineResult,
    RequestRejected,
    StopCheck,
    request_failed,
)

MODERATIONS = "/v1/moderations"
LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAX_LEN = 100  # words the model reads (the last ones of a longer text, as Keras pads)
THRESHOLD = 0.5
MAX_INPUTS = 32

# OpenAI category -> how its score comes from the labels' scores: "any" takes the largest
# (any of the labels), "all" the smallest (both at once); no labels: the model cannot see
# that category and scores it 0.
CATEGORY_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "harassment": ("any", ("toxic", "insult")),
    "harassment/threatening": ("all", ("insult", "threat")),
    "hate": ("any", ("identity_hate",)),
    "hate/threatening": ("all", ("identity_hate", "threat")),
    "illicit": ("any", ()),
    "illicit/violent": ("any", ()),
    "self-harm": ("any", ()),
    "self-harm/intent": ("any", ()),
    "self-harm/instructions": ("any", ()),
    "sexual": ("any", ()),
    "sexual/minors": ("any", ()),
    "violence": ("any", ("threat",)),
    "violence/graphic": ("any", ()),
}
_ACCEPTED = {"model", "input"}

FloatArray = NDArray[np.float32]


class _Tokenizer:
    """The state of the pickled Keras ``Tokenizer`` (its attributes, nothing else)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# The containers (and a defaultdict's factories) that the tokenizer's state is built of.
_CONTAINERS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
}


class _WordIndexUnpickler(pickle.Unpickler):
    """Builds the tokenizer's state only: any other class in the pickle is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "Tokenizer" and module.startswith("keras"):
            return _Tokenizer
        if (module, name) in _CONTAINERS:
            return _CONTAINERS[module, name]
        raise pickle.UnpicklingError(f"refusing {module}.{name} in the tokenizer pickle")


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


class ToxicityModel:
    """The classifier's forward pass; :meth:`scores` gives the six label scores."""

    def __init__(self, directory: Path) -> None:
        import h5py

        with open(directory / "tokenizer.pickle", "rb") as fh:
            state = _WordIndexUnpickler(fh).load().__dict__
        self.word_index: dict[str, int] = dict(state["word_index"])
        self.num_words = int(state["num_words"])
        self.filters = str(state["filters"])
        with h5py.File(directory / "model.weights.h5", "r") as h5:

            def w(name: str) -> FloatArray:
                return np.asarray(h5[f"layers/{name}"][()], dtype=np.float32)

            self.embedding = w("embedding/vars/0")
            self.lstm = {
                way: tuple(w(f"bidirectional/{way}_layer/cell/vars/{i}") for i in range(3))
                for way in ("forward", "backward")
            }
            self.dense = (w("dense/vars/0"), w("dense/vars/1"))
            self.out = (w("dense_1/vars/0"), w("dense_1/vars/1"))
        self._strip = {ord(c): " " for c in self.filters}

    def words(self, text: str) -> list[int]:
        """Keras ``texts_to_sequences``: lower case, punctuation to spaces, known words."""
        found = (self.word_index.get(w, 0) for w in text.lower().translate(self._strip).split())
        return [i for i in found if 0 < i < self.num_words][-MAX_LEN:]

    def _lstm(self, x: FloatArray, way: str) -> FloatArray:
        kernel, recurrent, bias = self.lstm[way]
        n = recurrent.shape[0]
        h = np.zeros(n, dtype=np.float32)
        c = np.zeros(n, dtype=np.float32)
        steps = x[::-1] if way == "backward" else x
        hs = np.empty((len(steps), n), dtype=np.float32)
        projected = steps @ kernel + bias
        for t in range(len(steps)):
            z = projected[t] + h @ recurrent
            i, f, g, o = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n :]
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            hs[t] = h
        return hs

    def scores(self, text: str) -> dict[str, float]:
        tokens = self.words(text)
        padded = [0] * (MAX_LEN - len(tokens)) + tokens  # Keras pads in front
        x = self.embedding[padded]
        hidden = np.concatenate([self._lstm(x, "forward"), self._lstm(x, "backward")], axis=1)
        pooled = hidden.max(axis=0)
        dense = np.maximum(0.0, pooled @ self.dense[0] + self.dense[1])
        out = _sigmoid(dense @ self.out[0] + self.out[1])
        return {label: float(out[k]) for k, label in enumerate(LABELS)}


def moderation_inputs(body: dict[str, Any]) -> list[str]:
    """The texts of a ``/v1/moderations`` body: ``input`` as a string, a list of strings, or
    a list of ``{"type": "text", "text": …}`` parts. Images are refused (text model)."""
    unknown = sorted(set(body) - _ACCEPTED)
    if unknown:
        raise RequestRejected(
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise RequestRejected(
            "'input' must be a string or a non-empty list of strings or text parts",
            param="input",
            code="invalid_value",
        )
    if len(items) > MAX_INPUTS:
        raise RequestRejected(
            f"'input' has {len(items)} items; at most {MAX_INPUTS}",
            param="input",
            code="invalid_value",
        )
    texts = []
    for k, item in enumerate(items):
        if (
            isinstance(item, dict)
            and item.get("type") == "text"
            and isinstance(item.get("text"), str)
        ):
            item = item["text"]
        if isinstance(item, dict) and item.get("type") == "image_url":
            raise RequestRejected(
                f"Model '{body.get('model')}' classifies text only; input[{k}] is an image",
                param=f"input[{k}]",
                code="unsupported_content",
            )
        if not isinstance(item, str):
            raise RequestRejected(
                f"input[{k}] must be a string or a text part",
                param=f"input[{k}]",
                code="invalid_type",
            )
        texts.append(item)
    return texts


def moderation_result(labels: dict[str, float]) -> dict[str, Any]:
    """One ``results[]`` entry from the six label scores (see :data:`CATEGORY_SOURCES`)."""
    scores = {
        category: (max if how == "any" else min)((labels[s] for s in sources), default=0.0)
        for category, (how, sources) in CATEGORY_SOURCES.items()
    }
    categories = {category: score >= THRESHOLD for category, score in scores.items()}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {category: ["text"] for category in CATEGORY_SOURCES},
    }


def moderation_object(model: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": ids.completion_id("modr"), "model": model, "results": results}


class ModerationEngine:
    """Serves ``/v1/moderations`` lines; any other endpoint fails its line."""

    def __init__(self, model_id: str, path: Path) -> None:
        self.model_id = model_id
        self.model = ToxicityModel(path)

    def _one(self, req: EngineRequest) -> EngineResult:
        if req.endpoint != MODERATIONS:
            raise RequestRejected(
                f"Model '{self.model_id}' is a moderation model; use /v1/moderations",
                param="model",
                code="unsupported_endpoint",
            )
        texts = moderation_inputs(req.body)
        results = [moderation_result(self.model.scores(t)) for t in texts]
        return EngineResult(req.index, 200, moderation_object(self.model_id, results))

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        for req in requests:
            if should_stop():
                return
            try:
                yield self._one(req)
            except Exception as exc:  # one bad request fails alone
                yield request_failed(req.index, exc)

    def close(self) -> None:
        """Nothing to release: the arrays go with the engine (and its process)."""
