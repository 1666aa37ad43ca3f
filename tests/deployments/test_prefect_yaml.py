"""prefect.yaml: it parses, its schedules are weekly, its parameters fit the flows."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect.server.schemas.schedules import CronSchedule
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from deployments.declared import (
    PREFECT_YAML,
    DeclarationError,
    DeploymentSpec,
    load_deployments,
    work_pools,
)
from deployments.serve import load_flow
from tests.conftest import REPO_ROOT

SPECS = load_deployments()
BY_FLOW = {load_flow(spec).name: spec for spec in SPECS}
# The deployments that read an input (the cleanup deployment has none).
INPUT_SPECS = [spec for spec in SPECS if "input_path" in load_flow(spec).parameters.properties]


def _ids(spec: DeploymentSpec) -> str:
    return spec.entrypoint


def test_declares_weekly_train_score_and_cleanup_deployments() -> None:
    assert sorted(f"{flow}/{spec.name}" for flow, spec in BY_FLOW.items()) == [
        "cleanup-somemodel/weekly",
        "score-somemodel/weekly",
        "train-somemodel/weekly",
    ]
    assert BY_FLOW["cleanup-somemodel"].entrypoint == "flows/cleanup.py:cleanup"
    assert BY_FLOW["train-somemodel"].entrypoint == "flows/train.py:train"
    assert BY_FLOW["score-somemodel"].entrypoint == "flows/score.py:score"


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_entrypoint_file_exists_relative_to_the_repo_root(spec: DeploymentSpec) -> None:
    assert (REPO_ROOT / spec.entrypoint.split(":")[0]).is_file()


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_each_deployment_is_described_tagged_and_on_the_process_pool(spec: DeploymentSpec) -> None:
    assert len(spec.description) > 40
    assert "somemodel" in spec.tags
    assert "weekly" in spec.tags
    assert spec.work_pool == "somemodel-process"
    # Backend log lines reach the UI only if the flow-run process knows the logger.
    assert spec.job_env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "flows"


def test_one_work_pool() -> None:
    assert work_pools(SPECS) == ("somemodel-process",)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_schedule_is_weekly_on_monday_morning_local_time_across_dst(spec: DeploymentSpec) -> None:
    (schedule,) = spec.schedules
    assert schedule.active
    tz = ZoneInfo(schedule.timezone)
    # Europe/Amsterdam switches to summer time on 2027-03-28: the runs around it
    # must stay at the same wall-clock time, 7 calendar days apart.
    start = datetime(2027, 3, 1, tzinfo=tz)
    dates = asyncio.run(
        CronSchedule(cron=schedule.cron, timezone=schedule.timezone).get_dates(n=8, start=start)
    )
    local = [d.astimezone(tz) for d in dates]
    assert {d.weekday() for d in local} == {0}  # Monday
    assert len({d.time() for d in local}) == 1
    assert all((b.date() - a.date()) == timedelta(days=7) for a, b in itertools.pairwise(local))
    assert any(d.utcoffset() != local[0].utcoffset() for d in local)  # the span crosses DST


def test_scoring_runs_after_training() -> None:
    train_cron = BY_FLOW["train-somemodel"].schedules[0].cron
    score_cron = BY_FLOW["score-somemodel"].schedules[0].cron
    train_hour, score_hour = int(train_cron.split()[1]), int(score_cron.split()[1])
    assert train_cron.split()[2:] == score_cron.split()[2:]
    assert score_hour > train_hour


def test_a_completed_training_run_triggers_scoring() -> None:
    (trigger,) = BY_FLOW["score-somemodel"].triggers
    assert set(trigger["expect"]) == {"prefect.flow-run.Completed", "prefect.flow-run.NotPromoted"}
    assert {"prefect.resource.role": "flow", "prefect.resource.name": "train-somemodel"} in (
        trigger["match_related"]
    )
    assert trigger["posture"] == "Reactive"
    assert not BY_FLOW["train-somemodel"].triggers


@pytest.mark.parametrize("spec", INPUT_SPECS, ids=_ids)
def test_parameters_are_flow_parameters_input_path_first(spec: DeploymentSpec) -> None:
    flow = load_flow(spec)
    signature = list(flow.parameters.properties)
    declared = list(spec.parameters)
    assert signature[0] == "input_path"
    assert set(declared) <= set(signature), f"not parameters of {flow.name}: {declared}"
    assert declared == [name for name in signature if name in declared]


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_parameter_defaults_pass_the_flows_own_validation(spec: DeploymentSpec) -> None:
    flow = load_flow(spec)
    flow.validate_parameters(dict(spec.parameters))
    validate(
        dict(spec.parameters),
        parameter_schema(flow).model_dump_for_openapi(),
        raise_on_error=True,
        ignore_required=True,
    )


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_flow_annotations_resolve_so_the_deployed_schema_is_typed(spec: DeploymentSpec) -> None:
    """Prefect evaluates the annotations to build the schema the server enforces.

    If one cannot be evaluated (a name imported only under TYPE_CHECKING, even
    in the return annotation), Prefect silently falls back to an untyped
    schema: the API and the UI then accept any value, and a bad input_path is
    only caught once a worker has started the run.
    """
    flow = load_flow(spec)
    try:
        inspect.signature(flow.fn, eval_str=True)
    except NameError as exc:
        pytest.fail(f"{spec.entrypoint}: {exc}: import it at runtime, not under TYPE_CHECKING")
    properties = parameter_schema(flow).model_dump_for_openapi()["properties"]
    untyped = [name for name, field in properties.items() if not {"type", "anyOf"} & set(field)]
    assert not untyped, f"untyped parameters in the deployed schema: {untyped}"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "https://x.y/z.csv", "raw//x.csv"])
@pytest.mark.parametrize("spec", INPUT_SPECS, ids=_ids)
def test_server_side_schema_rejects_unsafe_input_paths(spec: DeploymentSpec, bad: str) -> None:
    """What `prefect deployment run --param input_path=...` meets before a run exists."""
    schema = parameter_schema(load_flow(spec)).model_dump_for_openapi()
    with pytest.raises(ValidationError, match="input_path"):
        validate({"input_path": bad}, schema, raise_on_error=True, ignore_required=True)


def test_pull_step_holds_no_path() -> None:
    """Without a pull section `prefect deploy` would record the folder it ran from."""
    document = yaml.safe_load(PREFECT_YAML.read_text())
    assert document["pull"] == [{"deployments.pull.use_project_directory": {}}]
    assert str(REPO_ROOT) not in json.dumps(document)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prefect.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deployments: []\n", "declares no deployments"),
        (
            "deployments:\n  - name: w\n    entrypoint: flows/train.py:train\n"
            "    work_pool: {name: p}\n",
            "`schedules` is missing",
        ),
        (
            "deployments:\n  - name: w\n    entrypoint: flows.train\n"
            "    schedules: [{cron: '0 6 * * 1', timezone: UTC}]\n    work_pool: {name: p}\n",
            "is not `path/to/file.py:flow`",
        ),
        (
            "deployments:\n  - name: w\n    entrypoint: flows/train.py:train\n"
            "    schedules: [{cron: '0 6 * * 1'}]\n    work_pool: {name: p}\n",
            "`timezone` is missing",
        ),
        ("deployments: [\n", "not valid YAML"),
    ],
    ids=["empty", "no-schedule", "bad-entrypoint", "no-timezone", "bad-yaml"],
)
def test_incomplete_declarations_are_refused_with_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(DeclarationError, match=message):
        load_deployments(_write(tmp_path, text))
