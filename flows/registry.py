"""The model registry on the datastore: verify a trained model, promote it, resolve it.

A model file is loaded only after its sha256 matches the `metadata.json` written
by the train step, and then with skops and an explicit list of trusted types
(somemodel.artifacts.load_verified_model), never with pickle: a swapped file
cannot run code. The `latest.json` pointers are the run ledger's (flows/ledger.py).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from flows.datastore.base import Datastore, DatastoreNotFoundError
from flows.ledger import (
    MODELS_ROOT,
    LedgerError,
    Promotable,
    RunLedger,
    latest_path,
    model_dir,
    model_metadata_path,
)
from flows.paths import MODEL_LATEST
from somemodel import SomeModel
from somemodel.artifacts import (
    METADATA_FILENAME,
    ArtifactError,
    ModelMetadata,
    atomic_write_text,
    load_verified_model,
)

logger = logging.getLogger(__name__)


_Record = TypeVar("_Record")


class ModelVerificationError(RuntimeError):
    """A trained model is missing, corrupted or unusable; it must not be promoted."""


class NoModelError(LookupError):
    """No model to score with: nothing trained yet, or no such training run."""


@dataclass(frozen=True)
class ModelRef:
    run_id: str
    model_path: str
    model_sha256: str
    created_at: str
    accuracy: float | None
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    uri: str
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)

    def pointer(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "created_at": self.created_at,
            "accuracy": self.accuracy,
            "promoted_at": datetime.now(UTC).isoformat(),
        }


def read_artifact_record(
    datastore: Datastore,
    path: str,
    parse: Callable[[str, str], _Record],
    error: type[Exception],
    unfinished: str,
) -> _Record:
    """A record a step writes last (metadata, manifest), parsed by the artifact contract.

    Its absence means the step did not finish (`unfinished` says which); every
    problem raises `error`, so the caller's verification fails with its own type.
    """
    versioned = datastore.read_versioned(path)
    if versioned is None:
        raise error(f"no {path!r} in the {datastore.describe()}: {unfinished}")
    try:
        return parse(versioned.text, repr(path))
    except ArtifactError as exc:
        raise error(str(exc)) from exc


def read_metadata(datastore: Datastore, run_id: str) -> ModelMetadata:
    """The model metadata of `run_id`, parsed and checked by the artifact contract;
    ModelVerificationError when it is absent (the train step did not finish) or invalid.
    """
    return read_artifact_record(
        datastore,
        model_metadata_path(run_id),
        ModelMetadata.from_json,
        ModelVerificationError,
        f"the train step of run {run_id!r} did not finish",
    )


def download_verified_model(
    datastore: Datastore, run_id: str, dest: Path
) -> tuple[SomeModel, ModelMetadata]:
    """Download the run's model folder to `dest`; load the model once its sha256 matched."""
    metadata = read_metadata(datastore, run_id)
    path = f"{model_dir(run_id)}/{metadata.model_file}"
    try:
        datastore.download_file(path, dest / metadata.model_file)
    except DatastoreNotFoundError as exc:
        raise ModelVerificationError(f"model file missing for run {run_id!r}: {exc}") from exc
    atomic_write_text(dest / METADATA_FILENAME, metadata.to_json())
    try:
        verified = load_verified_model(dest)
    except ArtifactError as exc:
        raise ModelVerificationError(
            f"model file {path!r} of run {run_id!r} in the {datastore.describe()}: {exc}"
        ) from exc
    return verified.model, metadata


def verify_model(datastore: Datastore, run_id: str) -> ModelRef:
    """Check that the run's model exists, matches its sha256, loads and predicts."""
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        model, metadata = download_verified_model(datastore, run_id, Path(tmp))
    features = list(metadata.feature_names)
    sample = pd.DataFrame([[0.0] * len(features)] * 3, columns=features)
    try:
        predicted = model.predict(sample)
        probabilities = model.predict_proba(sample)
    except Exception as exc:  # any failure to predict means the model is unusable
        raise ModelVerificationError(f"model of run {run_id!r} fails to predict: {exc}") from exc
    classes = [str(c) for c in metadata.classes]
    if not {str(p) for p in predicted} <= set(classes) or probabilities.shape != (
        len(sample),
        len(classes),
    ):
        raise ModelVerificationError(
            f"model of run {run_id!r} predicts outside its classes {classes}"
        )
    accuracy = metadata.metrics.get("accuracy")
    model_path = f"{model_dir(run_id)}/{metadata.model_file}"
    return ModelRef(
        run_id=run_id,
        model_path=model_path,
        model_sha256=metadata.model_sha256,
        created_at=metadata.created_at,
        accuracy=float(accuracy) if accuracy is not None else None,
        classes=tuple(classes),
        feature_names=tuple(features),
        uri=datastore.uri(model_path),
        metrics=dict(metadata.metrics),
    )


def promote(datastore: Datastore, model: Promotable, root: str = MODELS_ROOT) -> bool:
    """Point `{root}/latest.json` at `model` (a `ModelRef`, or a scoring run's
    `PredictionsRef` under `predictions/`) unless it already points at a newer one."""
    return RunLedger(datastore).promote(root, model)


def latest_run_id(datastore: Datastore, root: str = MODELS_ROOT) -> str | None:
    """The run `{root}/latest.json` points at; LedgerError when it is not a pointer."""
    pointer = RunLedger(datastore).latest(root)
    return None if pointer is None else pointer.run_id


def resolve_model_run_id(datastore: Datastore, selector: str) -> str:
    """The training run id that `selector` (`latest` or a run id) names, or NoModelError."""
    if selector != MODEL_LATEST:
        if not datastore.exists(model_metadata_path(selector)):
            raise NoModelError(
                f"no trained model with run id {selector!r}: {model_metadata_path(selector)} "
                f"does not exist in the {datastore.describe()}; pass model=latest or the run "
                "id of a finished training run"
            )
        return selector
    path = latest_path(MODELS_ROOT)
    try:
        run_id = latest_run_id(datastore)
    except LedgerError as exc:
        raise NoModelError(
            f"{path} is not a valid pointer ({exc}); run the train flow again "
            "(python flows/train.py), whose promotion replaces it, or pass "
            "model=<training run id> (--model on the command line)"
        ) from exc
    if run_id is None:
        raise NoModelError(
            f"no model trained yet: {path} does not exist in the {datastore.describe()}; "
            "run the train flow first (python flows/train.py)"
        )
    return run_id
