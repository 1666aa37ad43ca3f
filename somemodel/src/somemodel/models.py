"""The team's classifier: standardised features feeding a multinomial logistic regression."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from somemodel._version import __version__


class SomeModel(ClassifierMixin, BaseEstimator):
    """Standardise each feature, then fit a logistic regression on the scaled values.

    Scaling lives inside the estimator (not in a user-built pipeline) so that a saved
    model always carries the exact transformation it was trained with.

    Parameters
    ----------
    C:
        Inverse of the L2 regularisation strength of the logistic regression.
    max_iter:
        Maximum number of solver iterations.
    random_state:
        Seed passed to the logistic regression (only matters for some solvers).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, random_state: int | None = None):
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> SomeModel:
        """Fit the scaler and the classifier; a DataFrame's column names are remembered."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.scaler_ = StandardScaler().fit(X)
        self.classifier_ = LogisticRegression(
            C=self.C, max_iter=self.max_iter, random_state=self.random_state
        ).fit(self.scaler_.transform(X), y)
        self.classes_ = self.classifier_.classes_
        self.n_iter_ = self.classifier_.n_iter_
        self.version_ = __version__
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per entry of ``classes_``; rows sum to 1."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        proba: np.ndarray = self.classifier_.predict_proba(self.scaler_.transform(X))
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (ties go to the first class in ``classes_``)."""
        proba = self.predict_proba(X)
        predicted: np.ndarray = self.classes_.take(np.argmax(proba, axis=1))
        return predicted

    @property
    def version(self) -> str:
        """The somemodel version this model was trained with."""
        check_is_fitted(self)
        return str(self.version_)
