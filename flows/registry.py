"""The model registry on the datastore: verify a trained model, promote it, resolve it.

A model file is loaded only after its sha256 matches the `metadata.json` written
by the train step, and then with skops and an explicit list of trusted types
(see somemodel.persistence), never with pickle: a swapped file cannot run code.
`trained_models/latest.json` (and `predictions/latest.json`, through the same
`promote`) moves forward only, by conditional writes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from flows.datastore.base import (
    Datastore,
    DatastoreNotFoundError,
    PreconditionFailedError,
    sha256_of_file,
)
from flows.paths import check_run_id
from flows.plan import LATEST, MODELS_ROOT, model_dir

logger = logging.getLogger(__name__)


MODEL_LATEST = "latest"


class ModelVerificationError(RuntimeError):
    """A trained model is missing, corrupted or unusable; it must not be promoted."""


class NoModelError(LookupError):
    """No model to score with: nothing trained yet, or no such training run."""


class Promotable(Protocol):
    """What a `latest.json` pointer can point at: a run, ordered by its creation time."""

    @property
    def run_id(self) -> str: ...

    @property
    def created_at(self) -> str: ...

    def pointer(self) -> dict[str, Any]: ...


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


_METADATA_KEYS = frozenset({"model_file", "model_sha256", "classes", "feature_names", "created_at"})


def read_json_record(
    datastore: Datastore,
    path: str,
    required: frozenset[str],
    error: type[Exception],
    unfinished: str,
) -> dict[str, Any]:
    """A small JSON object a step writes last (metadata, manifest), checked for `required` keys.

    Its absence means the step did not finish (`unfinished` says which); every
    problem raises `error`, so the caller's verification fails with its own type.
    """
    versioned = datastore.read_versioned(path)
    if versioned is None:
        raise error(f"no {path!r} in the {datastore.describe()}: {unfinished}")
    try:
        record = json.loads(versioned.text)
    except json.JSONDecodeError as exc:
        raise error(f"{path!r} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise error(f"{path!r} is not a JSON object")
    missing = required - set(record)
    if missing:
        raise error(f"{path!r} lacks {sorted(missing)}")
    return record


def read_metadata(datastore: Datastore, run_id: str) -> dict[str, Any]:
    return read_json_record(
        datastore,
        f"{model_dir(run_id)}/metadata.json",
        _METADATA_KEYS,
        ModelVerificationError,
        f"the train step of run {run_id!r} did not finish",
    )


def download_verified_model(
    datastore: Datastore, run_id: str, dest: Path
) -> tuple[Path, dict[str, Any]]:
    """Download the run's model file to `dest` and check its sha256 against the metadata."""
    metadata = read_metadata(datastore, run_id)
    path = f"{model_dir(run_id)}/{metadata['model_file']}"
    local = dest / Path(metadata["model_file"]).name
    try:
        datastore.download_file(path, local)
    except DatastoreNotFoundError as exc:
        raise ModelVerificationError(f"model file missing for run {run_id!r}: {exc}") from exc
    actual = sha256_of_file(local)
    if actual != metadata["model_sha256"]:
        raise ModelVerificationError(
            f"model file {path!r} has sha256 {actual}, but its metadata says "
            f"{metadata['model_sha256']}: the file was changed or corrupted; refusing to load it"
        )
    return local, metadata


def verify_model(datastore: Datastore, run_id: str) -> ModelRef:
    """Check that the run's model exists, matches its sha256, loads and predicts."""
    from somemodel import load_model

    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        local, metadata = download_verified_model(datastore, run_id, Path(tmp))
        model = load_model(local)
    features = list(metadata["feature_names"])
    sample = pd.DataFrame([[0.0] * len(features)] * 3, columns=features)
    try:
        predicted = model.predict(sample)
        probabilities = model.predict_proba(sample)
    except Exception as exc:  # any failure to predict means the model is unusable
        raise ModelVerificationError(f"model of run {run_id!r} fails to predict: {exc}") from exc
    classes = [str(c) for c in metadata["classes"]]
    if not {str(p) for p in predicted} <= set(classes) or probabilities.shape != (
        len(sample),
        len(classes),
    ):
        raise ModelVerificationError(
            f"model of run {run_id!r} predicts outside its classes {classes}"
        )
    accuracy = metadata.get("metrics", {}).get("accuracy")
    model_path = f"{model_dir(run_id)}/{metadata['model_file']}"
    return ModelRef(
        run_id=run_id,
        model_path=model_path,
        model_sha256=metadata["model_sha256"],
        created_at=metadata["created_at"],
        accuracy=float(accuracy) if accuracy is not None else None,
        classes=tuple(classes),
        feature_names=tuple(features),
        uri=datastore.uri(model_path),
        metrics=dict(metadata.get("metrics", {})),
    )


@retry(
    retry=retry_if_exception_type(PreconditionFailedError),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.05, max=2),
    reraise=True,
)
def promote(datastore: Datastore, model: Promotable, root: str = MODELS_ROOT) -> bool:
    """Point `{root}/latest.json` at `model` unless it already points at a newer one.

    `model` is any `Promotable`: a `ModelRef` under `trained_models/`, or a
    scoring run's predictions under `predictions/`.

    The write is conditional on the version read, so two runs finishing at once
    cannot clobber each other: the loser re-reads and decides again.
    """
    path = f"{root}/{LATEST}"
    current = datastore.read_versioned(path)
    if current is not None:
        try:
            pointed = json.loads(current.text)
        except json.JSONDecodeError:
            pointed = {}
            logger.warning("%s was not valid JSON; replacing it", path)
        if pointed.get("created_at", "") > model.created_at:
            logger.info(
                "Not promoting %s: %s already points at the newer %s",
                model.run_id,
                path,
                pointed.get("run_id"),
            )
            return False
    datastore.write_conditional(
        path, json.dumps(model.pointer(), indent=2), etag=current.etag if current else None
    )
    logger.info("Promoted %s: %s now points at it", model.run_id, path)
    return True


def latest_run_id(datastore: Datastore, root: str = MODELS_ROOT) -> str | None:
    current = datastore.read_versioned(f"{root}/{LATEST}")
    if current is None:
        return None
    return str(json.loads(current.text)["run_id"])


def check_model_selector(value: str) -> str:
    """`latest`, or a training run id (validated like every run id)."""
    return value if value == MODEL_LATEST else check_run_id(value)


def resolve_model_run_id(datastore: Datastore, selector: str) -> str:
    """The training run id that `selector` (`latest` or a run id) names, or NoModelError."""
    if selector != MODEL_LATEST:
        if not datastore.exists(f"{model_dir(selector)}/metadata.json"):
            raise NoModelError(
                f"no trained model with run id {selector!r}: {model_dir(selector)}/metadata.json "
                f"does not exist in the {datastore.describe()}; pass model=latest or the run "
                "id of a finished training run"
            )
        return selector
    path = f"{MODELS_ROOT}/{LATEST}"
    try:
        run_id = latest_run_id(datastore)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise NoModelError(
            f"{path} in the {datastore.describe()} is not a valid pointer ({exc}); run the "
            "train flow again, or pass model=<training run id>"
        ) from exc
    if run_id is None:
        raise NoModelError(
            f"no model trained yet: {path} does not exist in the {datastore.describe()}; "
            "run the train flow first (python flows/train.py)"
        )
    return run_id
