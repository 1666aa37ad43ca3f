"""The whole train flow through Prefect, on the in-process compute and the local datastore.

The same flow on the local compute (venvs, subprocesses) runs in
tests/flows/test_local_end_to_end.py, on Azurite in tests/integration/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.ai.ml import load_job
from prefect.states import State

from flows.backends import Backends, make_backends, use_backends
from flows.compute.base import ModelToRegister, Registration, StepFailedError
from flows.compute.local import LocalCompute
from flows.datastore import DatastoreNotFoundError, LocalDatastore
from flows.gate import GateDecision
from flows.settings import Settings
from flows.summary import TrainPlan, TrainSummary
from flows.tasks import RunIncompleteError
from flows.train import SAMPLE_PATH, main, seed_sample, train
from tests.conftest import SAMPLE_CSV, TEST_CACHE_DIR, backends_of
from tests.fakes import InProcessFactory
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.usefixtures("prefect_api", "in_process_compute")


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, in_process_compute: InProcessFactory
) -> Iterator[LocalDatastore]:
    root = tmp_path_factory.mktemp("datastore")
    plans = tmp_path_factory.mktemp("plans")
    # No environment variables: the flows get these backends through the override.
    with backends_of(
        in_process_compute, local_datastore_root=root, cache_dir=TEST_CACHE_DIR, plan_dir=plans
    ) as s:
        seed_sample(s)
        yield LocalDatastore(root)


@pytest.fixture(scope="module")
def first_state(store: LocalDatastore) -> State[TrainSummary]:
    return train(input_path=SAMPLE_PATH, return_state=True)


@pytest.fixture(scope="module")
def first_run(first_state: State[TrainSummary]) -> TrainSummary:
    return first_state.result()


def _latest(store: LocalDatastore) -> dict:
    current = store.read_versioned("trained_models/latest.json")
    assert current is not None
    return json.loads(current.text)


def _upload(store: LocalDatastore, tmp_path: Path, path: str, text: str) -> None:
    local = tmp_path / "upload.csv"
    local.write_text(text)
    store.upload_file(local, path, overwrite=True)


def test_trains_verifies_and_promotes(store: LocalDatastore, first_run: TrainSummary) -> None:
    run_id = first_run.run_id
    assert run_id.startswith("train-")
    files = store.list_files(f"trained_models/{run_id}")
    assert f"trained_models/{run_id}/model.skops" in files
    metadata = json.loads((store.root / f"trained_models/{run_id}/metadata.json").read_text())
    assert metadata["run_id"] == run_id
    assert metadata["input_path"] == SAMPLE_PATH
    assert metadata["metrics"]["accuracy"] > 0.8
    assert first_run.model.model_sha256 == metadata["model_sha256"]
    assert store.list_files(f"prepared_dataframes/{run_id}")
    assert _latest(store)["run_id"] == run_id
    assert first_run.promoted
    assert [s.step for s in first_run.steps] == ["data_prep", "train"]
    assert not [name for name in os.environ if name.startswith("SOMEMODEL_")]
    assert first_run.registration is not None
    assert "SOMEMODEL_AML_REGISTER_MODEL is off" in first_run.registration.message
    assert "model registry: not registered" in first_run.to_markdown()


def test_the_result_is_json_in_the_api(
    prefect_api: PrefectServer, first_state: State[TrainSummary], first_run: TrainSummary
) -> None:
    """What a REST caller reads (docs/api.md): the run id, model URI, sha256, metrics, promotion."""
    flow_run_id = first_state.state_details.flow_run_id
    assert flow_run_id is not None
    result = prefect_api.read_result(flow_run_id, "train-result")
    model = first_run.model
    assert result["run_id"] == first_run.run_id
    assert result["model_uri"] == model.uri
    assert result["model_uri"].endswith(f"trained_models/{first_run.run_id}/model.skops")
    assert result["model_sha256"] == model.model_sha256
    assert result["accuracy"] == model.accuracy
    assert result["metrics"]["accuracy"] == model.accuracy
    assert result["promoted"] is True
    assert result["promotion_reason"].startswith("first model (accuracy ")
    assert result["dry_run"] is False
    assert [step["step"] for step in result["steps"]] == ["data_prep", "train"]
    assert result == json.loads(json.dumps(first_run.to_result()))
    with prefect_api.client() as client:
        assert client.read_flow_run(flow_run_id).name == first_run.run_id


def test_a_run_that_keeps_the_current_model_says_why_in_its_result(
    first_run: TrainSummary,
) -> None:
    kept = replace(
        first_run,
        promoted=False,
        gate=GateDecision(False, "accuracy 0.50 vs 0.93 for the current model t", 0.5, 0.93, "t"),
    )
    result = kept.to_result()
    assert result["promoted"] is False
    assert result["promotion_reason"] == "accuracy 0.50 vs 0.93 for the current model t"
    assert (result["current_model_run_id"], result["current_model_accuracy"]) == ("t", 0.93)
    newer = replace(first_run, promoted=False).to_result()
    assert newer["promotion_reason"].startswith("trained_models/latest.json already points at")


def test_unchanged_second_run_reuses_everything(
    store: LocalDatastore, first_run: TrainSummary
) -> None:
    second = train(input_path=SAMPLE_PATH)
    assert second.run_id != first_run.run_id
    assert second.environment.reused
    assert second.environment.id == first_run.environment.id
    assert len(store.list_files("wheels")) == 1
    assert [s.reused for s in second.steps] == [True, True]
    assert {s.run_id for s in second.steps} == {first_run.run_id}
    assert second.model.run_id == first_run.run_id
    assert not store.list_files(f"trained_models/{second.run_id}")
    assert "| yes |" in second.to_markdown()


def test_force_rerun_runs_every_step(store: LocalDatastore, first_run: TrainSummary) -> None:
    forced = train(input_path=SAMPLE_PATH, force_rerun=True)
    assert [s.reused for s in forced.steps] == [False, False]
    assert forced.model.run_id == forced.run_id
    assert _latest(store)["run_id"] == forced.run_id


def test_changed_input_data_is_not_reused(
    store: LocalDatastore, first_run: TrainSummary, tmp_path: Path
) -> None:
    rows = SAMPLE_CSV.read_text().splitlines()
    _upload(store, tmp_path, "raw/changing.csv", "\n".join(rows[:-10]) + "\n")
    first = train(input_path="raw/changing.csv")
    _upload(store, tmp_path, "raw/changing.csv", "\n".join(rows[:-5]) + "\n")
    second = train(input_path="raw/changing.csv")
    assert [s.reused for s in second.steps] == [False, False]
    assert second.model.run_id == second.run_id != first.run_id


def test_rerun_with_same_run_id_reuses_finished_steps(
    store: LocalDatastore, first_run: TrainSummary
) -> None:
    again = train(input_path=SAMPLE_PATH, run_id=first_run.run_id)
    assert [s.reused for s in again.steps] == [True, True]
    # The outputs reused are those of the last run that ran these steps with these inputs.
    assert again.model.run_id == again.steps[1].run_id


def test_folder_of_csvs_is_one_input(store: LocalDatastore, tmp_path: Path) -> None:
    lines = SAMPLE_CSV.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    _upload(store, tmp_path, "raw/week/a.csv", "\n".join([header, *rows[::2]]) + "\n")
    _upload(store, tmp_path, "raw/week/b.csv", "\n".join([header, *rows[1::2]]) + "\n")
    summary = train(input_path="raw/week")
    metadata = json.loads(
        (store.root / f"trained_models/{summary.run_id}/metadata.json").read_text()
    )
    assert metadata["n_train"] + metadata["n_test"] == len(rows)


def test_missing_input_fails_before_any_step(
    store: LocalDatastore, first_run: TrainSummary
) -> None:
    before = store.list_files("prepared_dataframes")
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/nope.csv'.*local datastore"):
        train(input_path="raw/nope.csv")
    assert store.list_files("prepared_dataframes") == before


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "https://x.y/z.csv"])
def test_unsafe_input_path_is_rejected_by_parameter_validation(bad: str) -> None:
    with pytest.raises(Exception, match="input_path") as info:
        train(input_path=bad)
    assert "datastore" in str(info.value)


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("a,b\n1,2\n3,4\n", "target"),
        ("", "empty"),
        ("a,b,target\n", "no data rows"),
        ("a,b,target\nx,1,p\ny,2,q\n", "numeric"),
        ("a,b,target\n1,2,p\n3,4,p\n", "single class"),
    ],
    ids=["no-target", "empty", "header-only", "non-numeric", "single-class"],
)
def test_bad_csv_fails_with_reason_and_latest_stays(
    store: LocalDatastore, first_run: TrainSummary, tmp_path: Path, csv: str, message: str
) -> None:
    latest_before = _latest(store)
    _upload(store, tmp_path, "raw/bad.csv", csv)
    with pytest.raises(StepFailedError, match=message) as info:
        train(input_path="raw/bad.csv")
    assert "error:" in str(info.value)
    assert _latest(store) == latest_before


def test_cli_prints_run_id_model_and_accuracy(
    store: LocalDatastore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--input-path", SAMPLE_PATH]) == 0
    out = capsys.readouterr().out
    assert "run id:    train-" in out
    assert "model.skops" in out
    assert "accuracy:" in out


def test_cli_exits_non_zero_with_the_error(
    store: LocalDatastore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--input-path", "raw/missing.csv"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "raw/missing.csv" in err


class _Registry(LocalCompute):
    """The local compute with a model registry that answers as told."""

    fail: bool = False
    registered: list[str] = []

    def register_model(self, model: ModelToRegister) -> Registration:
        if self.fail:
            raise RuntimeError("registry unavailable (HTTP 503)")
        self.registered.append(model.run_id)
        return Registration(f"azureml:somemodel:{model.run_id}", f"registered as {model.run_id}")


@pytest.mark.parametrize("fail", [False, True], ids=["registered", "registry-fails"])
def test_registration_comes_after_verification_and_before_promotion(
    store: LocalDatastore, first_run: TrainSummary, fail: bool
) -> None:
    settings = Settings(
        local_datastore_root=store.root, cache_dir=TEST_CACHE_DIR, aml_register_model=True
    )

    class Registry(_Registry):
        pass

    Registry.fail, Registry.registered = fail, []

    def factory(_settings: Settings, logger: object, dry_run: bool) -> Backends:
        return Backends(settings, store, Registry(store, TEST_CACHE_DIR))

    before = _latest(store)
    with use_backends(factory):
        if not fail:
            summary = train(input_path=SAMPLE_PATH)
            assert isinstance(summary, TrainSummary)
            assert Registry.registered == [summary.model.run_id]
            assert f"registry: registered as {summary.model.run_id}" in summary.to_markdown()
            return
        with pytest.raises(RunIncompleteError) as info:
            train(input_path=SAMPLE_PATH)
    message = str(info.value)
    assert "was trained and verified" in message
    assert "registering it failed: registry unavailable (HTTP 503)" in message
    assert "latest.json was not moved" in message
    assert _latest(store) == before


def test_dry_run_is_the_recipe_with_the_planning_compute(
    store: LocalDatastore, first_run: TrainSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def factory(settings: Settings, logger: object, dry_run: bool) -> Backends:
        calls.append(dry_run)
        own = Settings(local_datastore_root=store.root, cache_dir=TEST_CACHE_DIR,
                       plan_dir=tmp_path / "plans")  # fmt: skip
        return make_backends(own, None, dry_run)

    before = sorted(store.list_files(""))
    with use_backends(factory):
        plan = train(input_path=SAMPLE_PATH, run_id="train-dry-run-2", dry_run=True)
    assert calls == [True]
    assert isinstance(plan, TrainPlan)
    assert [s.status for s in plan.steps] == ["Planned", "Planned"]
    assert plan.folder == tmp_path / "plans" / "train-dry-run-2"
    assert [p.name for p in plan.files()] == ["environment.yaml", "pipeline.yaml"]
    assert sorted(store.list_files("")) == before  # nothing uploaded, run or recorded

    monkeypatch.chdir(tmp_path)
    job = load_job(plan.pipeline_yaml)
    assert list(job.jobs) == ["data_prep", "train"]
    assert job.jobs["train"].inputs["training_dataframe"]._data.path == (
        "${{parent.jobs.data_prep.outputs.output_dataframe_path}}"
    )
    assert (plan.folder / str(job.jobs["train"].code) / "run_train.py").is_file()


def _future_pointer(run_id: str) -> bytes:
    return json.dumps({"run_id": run_id, "created_at": "2099-01-01T00:00:00+00:00"}).encode()


@pytest.mark.parametrize(
    "broken",
    [
        lambda run_id: b'\xff\xfe{"run_id": "x"}',
        lambda run_id: b"[1, 2]",
        lambda run_id: json.dumps({"run_id": run_id, "created_at": 1764500000}).encode(),
        _future_pointer,
    ],
    ids=["not-utf8", "json-list", "number-timestamp", "future-timestamp"],
)
def test_a_broken_latest_pointer_is_replaced_by_the_next_promotion(
    store: LocalDatastore, first_run: TrainSummary, broken: Callable[[str], bytes]
) -> None:
    model_run_id = train(input_path=SAMPLE_PATH).model.run_id
    (store.root / "trained_models/latest.json").write_bytes(broken(model_run_id))
    summary = train(input_path=SAMPLE_PATH)
    assert isinstance(summary, TrainSummary)
    assert summary.promoted
    assert _latest(store)["run_id"] == summary.model.run_id == model_run_id
    assert _latest(store)["created_at"] == summary.model.created_at


def test_a_reused_train_step_whose_model_no_longer_verifies_runs_again(
    store: LocalDatastore, first_run: TrainSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _upload(store, tmp_path, "raw/tampered.csv", SAMPLE_CSV.read_text())
    first = train(input_path="raw/tampered.csv")
    (store.root / f"trained_models/{first.model.run_id}/model.skops").write_bytes(b"corrupted")
    again = train(input_path="raw/tampered.csv")
    assert isinstance(again, TrainSummary)
    assert [s.reused for s in again.steps] == [True, False]
    assert again.model.run_id == again.run_id
    assert again.promoted  # the current model no longer verifies: it cannot hold the gate
    assert "does not match its sha256" in caplog.text


def test_resuming_a_run_whose_model_no_longer_verifies_trains_it_again(
    store: LocalDatastore, first_run: TrainSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = SAMPLE_CSV.read_text().splitlines()[:-4]  # content no other test trains on
    _upload(store, tmp_path, "raw/resumed.csv", "\n".join(rows) + "\n")
    first = train(input_path="raw/resumed.csv")
    assert first.model.run_id == first.run_id
    model = store.root / f"trained_models/{first.model.run_id}/model.skops"
    model.write_bytes(b"corrupted")
    again = train(input_path="raw/resumed.csv", run_id=first.run_id)
    assert isinstance(again, TrainSummary)
    assert [s.reused for s in again.steps] == [True, False]
    assert again.model.run_id == first.run_id
    assert f"Step {first.run_id}-train finished earlier, but" in caplog.text
    assert "does not match its sha256" in caplog.text


def test_cli_says_why_a_model_was_not_promoted(
    store: LocalDatastore, first_run: TrainSummary, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pointer a little ahead of this clock (within the tolerance) still counts as newer.
    ahead = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    pointer = {"run_id": first_run.run_id, "created_at": ahead}
    (store.root / "trained_models/latest.json").write_text(json.dumps(pointer))
    assert main(["--input-path", SAMPLE_PATH]) == 0
    out = capsys.readouterr().out
    assert "promoted:  no (trained_models/latest.json already points at a newer model" in out
    (store.root / "trained_models/latest.json").write_text(
        json.dumps({"run_id": first_run.run_id, "created_at": first_run.model.created_at})
    )
