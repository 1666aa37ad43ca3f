"""`python -m deployments.serve` serves what prefect.yaml declares, schedules included."""

from __future__ import annotations

from prefect.client.schemas.schedules import CronSchedule

from deployments.declared import load_deployments
from deployments.serve import runner_deployments


def test_serves_both_flows_with_the_declared_schedules_and_parameters() -> None:
    specs = load_deployments()
    deployments = runner_deployments(specs)
    assert [(d.flow_name, d.name) for d in deployments] == [
        ("train-somemodel", "weekly"),
        ("score-somemodel", "weekly"),
        ("cleanup-somemodel", "weekly"),
    ]
    for spec, deployment in zip(specs, deployments):
        assert deployment.parameters == dict(spec.parameters)
        assert sorted(deployment.tags) == sorted(spec.tags)
        assert deployment.description == spec.description
        assert deployment.enforce_parameter_schema
        # Served deployments refuse unknown parameter names too (deployments/parameters.py).
        schema = deployment._parameter_openapi_schema.model_dump(exclude_unset=True)
        assert schema["additionalProperties"] is False
        (schedule,) = deployment.schedules or []
        assert isinstance(schedule.schedule, CronSchedule)
        assert schedule.schedule.cron == spec.schedules[0].cron
        assert schedule.schedule.timezone == spec.schedules[0].timezone
        assert schedule.active
