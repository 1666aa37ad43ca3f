"""A datastore, a ready step environment, and probe steps that misbehave on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef, EnvironmentSpec, StepOutput, StepSpec
from flows.compute.local import LocalCompute
from flows.datastore import LocalDatastore
from flows.registry import ModelRef
from flows.settings import Settings
from flows.wheel import SOMEMODEL_SOURCE, build_wheel
from tests.conftest import TEST_CACHE_DIR


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "datastore")


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentRef:
    """The real step environment (cached across tests by content hash)."""
    seed = LocalDatastore(tmp_path_factory.mktemp("wheel-store"))
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    seed.upload_file(wheel.local_path, wheel.datastore_path)
    settings = Settings()
    spec = EnvironmentSpec("somemodel-env", settings.base_image, settings.pip_packages, wheel)
    return LocalCompute(seed, TEST_CACHE_DIR).prepare_environment(spec)


def probe_step(tmp_path: Path, body: str, run_id: str, output: str) -> StepSpec:
    """A step whose script runs `body` with `out` (a Path) as its only output folder."""
    code = tmp_path / f"probe-{run_id}"
    code.mkdir(exist_ok=True)
    (code / "probe.py").write_text(
        "import argparse, os, pathlib, signal, sys, time\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--out')\n"
        "out = pathlib.Path(parser.parse_args().out)\n" + body
    )
    return StepSpec(
        step="probe",
        run_id=run_id,
        code_dir=code,
        script="probe.py",
        inputs=(),
        outputs=(StepOutput("out", output),),
    )


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
