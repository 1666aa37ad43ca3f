"""The whole score flow through Prefect, on the in-process compute and the local datastore.

The same flow on the local compute (venvs, subprocesses) runs in
tests/flows/test_local_end_to_end.py, on the fake AML workspace in tests/flows/compute/.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prefect.states import State

from flows.backends import Backends, use_backends
from flows.compute.base import EnvironmentRef, StepFailedError, StepResult, StepSpec
from flows.compute.local import LocalCompute
from flows.datastore import DatastoreNotFoundError, LocalDatastore
from flows.new_files import NothingNew
from flows.registry import ModelVerificationError, NoModelError
from flows.score import SAMPLE_FILE, SAMPLE_PATH, main, score, seed_sample
from flows.scoring import ScoreInputError, ScoreSummary
from flows.settings import Settings
from flows.summary import TrainSummary
from flows.train import SAMPLE_PATH as TRAIN_SAMPLE_PATH
from flows.train import seed_sample as seed_train_sample
from flows.train import train
from somemodel import load_model
from tests.conftest import TEST_CACHE_DIR, backends_of
from tests.fakes import InProcessFactory
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.usefixtures("prefect_api", "in_process_compute")

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
HEADER = ",".join(["id", *FEATURES])


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, in_process_compute: InProcessFactory
) -> Iterator[LocalDatastore]:
    root = tmp_path_factory.mktemp("datastore")
    # No environment variables: the flows get these backends through the override.
    with backends_of(
        in_process_compute, local_datastore_root=root, cache_dir=TEST_CACHE_DIR
    ) as settings:
        seed_train_sample(settings)
        seed_sample(settings)
        yield LocalDatastore(root)


@pytest.fixture(scope="module")
def trained(store: LocalDatastore) -> TrainSummary:
    return train(input_path=TRAIN_SAMPLE_PATH)


@pytest.fixture(scope="module")
def first_score_state(trained: TrainSummary) -> State[ScoreSummary]:
    return score(input_path=SAMPLE_PATH, return_state=True)


@pytest.fixture(scope="module")
def first_score(first_score_state: State[ScoreSummary]) -> ScoreSummary:
    return first_score_state.result()


def _result(server: PrefectServer, state: State[Any]) -> Any:
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return server.read_result(flow_run_id, "score-result")


def _pointer(store: LocalDatastore) -> dict | None:
    current = store.read_versioned("predictions/latest.json")
    return json.loads(current.text) if current else None


def _upload(store: LocalDatastore, tmp_path: Path, path: str, text: str) -> None:
    local = tmp_path / "upload.csv"
    local.write_text(text)
    store.upload_file(local, path, overwrite=True)


def test_sample_predictions_match_model_predict(
    store: LocalDatastore, trained: TrainSummary, first_score: ScoreSummary
) -> None:
    run_id = first_score.run_id
    assert run_id.startswith("score-")
    out = store.root / "predictions" / run_id
    predictions = pd.read_csv(out / "predictions.csv", dtype={"row_id": str})
    rows = pd.read_csv(SAMPLE_FILE, dtype={"id": str})
    model = load_model(store.root / trained.model.model_path)

    assert predictions["row_id"].tolist() == rows["id"].tolist()
    assert predictions["predicted_class"].tolist() == list(model.predict(rows[FEATURES]))
    np.testing.assert_allclose(
        predictions[[f"proba_{c}" for c in model.classes_]].to_numpy(),
        model.predict_proba(rows[FEATURES]),
        rtol=0,
        atol=5e-10 + 1e-15,  # written with 9 decimal places
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_run_id"] == trained.model.run_id
    assert manifest["model_sha256"] == trained.model.model_sha256
    assert manifest["inputs"] == [{"path": "iris_score.csv", "rows": len(rows)}]
    assert first_score.predictions.rows == len(rows)
    counts = dict(first_score.predictions.class_counts)
    assert counts == predictions["predicted_class"].value_counts().to_dict()
    assert _pointer(store)["run_id"] == run_id  # type: ignore[index]
    assert first_score.promoted

    markdown = first_score.to_markdown()
    assert f"rows scored: **{len(rows)}**" in markdown
    assert trained.model.run_id in markdown
    assert "iris_score.csv" in markdown
    for cls, count in counts.items():
        assert f"| {cls} | {count} |" in markdown


def test_the_result_is_json_in_the_api(
    prefect_api: PrefectServer,
    trained: TrainSummary,
    first_score_state: State[ScoreSummary],
    first_score: ScoreSummary,
) -> None:
    """What a REST caller reads (docs/api.md): predictions URI, row count, files scored."""
    result = _result(prefect_api, first_score_state)
    rows = len(SAMPLE_FILE.read_text().splitlines()) - 1
    assert result["run_id"] == first_score.run_id
    assert result["predictions_uri"] == first_score.predictions.uri
    assert result["predictions_uri"].endswith(f"predictions/{first_score.run_id}/predictions.csv")
    assert result["rows"] == rows
    assert result["files_scored"] == [{"path": "iris_score.csv", "rows": rows}]
    assert sum(result["class_counts"].values()) == rows
    assert result["model_run_id"] == trained.model.run_id
    assert result["model_sha256"] == trained.model.model_sha256
    assert result["nothing_new"] is False
    assert result["promoted"] is True
    assert result == json.loads(json.dumps(first_score.to_result()))


def test_same_input_reuses_predictions_unless_forced(
    store: LocalDatastore, first_score: ScoreSummary
) -> None:
    again = score(input_path=SAMPLE_PATH)
    assert again.step.reused
    assert again.predictions.run_id == first_score.run_id
    forced = score(input_path=SAMPLE_PATH, force_rerun=True)
    assert not forced.step.reused
    assert forced.predictions.run_id == forced.run_id
    assert (store.root / "predictions" / forced.run_id / "predictions.csv").read_bytes() == (
        store.root / "predictions" / first_score.run_id / "predictions.csv"
    ).read_bytes()
    assert _pointer(store)["run_id"] == forced.run_id  # type: ignore[index]


def test_reused_predictions_that_no_longer_match_their_manifest_are_scored_again(
    store: LocalDatastore, trained: TrainSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = SAMPLE_FILE.read_text().splitlines()[:-2]  # content no other test scores
    _upload(store, tmp_path, "raw/cut.csv", "\n".join(rows) + "\n")
    first = score(input_path="raw/cut.csv")
    predictions = store.root / first.predictions.predictions_path
    # A row lost from the stored predictions: the manifest still counts it.
    predictions.write_text("\n".join(predictions.read_text().splitlines()[:-1]) + "\n")
    again = score(input_path="raw/cut.csv")
    assert not again.step.reused
    assert again.predictions.run_id == again.run_id != first.run_id
    assert again.predictions.rows == len(rows) - 1
    assert f"not reusing the outputs of run {first.run_id}" in caplog.text
    assert f"{first.predictions.predictions_path}' has {len(rows) - 2} rows" in caplog.text


def test_resuming_a_run_whose_predictions_no_longer_match_scores_it_again(
    store: LocalDatastore, trained: TrainSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = SAMPLE_FILE.read_text().splitlines()[:-3]  # content no other test scores
    _upload(store, tmp_path, "raw/resumed.csv", "\n".join(rows) + "\n")
    first = score(input_path="raw/resumed.csv")
    (store.root / first.predictions.predictions_path).write_text("row_id,predicted_class\n")
    again = score(input_path="raw/resumed.csv", run_id=first.run_id)
    assert not again.step.reused
    assert again.predictions.rows == first.predictions.rows == len(rows) - 1
    assert f"Step {first.run_id}-score finished earlier, but" in caplog.text


def test_explicit_model_run_id_and_folder_of_csvs(
    store: LocalDatastore, trained: TrainSummary, tmp_path: Path
) -> None:
    lines = SAMPLE_FILE.read_text().splitlines()
    _upload(store, tmp_path, "raw/week/a.csv", "\n".join(lines[:11]) + "\n")
    _upload(store, tmp_path, "raw/week/b/c.csv", "\n".join([lines[0], *lines[11:]]) + "\n")
    _upload(store, tmp_path, "raw/week/notes.txt", "not a csv\n")
    summary = score(input_path="raw/week", model=trained.model.run_id)
    assert summary.model.run_id == trained.model.run_id
    assert summary.predictions.inputs == (("a.csv", 10), ("b/c.csv", len(lines) - 11))
    assert summary.predictions.rows == len(lines) - 1


def test_a_folder_scores_only_its_new_files_once(
    store: LocalDatastore, trained: TrainSummary, tmp_path: Path, prefect_api: PrefectServer
) -> None:
    lines = SAMPLE_FILE.read_text().splitlines()
    _upload(store, tmp_path, "incoming/w1.csv", "\n".join(lines[:6]) + "\n")
    first = score(input_path="incoming")
    assert isinstance(first, ScoreSummary)
    assert first.predictions.inputs == (("w1.csv", 5),)
    pointer = _pointer(store)

    nothing_state = score(input_path="incoming", return_state=True)
    nothing = nothing_state.result()
    assert isinstance(nothing, NothingNew)
    assert nothing.already_scored == 1
    assert _pointer(store) == pointer
    result = _result(prefect_api, nothing_state)
    assert (result["nothing_new"], result["rows"], result["files_scored"]) == (True, 0, [])

    _upload(store, tmp_path, "incoming/w2.csv", "\n".join([lines[0], *lines[6:9]]) + "\n")
    # Replaced with new content: new again.
    _upload(store, tmp_path, "incoming/w1.csv", "\n".join(lines[:3]) + "\n")
    second = score(input_path="incoming")
    assert isinstance(second, ScoreSummary)
    assert second.predictions.inputs == (("w1.csv", 2), ("w2.csv", 3))
    assert _pointer(store)["run_id"] == second.run_id  # type: ignore[index]

    forced = score(input_path="incoming", force_rerun=True)
    assert isinstance(forced, ScoreSummary)
    assert forced.predictions.rows == 5
    # On purpose too, the step reads the listed files only: one that lands while
    # it runs is left for the next run instead of being scored but not recorded.
    listed = store.root / "score_batches" / forced.run_id / "files.txt"
    assert listed.read_text().split() == ["w1.csv", "w2.csv"]


def test_unknown_model_run_id(store: LocalDatastore, trained: TrainSummary) -> None:
    with pytest.raises(NoModelError, match="no trained model with run id 'train-nope-1'"):
        score(input_path=SAMPLE_PATH, model="train-nope-1")


@pytest.mark.parametrize("bad", ["Latest", "../trained_models/x", "train_1"])
def test_bad_model_selector_is_rejected_by_parameter_validation(bad: str) -> None:
    with pytest.raises(Exception, match="model") as info:
        score(input_path=SAMPLE_PATH, model=bad)
    assert "run id" in str(info.value)


def test_no_model_trained_yet(tmp_path: Path) -> None:
    root = tmp_path / "empty-datastore"
    with backends_of(local_datastore_root=root, cache_dir=TEST_CACHE_DIR) as settings:
        seed_sample(settings)
        with pytest.raises(NoModelError, match=r"no model trained yet.*python flows/train\.py"):
            score(input_path=SAMPLE_PATH)
    assert LocalDatastore(root).list_files("") == [SAMPLE_PATH]


def test_tampered_model_is_refused_and_nothing_written(
    store: LocalDatastore, trained: TrainSummary, first_score: ScoreSummary, tmp_path: Path
) -> None:
    source, copy = f"trained_models/{trained.model.run_id}", "trained_models/train-tampered-1"
    for path in store.list_files(source):
        store.download_file(path, tmp_path / "model" / Path(path).name)
    with (tmp_path / "model" / "model.skops").open("ab") as handle:
        handle.write(b"\0")
    for file in (tmp_path / "model").iterdir():
        store.upload_file(file, f"{copy}/{file.name}", overwrite=True)
    before, pointer = store.list_files("predictions"), _pointer(store)

    with pytest.raises(ModelVerificationError, match=r"sha256.*refusing to load it"):
        score(input_path=SAMPLE_PATH, model="train-tampered-1")
    assert store.list_files("predictions") == before
    assert _pointer(store) == pointer


def test_missing_input_and_folder_without_csvs(
    store: LocalDatastore, first_score: ScoreSummary, tmp_path: Path
) -> None:
    before = store.list_files("predictions")
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/nope\.csv'.*local datastore"):
        score(input_path="raw/nope.csv")
    _upload(store, tmp_path, "raw/no-csvs/readme.txt", "hello\n")
    with pytest.raises(ScoreInputError, match=r"'raw/no-csvs'.*holds no CSV files.*readme\.txt"):
        score(input_path="raw/no-csvs")
    assert store.list_files("predictions") == before


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "id,sepal_length,sepal_width,petal_length\nx,1,2,3\n",
            r"missing feature columns \['petal_width'\]",
        ),
        (
            f"{HEADER}\na,1,2,3,4\nb,1,2,oops,4\nc,1,2,3,4\nd,1,2,3,4\ne,1,2,?,4\n",
            r"column 'petal_length' has non-numeric values at data rows \[2, 5\]",
        ),
    ],
    ids=["missing-feature", "non-numeric"],
)
def test_bad_csv_fails_with_reason_and_latest_stays(
    store: LocalDatastore, first_score: ScoreSummary, tmp_path: Path, csv: str, message: str
) -> None:
    pointer = _pointer(store)
    _upload(store, tmp_path, "raw/bad.csv", csv)
    with pytest.raises(StepFailedError, match=message):
        score(input_path="raw/bad.csv")
    assert _pointer(store) == pointer


def test_header_only_csv_gives_zero_predictions(
    store: LocalDatastore, first_score: ScoreSummary, tmp_path: Path
) -> None:
    _upload(store, tmp_path, "raw/empty.csv", HEADER + "\n")
    summary = score(input_path="raw/empty.csv")
    assert summary.predictions.rows == 0
    assert summary.predictions.inputs == (("empty.csv", 0),)
    assert "rows scored: **0**: the input has no data rows" in summary.to_markdown()
    text = (store.root / summary.predictions.predictions_path).read_text()
    assert text.splitlines() == [
        '"row_id","predicted_class","proba_setosa","proba_versicolor","proba_virginica"'
    ]


def test_cli_prints_run_id_predictions_and_rows(
    store: LocalDatastore, trained: TrainSummary, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--input-path", SAMPLE_PATH, "--model", trained.model.run_id]) == 0
    out = capsys.readouterr().out
    assert "run id:      score-" in out
    assert "predictions.csv" in out
    assert "rows:        30 (" in out


def test_cli_exits_non_zero_with_the_error(
    store: LocalDatastore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--input-path", "raw/missing.csv"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "raw/missing.csv" in err


# --- a folder scored in shards ---------------------------------------------------------


class _Timed(LocalCompute):
    """The local compute, noting when each step ran."""

    spans: dict[str, tuple[float, float]]

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        started = time.monotonic()
        try:
            return super().run_step(spec, environment)
        finally:
            with _LOCK:
                self.spans[spec.step] = (started, time.monotonic())


_LOCK = threading.Lock()


@pytest.fixture
def sharded(store: LocalDatastore) -> Iterator[_Timed]:
    """Scoring in up to 2 shards of at least 2 files, on a compute with room for 2 steps."""
    settings = Settings(local_datastore_root=store.root, cache_dir=TEST_CACHE_DIR,
                        score_shards=2, score_min_files_per_shard=2)  # fmt: skip
    compute = _Timed(store, TEST_CACHE_DIR, max_parallel=2)
    compute.spans = {}

    def factory(_settings: Settings, logger: Any, dry_run: bool) -> Backends:
        compute.log = logger  # the flow run's logger: the shards log from their own threads
        return Backends(settings, store, compute)

    with use_backends(factory):
        yield compute


def _week(store: LocalDatastore, tmp_path: Path, folder: str, files: int = 4) -> int:
    """The sample split into `files` CSVs (one in a subfolder); returns the row count."""
    rows = pd.read_csv(SAMPLE_FILE, dtype={"id": str})
    for i in range(files):
        name = f"{folder}/day-{i}.csv" if i else f"{folder}/a/day-0.csv"
        _upload(store, tmp_path, name, rows.iloc[i::files].to_csv(index=False))
    return len(rows)


@pytest.mark.slow
def test_a_folder_is_scored_by_concurrent_shards_then_merged(
    store: LocalDatastore, trained: TrainSummary, sharded: _Timed, tmp_path: Path
) -> None:
    rows = _week(store, tmp_path, "raw/shards")
    summary = score(input_path="raw/shards")
    run_id = summary.run_id
    assert [s.job_name for s in summary.shards] == [f"{run_id}-score-0", f"{run_id}-score-1"]
    assert summary.step.job_name == f"{run_id}-score-merge"
    assert summary.predictions.rows == rows
    assert [path for path, _ in summary.predictions.inputs] == [
        "a/day-0.csv", "day-1.csv", "day-2.csv", "day-3.csv"
    ]  # fmt: skip
    assert sum(n for _, n in summary.predictions.inputs) == rows
    for k in range(2):
        shard = json.loads(
            (store.root / f"prediction_parts/{run_id}/shard-{k}/manifest.json").read_text()
        )
        assert len(shard["inputs"]) == 2
    (s0, e0), (s1, e1) = sharded.spans["score_0"], sharded.spans["score_1"]
    assert max(s0, s1) < min(e0, e1), "the shards did not run at the same time"
    assert summary.promoted
    assert f"shard: `{run_id}-score-1` Completed" in summary.to_markdown()

    # One step over the same files: the same predictions, byte for byte.
    with backends_of(local_datastore_root=store.root, cache_dir=TEST_CACHE_DIR):
        plain = score(input_path="raw/shards", force_rerun=True)
    assert plain.shards == ()
    assert plain.step.job_name == f"{plain.run_id}-score"
    merged = store.root / "predictions" / run_id / "predictions.csv"
    assert merged.read_bytes() == (store.root / plain.predictions.predictions_path).read_bytes()

    # Again: nothing new to score in that folder; latest stays where it is.
    pointer = _pointer(store)
    again = score(input_path="raw/shards")
    assert isinstance(again, NothingNew)
    assert _pointer(store) == pointer


@pytest.mark.slow
def test_a_failing_shard_fails_the_run_and_latest_stays(
    store: LocalDatastore, trained: TrainSummary, sharded: _Timed, tmp_path: Path
) -> None:
    _week(store, tmp_path, "raw/bad-shards")
    _upload(store, tmp_path, "raw/bad-shards/day-3.csv", "id,sepal_length\nx,1.0\n")
    pointer = _pointer(store)
    before = store.list_files("predictions")
    with pytest.raises(StepFailedError, match=r"score-1 exited.*\n(.*\n)*.*missing feature"):
        score(input_path="raw/bad-shards")
    assert _pointer(store) == pointer
    assert store.list_files("predictions") == before
