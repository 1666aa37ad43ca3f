"""The promotion gate's decisions."""

from __future__ import annotations

import pytest

from flows.gate import decide


def _decide(new: float | None, current: float | None, **kw: object) -> object:
    args: dict[str, object] = {
        "current_run_id": "train-old",
        "tolerance": 0.02,
        "min_accuracy": 0.0,
    }
    args.update(kw)
    return decide(new, current, **args)  # type: ignore[arg-type]


def test_a_much_worse_model_is_kept_out_with_both_accuracies_in_the_message() -> None:
    decision = _decide(0.81, 0.93)
    assert not decision.promote
    assert decision.state_message.startswith(
        "not promoted: accuracy 0.81 vs 0.93 for the current model train-old"
    )


@pytest.mark.parametrize(("new", "current"), [(0.92, 0.93), (0.95, 0.93), (0.91, 0.93)])
def test_within_the_tolerance_or_better_is_promoted(new: float, current: float) -> None:
    assert _decide(new, current).promote


def test_the_minimum_applies_even_to_the_first_model() -> None:
    decision = _decide(0.5, None, current_run_id=None, min_accuracy=0.8)
    assert not decision.promote
    assert "below the minimum 0.80" in decision.reason
    assert _decide(0.9, None, current_run_id=None, min_accuracy=0.8).promote


def test_force_overrides_both() -> None:
    assert _decide(0.1, 0.99, min_accuracy=0.9, force=True).promote


def test_incomparable_features_fall_back_to_the_minimum() -> None:
    decision = _decide(0.85, None)
    assert decision.promote
    assert "only the minimum applied" in decision.reason
