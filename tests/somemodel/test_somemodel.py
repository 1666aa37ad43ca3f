from __future__ import annotations

import collections
import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import check_estimator

import somemodel
from somemodel import MODEL_FILENAME, ModelLoadError, SomeModel, load_model, save_model
from somemodel.persistence import TRUSTED_TYPES


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    y = data.target.map(dict(enumerate(data.target_names))).to_numpy(dtype=object)
    return x, y


@pytest.fixture(scope="module")
def fitted(iris: tuple[pd.DataFrame, np.ndarray]) -> SomeModel:
    x, y = iris
    return SomeModel(random_state=0).fit(x, y)


def test_fit_predict_shapes(fitted: SomeModel, iris: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = iris
    assert fitted.predict(x).shape == (150,)
    proba = fitted.predict_proba(x)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(fitted.classes_) == ["setosa", "versicolor", "virginica"]
    assert (fitted.predict(x) == y).mean() > 0.9


def test_predict_is_argmax_of_proba(
    fitted: SomeModel, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, _ = iris
    proba = fitted.predict_proba(x)
    assert (fitted.predict(x) == fitted.classes_[proba.argmax(axis=1)]).all()


def test_feature_names_kept(fitted: SomeModel, iris: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, _ = iris
    assert list(fitted.feature_names_in_) == list(x.columns)
    assert fitted.n_features_in_ == 4


def test_numpy_fit_has_no_feature_names(iris: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = iris
    model = SomeModel().fit(x.to_numpy(), y)
    assert not hasattr(model, "feature_names_in_")
    assert model.n_features_in_ == 4


def test_clone_and_get_params() -> None:
    model = SomeModel(C=0.5, max_iter=50, random_state=3)
    assert model.get_params() == {"C": 0.5, "max_iter": 50, "random_state": 3}
    copy = clone(model)
    assert copy is not model
    assert copy.get_params() == model.get_params()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_sklearn_estimator_checks() -> None:
    results = check_estimator(SomeModel(), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert failed == []


def test_version_matches_package_metadata(fitted: SomeModel) -> None:
    assert importlib.metadata.version("somemodel") == somemodel.__version__
    assert fitted.version == somemodel.__version__


def test_save_load_round_trip(
    tmp_path: Path, fitted: SomeModel, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, _ = iris
    path = tmp_path / MODEL_FILENAME
    save_model(fitted, path)
    loaded = load_model(path)
    assert isinstance(loaded, SomeModel)
    np.testing.assert_array_equal(loaded.predict(x), fitted.predict(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), fitted.predict_proba(x))
    assert list(loaded.feature_names_in_) == list(x.columns)
    assert loaded.version == fitted.version


@pytest.mark.parametrize("target", ["names", "ints", "bools"])
def test_trusted_types_are_exactly_what_skops_reports(
    iris: tuple[pd.DataFrame, np.ndarray], target: str
) -> None:
    x, y = iris
    labels = {"names": y, "ints": load_iris().target, "bools": y == "setosa"}[target]
    model = SomeModel().fit(x, labels)
    assert sorted(sio.get_untrusted_types(data=sio.dumps(model))) == sorted(TRUSTED_TYPES)


def test_load_refuses_untrusted_type(tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = iris
    model = SomeModel().fit(x, y)
    model.smuggled_ = collections.Counter(a=1)
    path = tmp_path / "evil.skops"
    sio.dump(model, path)
    with pytest.raises(ModelLoadError, match=r"collections\.Counter"):
        load_model(path)


def test_load_refuses_other_estimator(
    tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = iris
    path = tmp_path / "other.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    with pytest.raises(ModelLoadError, match="not a SomeModel"):
        load_model(path)


def test_load_refuses_garbage_and_missing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="not a readable skops"):
        load_model(garbage)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.skops")


def test_save_model_rejects_other_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SomeModel"):
        save_model(LogisticRegression(), tmp_path / "x.skops")  # type: ignore[arg-type]
