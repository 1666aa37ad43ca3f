"""A datastore, a ready step environment, and probe steps that misbehave on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef
from flows.datastore import LocalDatastore
from flows.registry import ModelRef


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "datastore")


@pytest.fixture(scope="module")
def environment(step_environment: EnvironmentRef) -> EnvironmentRef:
    return step_environment


def model_ref(run_id: str, created_at: str) -> ModelRef:
    return ModelRef(
        run_id=run_id,
        model_path=f"trained_models/{run_id}/model.skops",
        model_sha256="0" * 64,
        created_at=created_at,
        accuracy=0.9,
        classes=("a", "b"),
        feature_names=("x",),
        uri=f"file:///{run_id}",
    )


def latest_json(store: LocalDatastore) -> dict[str, object] | None:
    current = store.read_versioned("trained_models/latest.json")
    return None if current is None else dict(json.loads(current.text))
