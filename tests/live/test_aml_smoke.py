"""The train and score flows against a real Azure ML workspace (`make aml-smoke`).

Nothing else in the suite reaches Azure. This does, when a workspace is
configured: put the settings of docs/aml.md (`SOMEMODEL_COMPUTE=aml`, the
workspace, the blob container and a credential) in `.env`, or in the file
named by `AML_SMOKE_ENV_FILE`, and run `make aml-smoke`. Without them it is
skipped, so the suite runs it everywhere and it costs nothing here.

It trains on the bundled sample (seeded into the container), scores the
sample with the model it promoted, and checks that every job completed, the
model was verified and promoted, and the predictions cover every row: the run
a user gets after switching `SOMEMODEL_COMPUTE=aml` on.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from flows import score as score_flow
from flows import train as train_flow
from flows.settings import REPO_ROOT, Settings
from flows.summary import TrainSummary

pytestmark = [pytest.mark.aml_live, pytest.mark.slow]

NEEDED = (
    "SOMEMODEL_COMPUTE",
    "SOMEMODEL_AML_SUBSCRIPTION_ID",
    "SOMEMODEL_AML_RESOURCE_GROUP",
    "SOMEMODEL_AML_WORKSPACE",
    "SOMEMODEL_BLOB_CONTAINER",
)


def _workspace_settings() -> dict[str, str]:
    """SOMEMODEL_* from the smoke env file; the suite hides the developer's own variables."""
    path = Path(os.environ.get("AML_SMOKE_ENV_FILE") or REPO_ROOT / ".env")
    values = {k: v for k, v in dotenv_values(path).items() if k.startswith("SOMEMODEL_") and v}
    missing = [name for name in NEEDED if name not in values]
    if values.get("SOMEMODEL_COMPUTE") != "aml" or missing:
        pytest.skip(
            f"no Azure ML workspace configured in {path} (needs SOMEMODEL_COMPUTE=aml and "
            f"{', '.join(NEEDED[1:])}, plus a blob credential; see docs/aml.md)"
        )
    return values


def test_train_then_score_on_a_real_workspace(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    values = _workspace_settings()  # skips before a Prefect server is started for nothing
    request.getfixturevalue("prefect_api")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    train_flow.seed_sample(settings)
    score_flow.seed_sample(settings)

    trained = train_flow.train(input_path=train_flow.SAMPLE_PATH)

    assert isinstance(trained, TrainSummary)
    assert [s.status for s in trained.steps] == ["Completed", "Completed"]
    assert all(s.url.startswith("https://ml.azure.com/") for s in trained.steps)
    assert trained.promoted

    scored = score_flow.score(input_path=score_flow.SAMPLE_PATH, model=trained.run_id)

    assert scored.step.status == "Completed"
    assert scored.model.run_id == trained.run_id
    assert scored.predictions.rows > 0
    assert scored.promoted
