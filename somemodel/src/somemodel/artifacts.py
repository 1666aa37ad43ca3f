"""The contract of the files the pipeline's steps write, defined once for every writer and reader.

A train step writes a model folder: the model file and then, last,
``metadata.json`` (:class:`ModelMetadata`), whose presence marks the folder
complete. A score step writes a predictions folder: ``predictions.csv`` and then,
last, ``manifest.json`` (:class:`PredictionsManifest`). Every file is written
through a temp file in the same folder and ``os.replace``, so a reader never sees
half a file, and a model file is deserialised only after its sha256 matched its
metadata (:func:`load_verified_model`).

This module ships in the ``somemodel`` wheel that every step environment and the
flows install: a change of format changes the wheel's hash, and with it the
environment version that step reuse is keyed on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

from somemodel._version import __version__
from somemodel.profile import (
    ClassDrift,
    DataProfile,
    FeatureDrift,
    ProfileError,
    compare_classes,
    compare_features,
)

if TYPE_CHECKING:
    # Imported where used: the merge step and the flows read and write these files
    # without scikit-learn (1.5 s of imports in every such process).
    from somemodel.models import SomeModel

MODEL_FILENAME = "model.skops"
METADATA_FILENAME = "metadata.json"
PREDICTIONS_FILENAME = "predictions.csv"
MANIFEST_FILENAME = "manifest.json"
# The train step's held-out rows (features + target), written before metadata.json:
# the promotion gate scores the current model on the same rows as the new one.
HOLDOUT_FILENAME = "holdout.parquet"
# The training data's profile (somemodel.profile), written before metadata.json, which
# names it; a model trained before profiles joined the contract has none.
PROFILE_FILENAME = "profile.json"
# A scoring run's drift report, written next to predictions.csv before manifest.json.
DRIFT_FILENAME = "drift.json"

_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")

Label = str | int | float | bool


class ArtifactError(ValueError):
    """An artifact file is missing, malformed, or does not match its record.

    The message names the file and says what is wrong with it.
    """


# --- bytes on disk ------------------------------------------------------------------------


def sha256_of_stream(stream: BinaryIO) -> str:
    """Hex sha256 of the rest of ``stream``, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    while chunk := stream.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path``."""
    with open(path, "rb") as stream:
        return sha256_of_stream(stream)


@contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp path beside ``target``; move it onto ``target`` only on success.

    The temp file lives in the target's folder so the final ``os.replace`` is a
    rename within one file system (atomic), never a copy. It is created with mode
    0o666 minus the umask, as ``open()`` would, not mkstemp's 0600: teammates and
    services reading the outputs must be able to. On any exception the temp file
    is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` all at once or not at all; return ``target``."""
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` all at once or not at all; return ``target``."""
    return atomic_write_bytes(target, text.encode("utf-8"))


# --- record validation ----------------------------------------------------------------------


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _is_file_name(value: Any) -> bool:
    # The name is joined to a folder by every reader: a path could point outside it.
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and "\\" not in value
        and PurePosixPath(value).name == value
    )


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_names(value: Any) -> bool:
    return (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)
    )


def _is_labels(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, str | int | float) for v in value)
    )


def _is_file_name_or_none(value: Any) -> bool:
    return value is None or _is_file_name(value)


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)


def _plain(value: Any) -> Any:
    if isinstance(value, ScoredInput):
        return {"path": value.path, "rows": value.rows}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


class _Record:
    """A JSON object with a fixed set of keys, each checked on construction and on reading."""

    # key -> (check, what the value must be, for the message)
    _checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]]
    _what: ClassVar[str]
    # Keys added after files were written without them: absent reads as None.
    _optional: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values, key for key as ``metadata.json``/``manifest.json``."""
        return {name: _plain(getattr(self, name)) for name in self._checks}

    @classmethod
    def _check_record(cls, record: Mapping[str, Any], source: str) -> None:
        """Checks across keys, after each key was checked on its own; none by default."""

    @classmethod
    def _check_values(cls, record: Mapping[str, Any], source: str) -> None:
        for name, (check, expected) in cls._checks.items():
            if not check(record[name]):
                raise ArtifactError(
                    f"{source}: {name!r} must be {expected}, got {record[name]!r:.200}"
                )
        cls._check_record(record, source)

    def __post_init__(self) -> None:
        self._check_values(self.to_dict(), self._what)

    @classmethod
    def _parse(cls, text: str, source: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{source} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise ArtifactError(f"{source} holds a JSON {type(record).__name__}, not an object")
        for name in cls._optional:
            record.setdefault(name, None)
        missing = sorted(set(cls._checks) - set(record))
        if missing:
            raise ArtifactError(
                f"{source} lacks {missing}: it was not written by the step that owns it, "
                "or that step did not finish; run the step again"
            )
        unknown = sorted(set(record) - set(cls._checks))
        if unknown:
            raise ArtifactError(
                f"{source} has keys {unknown} that somemodel {__version__} does not know: "
                "read it with the somemodel version that wrote it"
            )
        cls._check_values(record, source)
        return record


# --- model folder -----------------------------------------------------------------------------


def _json_label(value: Any) -> Label:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class ModelMetadata(_Record):
    """``metadata.json``: everything needed to verify, load and trace a trained model."""

    run_id: str
    input_path: str
    target_col: str
    model_file: str
    model_sha256: str
    metrics: Mapping[str, Any] = field(hash=False)
    feature_names: tuple[str, ...]
    classes: tuple[Label, ...]
    somemodel_version: str
    sklearn_version: str
    python_version: str
    n_train: int
    n_test: int
    created_at: str
    profile_file: str | None = None

    _what: ClassVar[str] = METADATA_FILENAME
    _optional: ClassVar[frozenset[str]] = frozenset({"profile_file"})
    _checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]] = {
        "run_id": (_is_str, "a string"),
        "input_path": (_is_str, "a string"),
        "target_col": (_is_str, "a string"),
        "model_file": (_is_file_name, "a file name without folders"),
        "model_sha256": (_is_sha256, "64 lowercase hex digits"),
        "metrics": (_is_object, "an object with string keys"),
        "feature_names": (_is_names, "a non-empty list of strings"),
        "classes": (_is_labels, "a non-empty list of strings or numbers"),
        "somemodel_version": (_is_str, "a string"),
        "sklearn_version": (_is_str, "a string"),
        "python_version": (_is_str, "a string"),
        "n_train": (_is_count, "a whole number >= 0"),
        "n_test": (_is_count, "a whole number >= 0"),
        "created_at": (_is_timestamp, "an ISO 8601 timestamp"),
        "profile_file": (_is_file_name_or_none, "null or a file name without folders"),
    }

    @classmethod
    def for_model(
        cls,
        model: SomeModel,
        *,
        model_sha256: str,
        run_id: str,
        input_path: str,
        target_col: str,
        metrics: Mapping[str, Any],
        n_train: int,
        n_test: int,
        created_at: datetime,
        profile_file: str | None = None,
    ) -> ModelMetadata:
        """The metadata of a fitted ``model`` saved as :data:`MODEL_FILENAME`."""
        import sklearn

        return cls(
            run_id=run_id,
            input_path=input_path,
            target_col=target_col,
            model_file=MODEL_FILENAME,
            model_sha256=model_sha256,
            metrics=dict(metrics),
            feature_names=tuple(str(name) for name in getattr(model, "feature_names_in_", ())),
            classes=tuple(_json_label(c) for c in model.classes_),
            somemodel_version=__version__,
            sklearn_version=sklearn.__version__,
            python_version=platform.python_version(),
            n_train=n_train,
            n_test=n_test,
            created_at=created_at.isoformat(),
            profile_file=profile_file,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = METADATA_FILENAME) -> ModelMetadata:
        """Parse and check ``metadata.json``; ``source`` names the file in messages."""
        record = cls._parse(text, source)
        return cls(
            **{
                **record,
                "feature_names": tuple(record["feature_names"]),
                "classes": tuple(record["classes"]),
            }
        )


@dataclass(frozen=True)
class VerifiedModel:
    """A model loaded from a folder whose file matched its metadata's sha256."""

    model: SomeModel
    metadata: ModelMetadata
    path: Path

    @property
    def sha256(self) -> str:
        return self.metadata.model_sha256

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata.feature_names)


def _read_text(path: Path, missing: str) -> str:
    """The UTF-8 text of the artifact file `path`; ArtifactError(`missing`) if it is absent."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(missing) from exc


def read_metadata(folder: Path) -> ModelMetadata:
    """The checked ``metadata.json`` of the model folder ``folder``."""
    path = Path(folder) / METADATA_FILENAME
    text = _read_text(
        path,
        f"{METADATA_FILENAME} not found in {folder}: is it a train output, and did the "
        "train step finish?",
    )
    return ModelMetadata.from_json(text, source=str(path))


def save_model_file(model: SomeModel, folder: Path) -> str:
    """Save ``model`` atomically as ``folder/model.skops``; return its sha256.

    Any ``metadata.json`` already there is removed first: a folder holds
    metadata only when it matches the model file next to it.
    """
    from somemodel import persistence

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA_FILENAME).unlink(missing_ok=True)
    target = folder / MODEL_FILENAME
    with atomic_output(target) as tmp:
        persistence.save_model(model, tmp)
    return sha256_of_file(target)


def write_training_profile(profile: DataProfile, folder: Path) -> str:
    """Write the training profile into the model folder (before ``metadata.json``, which
    names it); return its file name for the metadata.
    """
    atomic_write_text(Path(folder) / PROFILE_FILENAME, json.dumps(profile.to_dict()) + "\n")
    return PROFILE_FILENAME


def read_training_profile(folder: Path, metadata: ModelMetadata) -> DataProfile | None:
    """The training profile ``metadata`` names; None for a model trained without one."""
    if metadata.profile_file is None:
        return None
    path = Path(folder) / metadata.profile_file
    text = _read_text(path, f"{path} not found, although {METADATA_FILENAME} names it")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    try:
        profile = DataProfile.from_dict(record)
    except ProfileError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    if profile.feature_names != list(metadata.feature_names):
        raise ArtifactError(
            f"{path} profiles features {profile.feature_names[:10]}, the model has "
            f"{list(metadata.feature_names)[:10]}"
        )
    return profile


def write_metadata(metadata: ModelMetadata, folder: Path) -> Path:
    """Write ``metadata.json``; call it after the model file: it marks the folder complete."""
    return atomic_write_text(Path(folder) / METADATA_FILENAME, metadata.to_json())


def write_model_artifact(
    model: SomeModel,
    folder: Path,
    *,
    run_id: str,
    input_path: str,
    target_col: str,
    metrics: Mapping[str, Any],
    n_train: int,
    n_test: int,
    created_at: datetime,
    profile: DataProfile | None = None,
) -> ModelMetadata:
    """Write a complete model folder: the model file (and training profile), then its
    ``metadata.json``.
    """
    sha256 = save_model_file(model, folder)
    profile_file = write_training_profile(profile, folder) if profile is not None else None
    metadata = ModelMetadata.for_model(
        model,
        model_sha256=sha256,
        run_id=run_id,
        input_path=input_path,
        target_col=target_col,
        metrics=metrics,
        n_train=n_train,
        n_test=n_test,
        created_at=created_at,
        profile_file=profile_file,
    )
    write_metadata(metadata, folder)
    return metadata


def load_verified_model(folder: Path) -> VerifiedModel:
    """Read ``metadata.json``, check the model file's sha256 against it, then load the model.

    The hash is checked before loading, so a swapped or corrupted file is never
    deserialised at all; loading then trusts only somemodel's own types.
    """
    from somemodel import persistence

    folder = Path(folder)
    metadata = read_metadata(folder)
    path = folder / metadata.model_file
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path} (named by {folder / METADATA_FILENAME})")
    actual = sha256_of_file(path)
    if actual != metadata.model_sha256:
        raise ArtifactError(
            f"{path} does not match its metadata: expected sha256 {metadata.model_sha256}, "
            f"actual {actual}; refusing to load it"
        )
    try:
        model = persistence.load_model(path)
    except persistence.ModelLoadError as exc:
        raise ArtifactError(str(exc)) from exc
    trained_on = [str(name) for name in getattr(model, "feature_names_in_", [])]
    if trained_on and trained_on != list(metadata.feature_names):
        raise ArtifactError(
            f"feature names in {folder / METADATA_FILENAME} {list(metadata.feature_names)} "
            f"differ from the model's {trained_on}"
        )
    return VerifiedModel(model=model, metadata=metadata, path=path)


# --- predictions folder ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredInput:
    """One input CSV of a scoring run: its path relative to the input, and its data rows."""

    path: str
    rows: int

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not _is_count(self.rows):
            raise ArtifactError(
                f"a scored input needs a path (string) and rows (a whole number >= 0), "
                f"got {self.path!r} and {self.rows!r}"
            )


def _is_inputs(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(item, ScoredInput)
        or (
            isinstance(item, Mapping)
            and set(item) == {"path", "rows"}
            and isinstance(item["path"], str)
            and _is_count(item["rows"])
        )
        for item in value
    )


@dataclass(frozen=True)
class PredictionsManifest(_Record):
    """``manifest.json``: which model scored which inputs, and how many rows came out."""

    run_id: str
    model_run_id: str
    model_sha256: str
    inputs: tuple[ScoredInput, ...]
    output_rows: int
    classes: tuple[Label, ...]
    created_at: str

    _what: ClassVar[str] = MANIFEST_FILENAME
    _checks: ClassVar[Mapping[str, tuple[Callable[[Any], bool], str]]] = {
        "run_id": (_is_str, "a string"),
        "model_run_id": (_is_str, "a string"),
        "model_sha256": (_is_sha256, "64 lowercase hex digits"),
        "inputs": (_is_inputs, 'a list of {"path": string, "rows": whole number}'),
        "output_rows": (_is_count, "a whole number >= 0"),
        "classes": (_is_labels, "a non-empty list of strings or numbers"),
        "created_at": (_is_timestamp, "an ISO 8601 timestamp"),
    }

    @classmethod
    def _check_record(cls, record: Mapping[str, Any], source: str) -> None:
        rows = [
            (i.path, i.rows) if isinstance(i, ScoredInput) else (i["path"], i["rows"])
            for i in record["inputs"]
        ]
        expected = sum(n for _, n in rows)
        if record["output_rows"] != expected:
            raise ArtifactError(
                f"{source} claims {record['output_rows']} output rows for {expected} input "
                f"rows ({', '.join(f'{p}: {n}' for p, n in rows) or 'no inputs'})"
            )

    @classmethod
    def for_inputs(
        cls,
        *,
        run_id: str,
        model: ModelMetadata,
        inputs: Sequence[ScoredInput],
        created_at: datetime,
    ) -> PredictionsManifest:
        """The manifest of ``inputs`` scored by the model ``model`` describes."""
        return cls(
            run_id=run_id,
            model_run_id=model.run_id,
            model_sha256=model.model_sha256,
            inputs=tuple(inputs),
            output_rows=sum(item.rows for item in inputs),
            classes=model.classes,
            created_at=created_at.isoformat(),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST_FILENAME) -> PredictionsManifest:
        """Parse and check ``manifest.json``; ``source`` names the file in messages."""
        record = cls._parse(text, source)
        return cls(
            **{
                **record,
                "inputs": tuple(ScoredInput(i["path"], i["rows"]) for i in record["inputs"]),
                "classes": tuple(record["classes"]),
            }
        )


def begin_predictions(folder: Path) -> Path:
    """Prepare ``folder`` for a new ``predictions.csv``; return that file's path.

    The old manifest goes first: until the new one is written last, the folder
    does not claim to be complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILENAME).unlink(missing_ok=True)
    return folder / PREDICTIONS_FILENAME


def write_manifest(manifest: PredictionsManifest, folder: Path) -> Path:
    """Write ``manifest.json``; call it after ``predictions.csv``: it marks the folder complete."""
    return atomic_write_text(Path(folder) / MANIFEST_FILENAME, manifest.to_json())


def read_manifest(folder: Path) -> PredictionsManifest:
    """The checked ``manifest.json`` of the predictions folder ``folder``."""
    path = Path(folder) / MANIFEST_FILENAME
    text = _read_text(
        path, f"{MANIFEST_FILENAME} not found in {folder}: the score step did not finish"
    )
    return PredictionsManifest.from_json(text, source=str(path))


# --- drift report -------------------------------------------------------------------------------

NO_TRAINING_PROFILE = "no training profile"


@dataclass(frozen=True)
class DriftReport:
    """``drift.json``: the profile of the rows a scoring run scored, against training's.

    Both profiles are kept (counts), so shards' reports merge exactly and a reader
    can draw the bins; the measures are computed from them, never stored alone.
    """

    run_id: str
    model_run_id: str
    model_sha256: str
    created_at: str
    training: DataProfile | None
    scored: DataProfile

    @property
    def status(self) -> str:
        return "compared" if self.training is not None else NO_TRAINING_PROFILE

    @property
    def features(self) -> tuple[FeatureDrift, ...]:
        if self.training is None:
            return ()
        return compare_features(self.training, self.scored)

    @property
    def classes(self) -> ClassDrift | None:
        if self.training is None:
            return None
        return compare_classes(self.training, self.scored)

    def to_json(self) -> str:
        classes = self.classes
        return (
            json.dumps(
                {
                    "run_id": self.run_id,
                    "model_run_id": self.model_run_id,
                    "model_sha256": self.model_sha256,
                    "created_at": self.created_at,
                    "status": self.status,
                    "rows": self.scored.rows,
                    "features": [f.to_dict() for f in self.features],
                    "classes": classes.to_dict() if classes is not None else None,
                    "training_profile": (
                        self.training.to_dict() if self.training is not None else None
                    ),
                    "scored_profile": self.scored.to_dict(),
                },
                indent=1,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str, source: str = DRIFT_FILENAME) -> DriftReport:
        """Parse ``drift.json``; ArtifactError naming ``source`` when it is not one."""
        try:
            record = json.loads(text)
            training = record["training_profile"]
            return cls(
                run_id=str(record["run_id"]),
                model_run_id=str(record["model_run_id"]),
                model_sha256=str(record["model_sha256"]),
                created_at=str(record["created_at"]),
                training=DataProfile.from_dict(training) if training is not None else None,
                scored=DataProfile.from_dict(record["scored_profile"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ProfileError) as exc:
            raise ArtifactError(f"{source} is not a drift report: {exc}") from exc


def write_drift_report(report: DriftReport, folder: Path) -> Path:
    """Write ``drift.json`` next to the predictions (before ``manifest.json``)."""
    return atomic_write_text(Path(folder) / DRIFT_FILENAME, report.to_json())


def read_drift_report(folder: Path) -> DriftReport:
    """The drift report in the predictions folder ``folder``."""
    path = Path(folder) / DRIFT_FILENAME
    text = _read_text(path, f"{DRIFT_FILENAME} not found in {folder}")
    return DriftReport.from_json(text, source=str(path))
