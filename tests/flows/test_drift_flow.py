"""Drift through the flows: the report per scoring run, the alert, the history in artifacts.

The train and score flows through the session's Prefect server, steps in-process
(tests/fakes.py), on a local datastore: a model trained on the drift table
(tests/drift_data.py), then scoring runs on data of its distribution and on
shifted data (x3 scaled, the class `mid` removed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows import report
from flows.datastore import LocalDatastore
from flows.score import score
from flows.scoring import ScoreSummary
from flows.summary import TrainSummary
from flows.train import train
from flows.trends import DRIFT_TAG, DRIFTED
from tests.conftest import TEST_CACHE_DIR, backends_of
from tests.drift_data import drift_table
from tests.fakes import InProcessFactory
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.usefixtures("prefect_api", "in_process_compute")


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, in_process_compute: InProcessFactory
) -> Iterator[LocalDatastore]:
    root = tmp_path_factory.mktemp("datastore")
    local = tmp_path_factory.mktemp("csv")
    datastore = LocalDatastore(root)
    tables = {
        "raw/train.csv": drift_table(4000, seed=21),
        "raw/score/week-1.csv": drift_table(3000, seed=22).drop(columns="target"),
        "raw/score/week-2.csv": drift_table(3000, seed=23, shifted=True).drop(columns="target"),
        "raw/score/week-3.csv": drift_table(3000, seed=24).drop(columns="target"),
    }
    for path, table in tables.items():
        csv = local / path.replace("/", "_")
        table.to_csv(csv, index=False)
        datastore.upload_file(csv, path)
    with backends_of(in_process_compute, local_datastore_root=root, cache_dir=TEST_CACHE_DIR):
        yield datastore


@pytest.fixture(scope="module")
def trained(store: LocalDatastore) -> TrainSummary:
    return train(input_path="raw/train.csv")


@pytest.fixture(scope="module")
def weeks(trained: TrainSummary) -> list[Any]:
    """Three scoring runs, one a week's file: plain, shifted, plain (final states)."""
    return [score(input_path=f"raw/score/week-{k}.csv", return_state=True) for k in (1, 2, 3)]


def _tags(flow_run_id: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).tags


def test_data_of_the_training_distribution_reports_no_drift(
    store: LocalDatastore, weeks: list[Any]
) -> None:
    state = weeks[0]
    summary: ScoreSummary = state.result()
    assert state.name == "Completed"
    assert summary.drift is not None
    assert not summary.drift.drifted
    assert summary.drift.summary_line().startswith("no drift: largest feature PSI")
    assert store.exists(f"predictions/{summary.run_id}/drift.json")
    assert DRIFT_TAG not in _tags(state.state_details.flow_run_id)


def test_shifted_data_drifts_on_exactly_those_and_alerts_with_predictions_written(
    store: LocalDatastore, weeks: list[Any]
) -> None:
    state = weeks[1]
    summary: ScoreSummary = state.result()
    assert (state.type.value, state.name) == ("COMPLETED", DRIFTED)
    assert summary.drift is not None
    assert [f.name for f in summary.drift.drifted_features] == ["x3"]
    assert summary.drift.class_drift
    assert state.message.startswith("DRIFT: x3 (PSI ")
    assert "predicted classes (PSI " in state.message
    assert DRIFT_TAG in _tags(state.state_details.flow_run_id)
    # The predictions are written, verified and promoted all the same.
    assert summary.promoted
    assert summary.predictions.rows == len(drift_table(3000, seed=23, shifted=True))
    assert store.exists(summary.predictions.predictions_path)
    markdown = summary.to_markdown()
    assert f"**{state.message}**" in markdown
    assert "| x3 |" in markdown


def test_the_drift_verdict_is_in_the_runs_json_result(
    prefect_api: PrefectServer, weeks: list[Any]
) -> None:
    """What a REST caller reads (docs/api.md, "The result")."""
    plain, shifted = (
        prefect_api.read_result(state.state_details.flow_run_id, "score-result")["drift"]
        for state in weeks[:2]
    )
    assert plain["drifted"] is False
    assert plain["drifted_features"] == []
    assert shifted["drifted"] is True
    assert shifted["drifted_features"] == ["x3"]
    assert shifted["classes_drifted"] is True
    assert shifted["summary"] == weeks[1].message
    assert shifted["psi"]["x3"] > shifted["threshold"]


def test_a_history_of_three_runs_shows_in_the_artifacts(weeks: list[Any]) -> None:
    ids = [state.state_details.flow_run_id for state in weeks]
    run_ids = [state.result().run_id for state in weeks]
    with get_client(sync_client=True) as client:
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["drift-adhoc"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=ids),
            )
        )
        trends = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["drift-trend-adhoc"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=ids),
            )
        )
    assert sorted(a.flow_run_id for a in tables) == sorted(ids)
    assert len(trends) == 3
    last = next(a for a in trends if a.flow_run_id == ids[2])
    assert all(f"`{run_id}`" in str(last.data) for run_id in run_ids)
    assert "**x3, classes**" in str(last.data)  # week 2, in week 3's trend


def test_report_prints_the_weeks_from_the_datastore_alone(
    store: LocalDatastore,
    trained: TrainSummary,
    weeks: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(Path(store.root)))
    assert report.main(["--weeks", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{trained.run_id}  accuracy {trained.model.accuracy:.4f}" in out
    lines = [line for line in out.splitlines() if "score-" in line]
    assert len(lines) == 3
    assert "DRIFT: x3" in lines[1]
    assert "no drift" in lines[0]
    assert "no drift" in lines[2]
    assert re.search(r" mid [0-4]%$", lines[1])  # the shares of week 2: almost no mid
