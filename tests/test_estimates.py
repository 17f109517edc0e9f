"""The ETA arithmetic of ``estimates.plan`` (the end-to-end behaviour is tested over HTTP in
test_queue_history.py and measured by benchmarks/bench_eta.py)."""

from __future__ import annotations

import pytest

from batch_server.estimates import Planned, Rate, blended_rate, plan

MODEL = Rate(requests=100, input_tokens=0, output_tokens=4000, seconds=50.0)  # 2 req/s, 40 tok


def test_queue_adds_up_work_ahead_and_shares_it_between_workers() -> None:
    batches = [Planned("a", "m", 20), Planned("b", "m", 10)]
    etas = plan(batches, {}, {"m": MODEL}, workers=1, now=1000.0)
    assert etas["a"].seconds == pytest.approx(10.0) and etas["a"].basis == "model"
    assert etas["b"].seconds == pytest.approx(15.0) and etas["b"].at == 1015
    two = plan(batches, {}, {"m": MODEL}, workers=2, now=1000.0)
    assert two["b"].seconds == pytest.approx(7.5)


def test_unknown_model_makes_it_and_everything_behind_unknown() -> None:
    batches = [Planned("a", "new", 5), Planned("b", "m", 10), Planned("c", "m", None)]
    etas = plan(batches, {}, {"m": MODEL}, workers=1, now=0.0)
    assert [etas[x].basis for x in "abc"] == ["unknown"] * 3
    assert etas["b"].seconds is None and etas["b"].as_dict()["text"] == "unknown"


def test_finished_batch_is_done() -> None:
    etas = plan([Planned("a", "m", 0)], {}, {"m": MODEL}, workers=1, now=0.0)
    assert etas["a"].basis == "done" and etas["a"].seconds == 0


def test_own_rate_takes_over_and_adapts_to_answer_length() -> None:
    # the batch's answers are twice as long as usual and it has run for a long time
    own = Rate(requests=100, input_tokens=0, output_tokens=8000, seconds=100.0)  # 1 req/s
    rate, basis = blended_rate(own, MODEL)
    assert basis == "batch+model" and rate == pytest.approx(1.0)
    early = Rate(requests=1, input_tokens=0, output_tokens=80, seconds=1.0)
    rate, _ = blended_rate(early, MODEL)
    assert rate == pytest.approx(1.0)  # the model's rate scaled to 80-token answers
    assert blended_rate(own, None) == (pytest.approx(1.0), "batch")
    assert blended_rate(None, None) == (None, "unknown")


def test_a_low_token_limit_speeds_up_a_batch_that_has_not_run() -> None:
    assert blended_rate(None, MODEL, max_tokens=10)[0] == pytest.approx(8.0)
    assert blended_rate(None, MODEL, max_tokens=400)[0] == pytest.approx(2.0)


def test_a_model_without_traffic_uses_its_prior() -> None:
    """A benchmark's (or a test load's) rate stands in for a model with no traffic; the
    model's own traffic, once there, wins."""
    bench = Rate(requests=10, input_tokens=0, output_tokens=400, seconds=5.0)  # 2 req/s
    priors = {"new": (bench, "benchmark"), "m": (bench, "benchmark")}
    batches = [Planned("a", "new", 10), Planned("b", "m", 10)]
    etas = plan(batches, {}, {"m": MODEL}, workers=1, now=0.0, priors=priors)
    assert etas["a"].basis == "benchmark" and etas["a"].seconds == pytest.approx(5.0)
    assert etas["b"].basis == "model"
    own = {"a": Rate(requests=4, input_tokens=0, output_tokens=160, seconds=2.0)}
    running = plan(batches[:1], own, {}, workers=1, now=0.0, priors=priors)
    assert running["a"].basis == "batch+benchmark"
    tested = {"new": (Rate(1, 20, 40, 0.5), "model_test")}
    assert plan(batches[:1], {}, {}, 1, 0.0, tested)["a"].basis == "model_test"


def test_prompt_and_answer_tokens_both_count_as_work() -> None:
    """A benchmark of long prompts predicts a batch of short ones by the tokens each
    request costs (prompt plus answer), not by answer length alone."""
    bench = Rate(requests=12, input_tokens=12 * 120, output_tokens=12 * 64, seconds=10.0)
    rate, basis = blended_rate(None, bench, max_tokens=32, prompt_tokens=25.0)
    assert basis == "model" and rate == pytest.approx(1.2 * 184 / 57)
    assert blended_rate(None, bench)[0] == pytest.approx(1.2)  # the same requests
    batches = [Planned("a", "m", 60, max_tokens=32, prompt_tokens=25.0)]
    eta = plan(batches, {}, {}, 1, 0.0, {"m": (bench, "benchmark")})["a"]
    assert eta.basis == "benchmark" and eta.seconds == pytest.approx(60 / (1.2 * 184 / 57))


def test_prompt_tokens_are_estimated_from_the_text() -> None:
    from batch_server.estimates import prompt_tokens

    chat = {
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 20}]},
        ]
    }
    assert prompt_tokens(chat) == pytest.approx(60 / 4 + 2 * 4)
    assert prompt_tokens({"prompt": "z" * 8}) == pytest.approx(2)
    assert prompt_tokens({"input": ["a" * 4, "b" * 4]}) == pytest.approx(2)
