"""Day one: the deployments' default inputs exist after set-up; `flows.put` adds files."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.declared import load_deployments
from deployments.seed import SAMPLES, default_input, seed_default_inputs
from flows.datastore import LocalDatastore
from flows.put import main as put_main
from flows.scoring import check_score_input
from flows.settings import Settings


def test_default_inputs_are_seeded_once_and_real_data_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    settings = Settings(local_datastore_root=root)
    specs = load_deployments()
    lines = seed_default_inputs(settings, specs)
    store = LocalDatastore(root)
    defaults = [default_input(spec) for spec in specs if spec.module in SAMPLES]
    assert set(defaults) == {"raw/train", "raw/score"}
    for folder in defaults:
        assert store.list_files(folder), lines
    # The scoring default is a folder of CSVs the score flow accepts.
    assert check_score_input(store, "raw/score")[1] == ["raw/score/iris_score.csv"]

    again = seed_default_inputs(settings, specs)
    assert all("already holds 1 file(s)" in line for line in again), again


def test_put_puts_a_local_file_at_a_datastore_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(root))
    local = tmp_path / "week.csv"
    local.write_text("a,b\n1,2\n")
    assert put_main([str(local), "raw/score/2026-11-30.csv"]) == 0
    assert (root / "raw/score/2026-11-30.csv").read_text() == "a,b\n1,2\n"
    assert "Put " in capsys.readouterr().out
    assert put_main([str(local), "raw/score/2026-11-30.csv"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert put_main([str(local), "raw/score/2026-11-30.csv", "--overwrite"]) == 0
    assert put_main([str(local), "../out.csv"]) == 1
    assert put_main([str(tmp_path / "nope.csv"), "raw/x.csv"]) == 1
