"""Make the server refuse unknown parameter names, which `prefect deploy` cannot ask for.

    prefect deploy --all
    python -m deployments.parameters        # after each deploy; safe to run again

The Prefect server checks a new run's parameters against its deployment's
schema (JSON Schema, `enforce_parameter_schema`, on by default) and answers
409 before any run exists. `prefect deploy` builds that schema from the flow's
signature, through a model that keeps only `properties`, `required` and
`definitions`: nothing says "no other names", so a misspelt `inputpath` was
accepted and the run crashed later on the worker. This adds
`additionalProperties: false` to the deployed schemas of the deployments
prefect.yaml declares; the server then answers "Additional properties are not
allowed ('inputpath' was unexpected)". The values' rules come from the flows'
parameter types (flows/paths.py) and need nothing from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import ParameterSchema
from pydantic import ConfigDict

from deployments.declared import (
    PREFECT_YAML,
    DeclarationError,
    DeploymentSpec,
    load_deployments,
    load_flow,
)
from deployments.setup import SetupError, require_api_url


def strict_parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (a deployment's parameter schema) refusing names it does not list."""
    return {**schema, "additionalProperties": False}


class _StrictParameterSchema(ParameterSchema):
    # Prefect's model drops keys it does not declare; this one keeps additionalProperties.
    model_config = ConfigDict(extra="allow")


def refuse_unknown_names(deployment: RunnerDeployment) -> RunnerDeployment:
    """`deployment` (served by `deployments.serve`) registering a strict schema.

    A served deployment is registered by `serve()` itself, so no later step
    could patch it: its schema is made strict before (a private attribute of
    RunnerDeployment, which is where `prefect deploy` puts it too).
    """
    schema = deployment._parameter_openapi_schema.model_dump_for_openapi()
    deployment._parameter_openapi_schema = _StrictParameterSchema(**strict_parameter_schema(schema))
    return deployment


def refuse_unknown_parameters(specs: Sequence[DeploymentSpec]) -> list[str]:
    """Make each deployed deployment of `specs` refuse unknown names; one line per deployment."""
    lines = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            name = f"{load_flow(spec).name}/{spec.name}"
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound as exc:
                raise SetupError(
                    f"deployment {name!r} is not on the server: run `prefect deploy --all` first"
                ) from exc
            schema = deployment.parameter_openapi_schema or {}
            if schema.get("additionalProperties") is False:
                lines.append(f"{name}: already refuses unknown parameter names")
                continue
            client.update_deployment(
                deployment.id,
                DeploymentUpdate(parameter_openapi_schema=strict_parameter_schema(schema)),
            )
            lines.append(f"{name}: now refuses unknown parameter names")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        require_api_url()
        lines = refuse_unknown_parameters(load_deployments(PREFECT_YAML))
    except (SetupError, DeclarationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
