"""A model file swapped in the datastore is refused before it is deserialised."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import somemodel.persistence
from flows.datastore import LocalDatastore
from flows.registry import ModelVerificationError, verify_model
from somemodel import SomeModel, save_model
from somemodel.artifacts import write_model_artifact


def _fitted(seed: int) -> SomeModel:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    return SomeModel(random_state=seed).fit(x, np.where(x["a"] > 0, "p", "q"))


def _publish(store: LocalDatastore, tmp_path: Path, run_id: str) -> None:
    folder = tmp_path / "published"
    write_model_artifact(
        _fitted(0),
        folder,
        run_id=run_id,
        input_path="raw/a.csv",
        target_col="target",
        metrics={},
        n_train=30,
        n_test=0,
        created_at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    for name in ("model.skops", "metadata.json"):
        store.upload_file(folder / name, f"trained_models/{run_id}/{name}")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle payload ran",))


@pytest.mark.parametrize("swap", ["another-valid-model", "pickle-payload", "truncated"])
def test_swapped_model_is_refused_before_loading(
    store: LocalDatastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    run_id = "train-swapped"
    _publish(store, tmp_path, run_id)
    assert verify_model(store, run_id).run_id == run_id  # the untouched model verifies

    replacement = tmp_path / "replacement"
    if swap == "another-valid-model":
        save_model(_fitted(1), replacement)
    elif swap == "pickle-payload":
        replacement.write_bytes(pickle.dumps(_Boom()))
    else:
        replacement.write_bytes(
            (store.root / f"trained_models/{run_id}/model.skops").read_bytes()[:100]
        )
    store.upload_file(replacement, f"trained_models/{run_id}/model.skops", overwrite=True)

    loads: list[object] = []
    monkeypatch.setattr(somemodel.persistence, "load_model", lambda path: loads.append(path))
    with pytest.raises(ModelVerificationError, match=r"sha256.*refusing to load it"):
        verify_model(store, run_id)
    assert loads == [], "the swapped file was handed to the deserialiser"
