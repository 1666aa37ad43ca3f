"""The deployments' parameter schemas: what the server checks, and the words it answers with.

Prefect's server validates a new run's parameters against the deployment's
schema with its own `validate(..., raise_on_error=True)` and answers 409 with
that error's text; the same function runs here, so these checks need no
server (tests/deployments/test_refused_parameters.py proves it on one).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from deployments.declared import DeploymentSpec, load_deployments
from deployments.parameters import strict_parameter_schema
from deployments.serve import load_flow

SPECS = {load_flow(spec).name: spec for spec in load_deployments()}

# (flow, parameter, bad value, words the refusal must contain)
PATH_WORDS = "a path inside the datastore"
RUN_ID_WORDS = "a run id such as train-2026-11-23-1a2b3c4d"
MODEL_WORDS = "latest, or the run id of a training run"
COLUMN_WORDS = "a column name"
BAD_VALUES = [
    ("train-somemodel", "input_path", "../../etc", PATH_WORDS),
    ("train-somemodel", "input_path", "/etc/passwd", PATH_WORDS),
    ("train-somemodel", "input_path", "https://x.y/z.csv", PATH_WORDS),
    ("train-somemodel", "input_path", "raw//x.csv", PATH_WORDS),
    ("train-somemodel", "input_path", "", PATH_WORDS),
    ("train-somemodel", "target_col", "", COLUMN_WORDS),
    ("train-somemodel", "target_col", "a\nb", COLUMN_WORDS),
    ("train-somemodel", "run_id", "Bad Id", RUN_ID_WORDS),
    ("train-somemodel", "force_promote", "yes", "is not of type 'boolean'"),
    ("score-somemodel", "input_path", "../../etc", PATH_WORDS),
    ("score-somemodel", "model", "../../etc", MODEL_WORDS),
    ("score-somemodel", "model", "Latest", MODEL_WORDS),
    ("score-somemodel", "model", "", MODEL_WORDS),
    ("score-somemodel", "id_column", "", COLUMN_WORDS),
    ("score-somemodel", "run_id", "../x", RUN_ID_WORDS),
    ("score-somemodel", "force_rerun", "no", "is not of type 'boolean'"),
    ("cleanup-somemodel", "older_than_days", -1, "less than the minimum of 0"),
    ("cleanup-somemodel", "older_than_days", "ten", "is not valid under any"),
    ("cleanup-somemodel", "dry_run", "maybe", "is not of type 'boolean'"),
]


def _schema(flow_name: str) -> dict[str, Any]:
    """What `prefect deploy` sends (parameter_schema of the flow), then made strict."""
    schema = parameter_schema(load_flow(SPECS[flow_name])).model_dump_for_openapi()
    return strict_parameter_schema(schema)


def _refusal(flow_name: str, parameters: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        validate(parameters, _schema(flow_name), raise_on_error=True)
    return str(refused.value)


@pytest.mark.parametrize(("flow_name", "name", "bad", "words"), BAD_VALUES)
def test_each_bad_value_is_refused_in_words_not_a_regular_expression(
    flow_name: str, name: str, bad: Any, words: str
) -> None:
    message = _refusal(flow_name, {name: bad})
    assert message.startswith(f"Validation failed for field '{name}'. Failure reason: "), message
    assert words in message, message
    # No regular expression: the UI's toast renders markdown and eats `*`, `^`, `[`.
    rule = message.replace(repr(bad), "")
    assert not re.search(r"[\^\$\*\[\]\{\}\\]", rule), message


def test_unknown_parameter_names_are_refused_in_words() -> None:
    message = _refusal("train-somemodel", {"inputpath": "raw/x.csv"})
    assert message == (
        "Validation failed. Failure reason: "
        "Additional properties are not allowed ('inputpath' was unexpected)"
    )


@pytest.mark.parametrize("flow_name", sorted(SPECS))
def test_defaults_and_good_values_pass(flow_name: str) -> None:
    schema = _schema(flow_name)
    defaults = {name: field["default"] for name, field in schema["properties"].items()}
    assert validate(defaults, schema, raise_on_error=True) == []


@pytest.mark.parametrize(
    ("flow_name", "parameters"),
    [
        ("train-somemodel", {"input_path": "raw/2026-11-23.csv", "run_id": "train-resume-1"}),
        ("train-somemodel", {"input_path": "raw/a b/x=1+y_z.csv/", "target_col": "Species (y)"}),
        ("score-somemodel", {"model": "train-2026-11-23-1a2b3c4d", "run_id": None}),
        ("score-somemodel", {"model": "latest", "id_column": "row id"}),
        ("cleanup-somemodel", {"older_than_days": 0, "dry_run": True}),
        ("cleanup-somemodel", {"older_than_days": None}),
    ],
)
def test_good_values_pass(flow_name: str, parameters: dict[str, Any]) -> None:
    assert validate(parameters, _schema(flow_name), raise_on_error=True) == []


@pytest.mark.parametrize("flow_name", sorted(SPECS))
def test_every_parameter_has_a_description_for_the_run_form(flow_name: str) -> None:
    properties = _schema(flow_name)["properties"]
    undescribed = [
        name for name, field in properties.items() if len(field.get("description", "")) < 20
    ]
    assert not undescribed, f"{flow_name}: parameters without a description: {undescribed}"


def test_the_model_parameter_says_latest_or_a_training_run_id() -> None:
    description = _schema("score-somemodel")["properties"]["model"]["description"]
    assert "latest" in description
    assert "training run id" in description


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=lambda spec: spec.entrypoint)
def test_one_default_per_parameter_the_flow_signature(spec: DeploymentSpec) -> None:
    """The UI's Parameters tab shows prefect.yaml's values next to the signature's defaults."""
    assert dict(spec.parameters) == {}, "defaults belong in the flow's signature, not prefect.yaml"


@pytest.mark.parametrize(
    ("flow_name", "folder"), [("train-somemodel", "raw/train"), ("score-somemodel", "raw/score")]
)
def test_the_deployments_read_the_weekly_folders_by_default(flow_name: str, folder: str) -> None:
    assert _schema(flow_name)["properties"]["input_path"]["default"] == folder
