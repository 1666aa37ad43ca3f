"""Judging drift reports, artifact keys and trend lines (flows/drift.py, flows/history.py)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.drift import NO_DRIFT_REPORT, bar, check_drift_report
from flows.history import artifact_key, sparkline
from somemodel.artifacts import NO_TRAINING_PROFILE, DriftReport
from somemodel.profile import DataProfile, ProfileBuilder, training_profile


def _report(shift: float, with_training: bool = True) -> DriftReport:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2, 4000))
    labels = np.where(train[0] > 0, "p", "q")
    training = training_profile(train, ["a", "b"], labels, ["p", "q"])
    builder = ProfileBuilder(["a", "b"], ["p", "q"], training if with_training else None)
    scored = rng.normal(size=(2, 4000))
    scored[1] += shift
    builder.add(scored, (scored[0] <= 0).astype(np.int64))
    return DriftReport(
        "score-1", "train-1", "0" * 64, "2026-11-30T00:00:00+00:00",
        training if with_training else None, builder.profile(),
    )  # fmt: skip


def test_a_shifted_feature_drifts_and_the_line_names_it() -> None:
    check = check_drift_report(_report(shift=1.0), "score-1", threshold=0.25)
    assert [f.name for f in check.drifted_features] == ["b"]
    assert not check.class_drift
    assert check.summary_line().startswith("DRIFT: b (PSI ")
    assert "4000 rows scored; predictions written" in check.summary_line()
    assert [row["drifted"] for row in check.table()] == [False, True, False]


def test_the_threshold_decides() -> None:
    report = _report(shift=0.3)
    psi = next(f.psi for f in report.features if f.name == "b")
    assert check_drift_report(report, "s", threshold=psi * 1.01).drifted is False
    assert check_drift_report(report, "s", threshold=psi * 0.99).drifted is True


def test_without_a_profile_or_a_report_drift_is_not_measured() -> None:
    bare = check_drift_report(_report(0.0, with_training=False), "s", 0.25)
    assert (bare.status, bare.drifted) == (NO_TRAINING_PROFILE, False)
    assert bare.summary_line().startswith("drift not measured: the model has no training profile")
    assert "drift not measured" in bare.to_markdown()
    none = check_drift_report(None, "s", 0.25)
    assert (none.status, none.drifted, none.max_psi) == (NO_DRIFT_REPORT, False, None)


@pytest.mark.parametrize(
    ("deployment", "key"),
    [(None, "drift-adhoc"), ("weekly", "drift-weekly"), ("Weekly EU_2", "drift-weekly-eu-2")],
)
def test_one_artifact_key_per_deployment(deployment: str | None, key: str) -> None:
    assert artifact_key("drift", deployment) == key


def test_sparklines_and_bars() -> None:
    assert sparkline([0.0, 0.5, 1.0], high=1.0) == "▁▄█"
    assert sparkline([None, 2.0]) == " █"
    assert sparkline([]) == ""
    assert bar(0.5, 1.0) == "█" * 10
    assert bar(3.0, 1.0) == "█" * 20 + "+"
    assert bar(0.0, 1.0) == ""


def test_empty_profile_round_trip() -> None:
    empty = DataProfile(0, (), ())
    assert DataProfile.from_dict(empty.to_dict()) == empty
