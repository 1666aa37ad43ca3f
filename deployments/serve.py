"""Serve both flows with their weekly schedules in this one process: no work pool, no worker.

    python -m deployments.serve

For a user who runs no worker: this process registers the deployments that
prefect.yaml declares (same names, schedules, parameters, tags), polls the
server and runs each due flow run in a subprocess until stopped (Ctrl-C).
The schedules are read from prefect.yaml, not written here, so the two ways of
running cannot drift apart. A served deployment replaces the worker deployment
of the same name on the server (and the other way round): use one or the other.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes
from prefect.schedules import Cron
from pydantic import TypeAdapter

from deployments.declared import (
    PREFECT_YAML,
    DeclarationError,
    DeploymentSpec,
    load_deployments,
    load_flow,
)
from deployments.parameters import refuse_unknown_names

_TRIGGER: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)


def to_runner_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    deployment = load_flow(spec).to_deployment(
        name=spec.name,
        schedules=[Cron(s.cron, timezone=s.timezone, active=s.active) for s in spec.schedules],
        parameters=dict(spec.parameters),
        tags=list(spec.tags),
        description=spec.description,
        triggers=[_TRIGGER.validate_python(dict(t)) for t in spec.triggers],
    )
    # `to_deployment` returns a coroutine only when called from async code; this is sync.
    return refuse_unknown_names(cast(RunnerDeployment, deployment))


def runner_deployments(specs: Sequence[DeploymentSpec]) -> list[RunnerDeployment]:
    return [to_runner_deployment(spec) for spec in specs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--limit", type=int, default=None, help="run at most this many flow runs at once"
    )
    args = parser.parse_args(argv)
    try:
        specs = load_deployments(PREFECT_YAML)
        deployments = runner_deployments(specs)
    except DeclarationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A worker gives each flow-run process the deployment's job-variable env;
    # served runs are subprocesses of this process, so they inherit it from here.
    for spec in specs:
        for name, value in spec.job_env.items():
            os.environ.setdefault(name, value)
    serve(*deployments, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
