"""The deployments as `prefect.yaml` declares them, read into frozen values.

`prefect deploy --all` reads prefect.yaml itself; `deployments.setup` (the work
pools to create) and `deployments.serve` (the schedules to serve) read it
through here, so a schedule or a parameter default is written down once.
Only the keys this project uses are read; anything else is Prefect's business.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO_ROOT / "prefect.yaml"


class DeclarationError(ValueError):
    """prefect.yaml lacks something a deployment needs; the message names the key."""


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str
    timezone: str
    active: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    parameters: Mapping[str, Any]
    schedules: tuple[ScheduleSpec, ...]
    work_pool: str
    work_queue: str | None
    job_env: Mapping[str, str] = field(default_factory=dict)
    # Deployment triggers (Prefect automations that start this deployment), as written.
    triggers: tuple[Mapping[str, Any], ...] = ()

    @property
    def module(self) -> str:
        """`flows/train.py:train` -> `flows.train`."""
        path = self.entrypoint.split(":", 1)[0]
        return path.removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        return self.entrypoint.split(":", 1)[1]


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    value = mapping.get(key)
    if value in (None, "", [], {}):
        raise DeclarationError(f"{where}: `{key}` is missing or empty in prefect.yaml")
    return value


def _schedule(raw: Mapping[str, Any], where: str) -> ScheduleSpec:
    if not isinstance(raw, Mapping) or "cron" not in raw:
        raise DeclarationError(f"{where}: each schedule needs a `cron` (and a `timezone`)")
    return ScheduleSpec(
        cron=str(raw["cron"]),
        timezone=str(_require(raw, "timezone", where)),
        active=bool(raw.get("active", True)),
    )


def _deployment(raw: Mapping[str, Any], index: int) -> DeploymentSpec:
    where = f"deployments[{index}]"
    entrypoint = str(_require(raw, "entrypoint", where))
    if ":" not in entrypoint or not entrypoint.split(":", 1)[0].endswith(".py"):
        raise DeclarationError(f"{where}: entrypoint {entrypoint!r} is not `path/to/file.py:flow`")
    where = f"{where} ({entrypoint})"
    pool = _require(raw, "work_pool", where)
    job_variables = pool.get("job_variables") or {}
    return DeploymentSpec(
        name=str(_require(raw, "name", where)),
        entrypoint=entrypoint,
        description=str(raw.get("description") or "").strip(),
        tags=tuple(str(tag) for tag in raw.get("tags") or ()),
        parameters=dict(raw.get("parameters") or {}),
        schedules=tuple(_schedule(s, where) for s in _require(raw, "schedules", where)),
        work_pool=str(_require(pool, "name", f"{where} work_pool")),
        work_queue=pool.get("work_queue_name"),
        job_env={str(k): str(v) for k, v in (job_variables.get("env") or {}).items()},
        triggers=tuple(dict(t) for t in raw.get("triggers") or ()),
    )


def load_deployments(path: Path = PREFECT_YAML) -> tuple[DeploymentSpec, ...]:
    """Every deployment declared in `path`, in file order."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeclarationError(f"{path} does not exist: run from a checkout of the repo") from exc
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path} is not valid YAML: {exc}") from exc
    raw = (document or {}).get("deployments") or []
    if not raw:
        raise DeclarationError(f"{path} declares no deployments")
    return tuple(_deployment(entry, index) for index, entry in enumerate(raw))


def work_pools(specs: tuple[DeploymentSpec, ...]) -> tuple[str, ...]:
    """The work pools the deployments use, each once, in declaration order."""
    return tuple(dict.fromkeys(spec.work_pool for spec in specs))


def load_flow(spec: DeploymentSpec) -> Flow[..., object]:
    """Import the flow that `spec.entrypoint` names, as a module of this project."""
    module = importlib.import_module(spec.module)
    flow = getattr(module, spec.function, None)
    if not isinstance(flow, Flow):
        raise DeclarationError(
            f"entrypoint {spec.entrypoint!r} in prefect.yaml does not name a Prefect flow"
        )
    return flow
