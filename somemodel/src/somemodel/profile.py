"""Data profiles and drift: what the training data looked like, what a scoring run saw.

A profile is counts. Per feature: rows in each bin of the training data's
deciles, rows below the training minimum and above its maximum, missing
cells, and the minimum and maximum seen; per class, rows. Counts add up, so
the profiles of score shards merge exactly into the profile of the whole run
(:func:`merge_profiles`: nothing is averaged), and a profile's size depends on
the number of features and bins, never on the number of rows.

Drift is the population stability index (PSI) of each feature over the
training deciles, and of the predicted classes against the training class
balance (docs/score.md says why PSI and not a Kolmogorov-Smirnov statistic).
A feature drifts when its PSI is above the threshold and above what sampling
noise alone gives for so few rows (:func:`noise_floor`).

Pure numpy: no pandas, no scikit-learn, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10
# A share of 0 would make PSI infinite: each bin counts half a row more than it holds
# (Jeffreys' smoothing). A fixed floor (the common 1e-4) makes each empty bin of a small
# batch cost ~0.7 of PSI: 30 rows of the training distribution then "drifted".
_SMOOTHING = 0.5
# The 99.9% quantiles of the chi-squared distribution with 1..19 degrees of freedom
# (scipy.stats.chi2.ppf(0.999, df)): for two samples of one distribution, PSI times
# 1 / (1/n + 1/m) is asymptotically chi-squared with (bins - 1) degrees of freedom.
_CHI2_999 = (
    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    31.264, 32.909, 34.528, 36.123, 37.697, 39.252, 40.790, 42.312, 43.820,
)  # fmt: skip
# Up to this many features, counting loops over features (fewer, faster comparisons);
# above it, over bin edges (fewer numpy calls).
_PER_FEATURE_MAX = 32


class ProfileError(ValueError):
    """Profiles that cannot be compared or merged; the message says how they differ."""


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's counts; bin ``i`` holds the values in ``(edges[i-1], edges[i]]``."""

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int
    minimum: float | None
    maximum: float | None
    below: int = 0  # values below the training minimum (a scoring profile)
    above: int = 0  # values above the training maximum

    @property
    def values(self) -> int:
        return sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "missing": self.missing,
            "min": self.minimum,
            "max": self.maximum,
            "below_training_min": self.below,
            "above_training_max": self.above,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> FeatureProfile:
        edges = tuple(float(e) for e in record["edges"])
        counts = tuple(int(c) for c in record["counts"])
        if len(counts) != len(edges) + 1 or any(c < 0 for c in counts):
            raise ProfileError(
                f"feature {record['name']!r}: {len(counts)} bin counts for {len(edges)} edges "
                "(need one more count than edges, none negative)"
            )
        return cls(
            name=str(record["name"]),
            edges=edges,
            counts=counts,
            missing=int(record["missing"]),
            minimum=None if record["min"] is None else float(record["min"]),
            maximum=None if record["max"] is None else float(record["max"]),
            below=int(record.get("below_training_min", 0)),
            above=int(record.get("above_training_max", 0)),
        )


@dataclass(frozen=True)
class DataProfile:
    """The profile of a table: its rows, each feature's counts, and rows per class.

    In a training profile the classes are the labels; in a scoring profile, the
    predicted classes.
    """

    rows: int
    features: tuple[FeatureProfile, ...]
    classes: tuple[tuple[str, int], ...]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "classes": [{"class": c, "rows": n} for c, n in self.classes],
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> DataProfile:
        try:
            return cls(
                rows=int(record["rows"]),
                features=tuple(FeatureProfile.from_dict(f) for f in record["features"]),
                classes=tuple((str(c["class"]), int(c["rows"])) for c in record["classes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"not a data profile: {exc!r}") from exc


# --- building profiles ------------------------------------------------------------------------


def _count_above(by_column: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``out[f, j]`` = how many of ``by_column[f]`` are above ``thresholds[f, j]``."""
    n_features, n_thresholds = thresholds.shape
    out = np.empty((n_features, n_thresholds), dtype=np.int64)
    if n_features <= _PER_FEATURE_MAX:
        for f in range(n_features):
            column = by_column[f]
            for j in range(n_thresholds):
                out[f, j] = np.count_nonzero(column > thresholds[f, j])
    else:
        for j in range(n_thresholds):
            out[:, j] = np.count_nonzero(by_column > thresholds[:, j : j + 1], axis=1)
    return out


def _label(value: Any) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)


def decile_edges(column: np.ndarray, bins: int = BINS) -> tuple[float, ...]:
    """The ``bins - 1`` interior edges of ``column``'s quantile bins (values of the data).

    Repeated values may repeat an edge: that bin then stays empty on both sides.
    """
    finite = column[np.isfinite(column)]
    if not len(finite):
        return ()
    levels = np.arange(1, bins) / bins
    return tuple(float(e) for e in np.quantile(finite, levels, method="inverted_cdf"))


class ProfileBuilder:
    """Accumulates the profile of rows given a chunk at a time, in the reference's bins.

    ``reference`` is the training profile (its edges and range); without one, each
    feature gets one bin, and the profile still has its rows, range and classes.
    Memory is a few counters per feature and class, whatever the rows.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        classes: Sequence[Any],
        reference: DataProfile | None = None,
    ) -> None:
        self.names = list(feature_names)
        self.classes = [_label(c) for c in classes]
        if reference is not None and reference.feature_names != self.names:
            raise ProfileError(
                f"the training profile describes features {reference.feature_names[:10]}, "
                f"the model {self.names[:10]}"
            )
        features = reference.features if reference is not None else ()
        self.edges = [f.edges for f in features] or [() for _ in self.names]
        width = max((len(e) for e in self.edges), default=0)
        # Per feature: the training minimum (just below it: "above" it means >= it), the
        # edges padded with +inf (nothing is above: padded bins stay empty), the maximum.
        lows = [
            np.nextafter(f.minimum, -np.inf) if f.minimum is not None else -np.inf for f in features
        ] or [-np.inf] * len(self.names)
        highs = [f.maximum if f.maximum is not None else np.inf for f in features] or [
            np.inf
        ] * len(self.names)
        self.thresholds = np.full((len(self.names), width + 2), np.inf)
        self.thresholds[:, 0] = lows
        for i, edges in enumerate(self.edges):
            self.thresholds[i, 1 : 1 + len(edges)] = edges
        self.thresholds[:, -1] = highs
        self.above = np.zeros((len(self.names), width + 2), dtype=np.int64)
        self.values = np.zeros(len(self.names), dtype=np.int64)
        self.missing = np.zeros(len(self.names), dtype=np.int64)
        self.minimum = np.full(len(self.names), np.inf)
        self.maximum = np.full(len(self.names), -np.inf)
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)
        self.rows = 0

    def add(
        self, by_column: np.ndarray, predicted: np.ndarray | None = None, *, finite: bool = True
    ) -> None:
        """Count a chunk: ``by_column`` is (features, rows); ``predicted`` holds each row's
        class index. ``finite=True`` promises no NaN (the score step checked every value
        before): a NaN cell is then counted as missing only with ``finite=False``.
        """
        n_rows = by_column.shape[1]
        self.rows += n_rows
        if predicted is not None:
            self.class_counts += np.bincount(predicted, minlength=len(self.classes))
        if not n_rows:
            return
        # A NaN is above no threshold, so it falls out of every bin once not counted in values.
        nan = np.zeros(len(self.names), dtype=np.int64) if finite else np.isnan(by_column).sum(1)
        self.values += n_rows - nan
        self.missing += nan
        self.above += _count_above(by_column, self.thresholds)
        seen = nan < n_rows
        if seen.all():
            low, high = (
                (by_column.min(axis=1), by_column.max(axis=1))
                if finite
                else (
                    np.nanmin(by_column, axis=1),
                    np.nanmax(by_column, axis=1),
                )
            )
        else:
            rows = by_column[seen]
            low, high = np.full(len(self.names), np.inf), np.full(len(self.names), -np.inf)
            low[seen], high[seen] = np.nanmin(rows, axis=1), np.nanmax(rows, axis=1)
        np.minimum(self.minimum, low, out=self.minimum)
        np.maximum(self.maximum, high, out=self.maximum)

    def profile(self) -> DataProfile:
        features = []
        for i, name in enumerate(self.names):
            k = len(self.edges[i])
            above = self.above[i]
            # Values above each edge, from the first edge on: bin j is above[j] - above[j+1].
            cumulative = [int(self.values[i]), *(int(a) for a in above[1 : 1 + k]), 0]
            counts = tuple(cumulative[j] - cumulative[j + 1] for j in range(k + 1))
            seen = bool(self.values[i])
            features.append(
                FeatureProfile(
                    name=name,
                    edges=self.edges[i],
                    counts=counts,
                    missing=int(self.missing[i]),
                    minimum=float(self.minimum[i]) if seen else None,
                    maximum=float(self.maximum[i]) if seen else None,
                    below=int(self.values[i] - above[0]),
                    above=int(above[-1]),
                )
            )
        return DataProfile(
            rows=self.rows,
            features=tuple(features),
            classes=tuple(zip(self.classes, (int(c) for c in self.class_counts), strict=True)),
        )


def training_profile(
    by_column: np.ndarray,
    feature_names: Sequence[str],
    labels: np.ndarray,
    classes: Sequence[Any],
    bins: int = BINS,
) -> DataProfile:
    """The profile of a training table: ``by_column`` is (features, rows), ``labels`` the
    class of each row (one of ``classes``); the bins are each feature's deciles, and the
    range is the data's own (nothing lies outside it).
    """
    names = list(feature_names)
    bins_only = DataProfile(
        rows=0,
        features=tuple(
            FeatureProfile(name, edges, (0,) * (len(edges) + 1), 0, None, None)
            for name, edges in zip(names, (decile_edges(c, bins) for c in by_column), strict=True)
        ),
        classes=(),
    )
    builder = ProfileBuilder(names, classes, bins_only)
    index = {c: i for i, c in enumerate(builder.classes)}
    distinct, inverse = np.unique(np.asarray(labels), return_inverse=True)
    unknown = sorted({_label(v) for v in distinct} - set(index))
    if unknown:
        raise ProfileError(f"labels {unknown[:10]} are not among the classes {builder.classes}")
    rows_class = np.array([index[_label(v)] for v in distinct], dtype=np.int64)[inverse]
    builder.add(by_column, rows_class, finite=False)
    return builder.profile()


def merge_profiles(profiles: Sequence[DataProfile]) -> DataProfile:
    """The profile of all the rows of ``profiles`` (shards, in any order): counts summed."""
    if not profiles:
        raise ProfileError("no profiles to merge")
    first = profiles[0]
    for k, other in enumerate(profiles[1:], start=1):
        same = [f.name for f in other.features] == [f.name for f in first.features] and [
            f.edges for f in other.features
        ] == [f.edges for f in first.features]
        if not same or [c for c, _ in other.classes] != [c for c, _ in first.classes]:
            raise ProfileError(
                f"profiles 0 and {k} have different features, bins or classes: they were "
                "made against different training profiles"
            )
    features = []
    for i, feature in enumerate(first.features):
        parts = [p.features[i] for p in profiles]
        minima = [p.minimum for p in parts if p.minimum is not None]
        maxima = [p.maximum for p in parts if p.maximum is not None]
        features.append(
            FeatureProfile(
                name=feature.name,
                edges=feature.edges,
                counts=tuple(sum(c) for c in zip(*(p.counts for p in parts), strict=True)),
                missing=sum(p.missing for p in parts),
                minimum=min(minima) if minima else None,
                maximum=max(maxima) if maxima else None,
                below=sum(p.below for p in parts),
                above=sum(p.above for p in parts),
            )
        )
    classes = tuple(
        (name, sum(p.classes[j][1] for p in profiles)) for j, (name, _) in enumerate(first.classes)
    )
    return DataProfile(sum(p.rows for p in profiles), tuple(features), classes)


# --- drift --------------------------------------------------------------------------------------


def psi(expected: Sequence[int], actual: Sequence[int]) -> float:
    """Population stability index of ``actual`` counts against ``expected``, bin for bin.

    sum((q - p) * ln(q / p)) over the bins' shares, each bin counted with half a
    row more than it holds (bins empty on both sides are left out); 0 when either
    side has no rows.
    """
    pairs = [(e, a) for e, a in zip(expected, actual, strict=True) if e or a]
    n, m = sum(e for e, _ in pairs), sum(a for _, a in pairs)
    if not n or not m:
        return 0.0
    n_smooth, m_smooth = n + _SMOOTHING * len(pairs), m + _SMOOTHING * len(pairs)
    total = 0.0
    for e, a in pairs:
        p, q = (e + _SMOOTHING) / n_smooth, (a + _SMOOTHING) / m_smooth
        total += (q - p) * math.log(q / p)
    return total


def noise_floor(expected: Sequence[int], actual: Sequence[int]) -> float:
    """The PSI that two samples of one distribution stay below 99.9% of the time.

    (bins used - 1) degrees of freedom, scaled by 1/n + 1/m: a batch of 30 rows
    gives ~0.3-0.9 by chance alone, a batch of a million about the training
    side's share.
    """
    n, m = sum(expected), sum(actual)
    used = sum(1 for e, a in zip(expected, actual, strict=True) if e or a)
    if not n or not m or used < 2:
        return 0.0
    df = min(used - 1, len(_CHI2_999))
    return _CHI2_999[df - 1] * (1 / n + 1 / m)


@dataclass(frozen=True)
class FeatureDrift:
    """How a feature of a scoring run compares with training."""

    name: str
    psi: float
    noise_floor: float
    out_of_range_share: float
    training_missing_rate: float
    missing_rate: float
    training_min: float | None
    training_max: float | None
    minimum: float | None
    maximum: float | None

    def drifted(self, threshold: float) -> bool:
        return self.psi > threshold and self.psi > self.noise_floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "psi": round(self.psi, 6),
            "noise_floor": round(self.noise_floor, 6),
            "out_of_range_share": round(self.out_of_range_share, 6),
            "training_missing_rate": round(self.training_missing_rate, 6),
            "missing_rate": round(self.missing_rate, 6),
            "training_min": self.training_min,
            "training_max": self.training_max,
            "min": self.minimum,
            "max": self.maximum,
        }


@dataclass(frozen=True)
class ClassDrift:
    """The predicted classes' shares against the training class balance."""

    psi: float
    noise_floor: float
    training_shares: tuple[tuple[str, float], ...]
    predicted_shares: tuple[tuple[str, float], ...]

    def drifted(self, threshold: float) -> bool:
        return self.psi > threshold and self.psi > self.noise_floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi": round(self.psi, 6),
            "noise_floor": round(self.noise_floor, 6),
            "training_shares": {c: round(s, 6) for c, s in self.training_shares},
            "predicted_shares": {c: round(s, 6) for c, s in self.predicted_shares},
        }


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _shares(classes: Sequence[tuple[str, int]]) -> tuple[tuple[str, float], ...]:
    total = sum(n for _, n in classes)
    return tuple((c, _rate(n, total)) for c, n in classes)


def compare_features(training: DataProfile, scored: DataProfile) -> tuple[FeatureDrift, ...]:
    """Each feature's PSI, noise floor, share outside the training range and missing rates."""
    if training.feature_names != scored.feature_names:
        raise ProfileError(
            f"the scoring profile has features {scored.feature_names[:10]}, the training "
            f"profile {training.feature_names[:10]}"
        )
    drifts = []
    for t, s in zip(training.features, scored.features, strict=True):
        if t.edges != s.edges:
            raise ProfileError(f"feature {t.name!r} was counted in other bins than training's")
        drifts.append(
            FeatureDrift(
                name=t.name,
                psi=psi(t.counts, s.counts),
                noise_floor=noise_floor(t.counts, s.counts),
                out_of_range_share=_rate(s.below + s.above, s.values),
                training_missing_rate=_rate(t.missing, t.values + t.missing),
                missing_rate=_rate(s.missing, s.values + s.missing),
                training_min=t.minimum,
                training_max=t.maximum,
                minimum=s.minimum,
                maximum=s.maximum,
            )
        )
    return tuple(drifts)


def compare_classes(training: DataProfile, scored: DataProfile) -> ClassDrift:
    """PSI of the predicted classes' counts against the training labels' counts."""
    trained = dict(training.classes)
    names = [c for c, _ in scored.classes]
    expected = [trained.get(c, 0) for c in names]
    actual = [n for _, n in scored.classes]
    return ClassDrift(
        psi=psi(expected, actual),
        noise_floor=noise_floor(expected, actual),
        training_shares=_shares(list(zip(names, expected, strict=True))),
        predicted_shares=_shares(scored.classes),
    )
