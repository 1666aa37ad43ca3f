"""Profiles and drift (somemodel.profile): counts that merge exactly, PSI, the noise floor."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from somemodel.artifacts import DriftReport
from somemodel.profile import (
    DataProfile,
    ProfileBuilder,
    ProfileError,
    compare_classes,
    compare_features,
    merge_profiles,
    noise_floor,
    psi,
    training_profile,
)
from tests.drift_data import CLASSES, FEATURES, drift_table

THRESHOLD = 0.25


def _columns(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.ascontiguousarray(table[FEATURES].to_numpy(dtype=np.float64).T)


def _class_index(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.searchsorted(CLASSES, table["target"].to_numpy())


@pytest.fixture(scope="module")
def training() -> DataProfile:
    table = drift_table(5000, seed=1)
    return training_profile(_columns(table), FEATURES, table["target"].to_numpy(), CLASSES)


def _scored(training: DataProfile, table, chunk: int = 700) -> DataProfile:  # type: ignore[no-untyped-def]
    builder = ProfileBuilder(FEATURES, CLASSES, training)
    columns, classes = _columns(table), _class_index(table)
    for start in range(0, len(table), chunk):
        builder.add(columns[:, start : start + chunk], classes[start : start + chunk])
    return builder.profile()


def test_bins_range_and_out_of_range_counts_on_a_small_example() -> None:
    column = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    trained = training_profile(column, ["a"], np.array(["p"] * 10), ["p"], bins=5)
    (feature,) = trained.features
    assert feature.edges == (2, 4, 6, 8)
    assert feature.counts == (2, 2, 2, 2, 2)
    assert (feature.minimum, feature.maximum, feature.below, feature.above) == (1, 10, 0, 0)
    assert trained.classes == (("p", 10),)

    builder = ProfileBuilder(["a"], ["p"], trained)
    builder.add(np.array([[0.5, 1.0, 2.0, 2.5, 10.0, 11.0]]), np.zeros(6, dtype=np.int64))
    (scored,) = builder.profile().features
    assert scored.counts == (3, 1, 0, 0, 2)  # 0.5, 1, 2 | 2.5 | | | 10, 11
    assert (scored.below, scored.above) == (1, 1)  # 0.5 < 1 and 11 > 10: the range is inclusive
    assert (scored.minimum, scored.maximum) == (0.5, 11.0)


def test_missing_cells_are_counted_apart_from_the_bins() -> None:
    column = np.array([[1.0, np.nan, 3.0, np.nan]])
    (feature,) = training_profile(column, ["a"], np.array(["p"] * 4), ["p"], bins=2).features
    assert (feature.missing, feature.values, feature.minimum, feature.maximum) == (2, 2, 1, 3)


def test_chunks_and_shards_merge_into_exactly_the_profile_of_the_whole(
    training: DataProfile,
) -> None:
    table = drift_table(3001, seed=2)
    whole = _scored(training, table, chunk=len(table))
    assert _scored(training, table, chunk=97) == whole
    shards = [
        _scored(training, table.iloc[a:b]) for a, b in ((0, 1000), (1000, 1001), (1001, 3001))
    ]
    assert merge_profiles(shards) == whole
    assert merge_profiles(shards[::-1]) == whole  # counts: the order does not matter
    assert whole.rows == sum(whole.features[0].counts) == 3001


def test_profiles_of_other_bins_do_not_merge(training: DataProfile) -> None:
    table = drift_table(500, seed=3)
    other = training_profile(_columns(table), FEATURES, table["target"].to_numpy(), CLASSES)
    with pytest.raises(ProfileError, match="different features, bins or classes"):
        merge_profiles([_scored(training, table), _scored(other, table)])


def test_data_from_the_training_distribution_does_not_drift(training: DataProfile) -> None:
    scored = _scored(training, drift_table(20_000, seed=4))
    drifts = compare_features(training, scored)
    assert [d.name for d in drifts if d.drifted(THRESHOLD)] == []
    assert max(d.psi for d in drifts) < 0.05
    assert not compare_classes(training, scored).drifted(THRESHOLD)


def test_shifted_data_drifts_on_exactly_the_scaled_feature_and_the_classes(
    training: DataProfile,
) -> None:
    scored = _scored(training, drift_table(20_000, seed=5, shifted=True))
    drifts = {d.name: d for d in compare_features(training, scored)}
    assert [name for name, d in drifts.items() if d.drifted(THRESHOLD)] == ["x3"]
    assert drifts["x3"].out_of_range_share > 0.01  # x1.5 pushes values past the training max
    classes = compare_classes(training, scored)
    assert classes.drifted(THRESHOLD)
    assert dict(classes.predicted_shares)["mid"] == 0.0


def test_a_small_batch_is_not_called_drifted_by_sampling_noise(training: DataProfile) -> None:
    """30 rows of the training distribution: PSI often passes 0.25 by chance alone."""
    psis, drifted = [], []
    for seed in range(20):
        scored = _scored(training, drift_table(30, seed=100 + seed))
        for d in compare_features(training, scored):
            psis.append(d.psi)
            drifted.append(d.drifted(THRESHOLD))
    assert max(psis) > THRESHOLD  # the plain threshold alone would raise false alarms
    assert not any(drifted)


def test_psi_and_noise_floor_by_hand() -> None:
    assert psi([50, 50], [50, 50]) == 0.0
    # Each bin counts half a row more: shares 50.5/101 against 80.5/101 and 20.5/101.
    p, q = np.array([0.5, 0.5]), np.array([80.5, 20.5]) / 101
    assert psi([50, 50], [80, 20]) == pytest.approx(float(((q - p) * np.log(q / p)).sum()))
    assert psi([100, 0], [0, 100]) == pytest.approx(2 * (100 / 101) * np.log(100.5 / 0.5))
    assert psi([10, 0, 10], [10, 0, 10]) == 0.0  # a bin empty on both sides is left out
    assert psi([], []) == psi([10], [0]) == 0.0
    assert noise_floor([100, 100], [100, 100]) == pytest.approx(10.828 * (1 / 200 + 1 / 200))


def test_drift_report_round_trips_and_says_when_there_is_no_training_profile(
    training: DataProfile,
) -> None:
    scored = _scored(training, drift_table(400, seed=6))
    report = DriftReport(
        "score-1", "train-1", "a" * 64, "2026-11-30T00:00:00+00:00", training, scored
    )
    again = DriftReport.from_json(report.to_json())
    assert again == report
    record = json.loads(report.to_json())
    assert record["status"] == "compared"
    assert [f["name"] for f in record["features"]] == FEATURES

    bare = ProfileBuilder(FEATURES, CLASSES, None)
    bare.add(_columns(drift_table(10, seed=7)), np.zeros(10, dtype=np.int64))
    without = replace(report, training=None, scored=bare.profile())
    record = json.loads(without.to_json())
    assert record["status"] == "no training profile"
    assert record["features"] == []
    assert record["classes"] is None
    assert DriftReport.from_json(without.to_json()) == without
