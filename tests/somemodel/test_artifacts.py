"""The artifact contract: what model and predictions folders hold, and how they are written."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import somemodel.artifacts
import somemodel.persistence
from somemodel import SomeModel
from somemodel.artifacts import (
    MANIFEST_FILENAME,
    METADATA_FILENAME,
    MODEL_FILENAME,
    PREDICTIONS_FILENAME,
    ArtifactError,
    ModelMetadata,
    PredictionsManifest,
    ScoredInput,
    atomic_output,
    atomic_write_text,
    begin_predictions,
    load_verified_model,
    read_manifest,
    sha256_of_file,
    write_manifest,
    write_model_artifact,
)

CREATED = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def model() -> SomeModel:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    return SomeModel(random_state=0).fit(x, np.where(x["a"] > 0, "p", "q"))


@pytest.fixture
def model_dir(tmp_path: Path, model: SomeModel) -> Path:
    folder = tmp_path / "model"
    write_model_artifact(
        model,
        folder,
        run_id="train-1",
        input_path="raw/a.csv",
        target_col="target",
        metrics={"accuracy": 0.9},
        n_train=24,
        n_test=6,
        created_at=CREATED,
    )
    return folder


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _metadata(model_dir: Path) -> dict[str, object]:
    return json.loads((model_dir / METADATA_FILENAME).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("record", [ModelMetadata, PredictionsManifest])
def test_every_field_is_checked(record: type) -> None:
    assert list(record._checks) == [f.name for f in dataclasses.fields(record)]


def test_model_folder_round_trip(model_dir: Path) -> None:
    assert sorted(p.name for p in model_dir.iterdir()) == [METADATA_FILENAME, MODEL_FILENAME]
    verified = load_verified_model(model_dir)
    assert verified.sha256 == sha256_of_file(model_dir / MODEL_FILENAME)
    assert verified.metadata.classes == ("p", "q")
    assert verified.feature_names == ["a", "b"]
    assert verified.metadata.created_at == CREATED.isoformat()
    text = (model_dir / METADATA_FILENAME).read_text()
    assert ModelMetadata.from_json(text).to_json() == text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_sha256": "x"}, r"'model_sha256' must be 64 lowercase hex digits, got 'x'"),
        ({"model_file": "../../etc/passwd"}, r"'model_file' must be a file name without folders"),
        ({"classes": []}, r"'classes' must be a non-empty list"),
        ({"n_train": -1}, r"'n_train' must be a whole number >= 0"),
        ({"created_at": "yesterday"}, r"'created_at' must be an ISO 8601 timestamp"),
        ({"surprise": 1}, r"has keys \['surprise'\] that somemodel .* does not know"),
    ],
)
def test_bad_metadata_is_refused_naming_the_file_and_the_key(
    model_dir: Path, change: dict[str, object], message: str
) -> None:
    path = model_dir / METADATA_FILENAME
    path.write_text(json.dumps({**_metadata(model_dir), **change}))
    with pytest.raises(ArtifactError, match=message) as caught:
        load_verified_model(model_dir)
    assert str(path) in str(caught.value)


def test_metadata_missing_keys_or_not_json_is_refused(model_dir: Path) -> None:
    path = model_dir / METADATA_FILENAME
    metadata = _metadata(model_dir)
    del metadata["feature_names"]
    path.write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=r"lacks \['feature_names'\]"):
        load_verified_model(model_dir)
    path.write_text("{")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load_verified_model(model_dir)
    path.write_text("[]")
    with pytest.raises(ArtifactError, match="holds a JSON list, not an object"):
        load_verified_model(model_dir)
    path.unlink()
    with pytest.raises(ArtifactError, match=r"metadata\.json not found"):
        load_verified_model(model_dir)


def test_sha_mismatch_is_refused_before_loading(
    model_dir: Path, model: SomeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (model_dir / MODEL_FILENAME).open("ab") as handle:
        handle.write(b"\0")
    loads: list[object] = []
    monkeypatch.setattr(somemodel.persistence, "load_model", loads.append)
    with pytest.raises(ArtifactError, match=r"expected sha256 [0-9a-f]{64}, actual .*refusing"):
        load_verified_model(model_dir)
    assert loads == [], "the tampered file was handed to the deserialiser"


def test_saving_a_model_drops_stale_metadata_first(model_dir: Path, model: SomeModel) -> None:
    def fail(model: object, path: Path) -> None:
        Path(path).write_bytes(b"half a model")
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(somemodel.persistence, "save_model", fail)
        with pytest.raises(OSError, match="disk full"):
            somemodel.artifacts.save_model_file(model, model_dir)
    # The old model is intact, but no metadata vouches for it any more.
    assert sorted(p.name for p in model_dir.iterdir()) == [MODEL_FILENAME]


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    atomic_write_text(target, "old\n")

    def write_half() -> None:
        with atomic_output(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_half()
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_write_fails_cleanly_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError("killed before rename")

    monkeypatch.setattr(somemodel.artifacts.os, "replace", crash)
    with pytest.raises(OSError, match="killed before rename"):
        atomic_write_text(tmp_path / "out" / "file.txt", "text")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.usefixtures("umask_027")
def test_atomic_write_respects_the_umask(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "file.txt", "text")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0666 & ~027, not mkstemp's 0600


def _manifest(**change: object) -> dict[str, object]:
    return {
        "run_id": "score-1",
        "model_run_id": "train-1",
        "model_sha256": "ab" * 32,
        "inputs": [{"path": "a.csv", "rows": 2}, {"path": "b/c.csv", "rows": 3}],
        "output_rows": 5,
        "classes": ["p", "q"],
        "created_at": CREATED.isoformat(),
        **change,
    }


def test_manifest_round_trip(tmp_path: Path, model_dir: Path) -> None:
    model = load_verified_model(model_dir)
    manifest = PredictionsManifest.for_inputs(
        run_id="score-1",
        model=model.metadata,
        inputs=[ScoredInput("a.csv", 2), ScoredInput("b/c.csv", 3)],
        created_at=CREATED,
    )
    assert manifest.output_rows == 5
    assert manifest.model_sha256 == model.sha256
    target = begin_predictions(tmp_path / "out")
    assert target.name == PREDICTIONS_FILENAME
    write_manifest(manifest, tmp_path / "out")
    assert read_manifest(tmp_path / "out") == manifest
    assert json.loads((tmp_path / "out" / MANIFEST_FILENAME).read_text())["inputs"][1] == {
        "path": "b/c.csv",
        "rows": 3,
    }
    begin_predictions(tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST_FILENAME).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_rows": 4}, r"claims 4 output rows for 5 input rows \(a.csv: 2, b/c.csv: 3\)"),
        ({"inputs": [{"path": "a.csv"}]}, r"'inputs' must be a list of"),
        ({"model_run_id": None}, r"'model_run_id' must be a string, got None"),
    ],
)
def test_bad_manifest_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ArtifactError, match=f"predictions/x/manifest.json.*{message}"):
        PredictionsManifest.from_json(
            json.dumps(_manifest(**change)), source="predictions/x/manifest.json"
        )


def test_a_manifest_cannot_be_built_inconsistent() -> None:
    with pytest.raises(ArtifactError, match="claims 1 output rows for 0 input rows"):
        PredictionsManifest(
            run_id="s",
            model_run_id="t",
            model_sha256="ab" * 32,
            inputs=(),
            output_rows=1,
            classes=("p",),
            created_at=CREATED.isoformat(),
        )
