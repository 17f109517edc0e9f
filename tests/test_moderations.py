"""``/v1/moderations`` batches on the packaged toxicity classifier (engines/moderation.py):
string, list and text-part inputs, OpenAI's moderation object (checked with the official
SDK's type and OpenAI's published schema), the label mapping, and lines that fail alone."""

from __future__ import annotations

import io
import pickle
from typing import Any

import openai
import pytest
from openai.types import ModerationCreateResponse

from batch_server.config import Settings
from batch_server.engines.moderation import CATEGORY_SOURCES, ToxicityModel, _WordIndexUnpickler
from conftest import Cluster, chat_line, read_lines, submit, wait_for
from openai_schema import Checker

MODEL = "toxic-comment-classifier"
CLEAN = "Thank you for the lovely dinner, see you tomorrow."
INSULT = "You are a stupid worthless idiot."
THREAT = "I will kill you and your whole family."


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    body = {"model": MODEL, **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/moderations", "body": body}


def test_moderations_batch(cluster: Cluster) -> None:
    client = cluster.client
    lines = [
        line("clean", input=CLEAN),
        line("list", input=[INSULT, THREAT, CLEAN]),
        line("parts", input=[{"type": "text", "text": INSULT}]),
        line("image", input=[{"type": "image_url", "image_url": {"url": "https://x.invalid"}}]),
        line("empty", input=[]),
        line("unknown", input="hi", frobnicate=1),
    ]
    batch = wait_for(client, submit(client, lines, endpoint="/v1/moderations").id, timeout=120)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 3)
    out = {
        o["custom_id"]: o["response"]
        for o in read_lines(client, batch.output_file_id) + read_lines(client, batch.error_file_id)
    }
    check = Checker()
    for cid in ("clean", "list", "parts"):
        assert out[cid]["status_code"] == 200
        check("CreateModerationResponse", out[cid]["body"])
    for cid, (param, code) in {
        "image": ("input[0]", "unsupported_content"),
        "empty": ("input", "invalid_value"),
        "unknown": ("frobnicate", "unknown_parameter"),
    }.items():
        assert out[cid]["status_code"] == 400, out[cid]
        check("ErrorResponse", out[cid]["body"])
        error = out[cid]["body"]["error"]
        assert (error["param"], error["code"]) == (param, code)
    assert not check.unexpected, check.unexpected

    bodies = {
        cid: ModerationCreateResponse.model_validate(out[cid]["body"])
        for cid in ("clean", "list", "parts")
    }
    clean, listed, parts = bodies["clean"], bodies["list"], bodies["parts"]
    assert clean.id.startswith("modr-") and clean.model == MODEL
    [calm] = clean.results
    assert calm.flagged is False
    assert max(calm.category_scores.model_dump().values()) < 0.1
    insult, threat, calm_again = listed.results
    assert insult.flagged and insult.categories.harassment
    assert insult.category_scores.harassment > 0.5
    # the model sees the threat as toxic (harassment) more than as a threat (violence)
    assert threat.flagged and threat.categories.harassment
    assert threat.category_scores.violence > 0.1 > calm.category_scores.violence
    assert calm_again.model_dump() == calm.model_dump()  # same text, same scores
    assert parts.results[0].model_dump() == insult.model_dump()

    page = cluster.http.get(f"/ui/batches/{batch.id}")  # the dashboard shows such a batch
    assert page.status_code == 200, page.text
    assert "not flagged" in page.text and "<code>harassment</code>" in page.text
    for result in (*listed.results, calm):
        scores = result.model_dump(by_alias=True)["category_scores"]
        for category, (_, sources) in CATEGORY_SOURCES.items():
            if not sources:  # no label of the model covers it
                assert scores[category] == 0.0
        applied = result.model_dump(by_alias=True)["category_applied_input_types"]
        assert applied == {c: ["text"] for c in CATEGORY_SOURCES}


def test_moderation_model_serves_only_moderations(client: openai.OpenAI) -> None:
    wrong_model = wait_for(
        client, submit(client, [line("m", input="hi", model="smollm2")], "/v1/moderations").id
    )
    chat_on_classifier = wait_for(client, submit(client, [chat_line("c", "hi", model=MODEL)]).id)
    for batch in (wrong_model, chat_on_classifier):
        assert batch.status == "failed", batch
        assert batch.errors is not None
        [error] = batch.errors.data
        assert (error.code, error.param) == ("unsupported_endpoint", "body.model")


def test_label_scores_and_safe_unpickling() -> None:
    path = Settings().models[MODEL].resolve_path()
    model = ToxicityModel(path)
    assert model.words("Hello, WORLD!") == model.words("hello world")
    assert len(model.words("word " * 300)) == 100  # the model reads the last 100 words
    calm, rude = model.scores(CLEAN), model.scores(INSULT)
    assert rude["insult"] > 0.5 > calm["insult"]
    assert set(calm) == {"toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"}

    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        _WordIndexUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_moderations_in_the_models_list(cluster: Cluster) -> None:
    assert MODEL in [m.id for m in cluster.client.models.list().data]
