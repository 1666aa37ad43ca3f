"""Set up the Prefect side once: the work pool, the blob credentials block, a settings summary.

    python -m deployments.setup

Run it against your server (PREFECT_API_URL set, e.g. `prefect config set
PREFECT_API_URL=http://127.0.0.1:4200/api`), with the same SOMEMODEL_*
settings (environment or `.env`) the worker will have. Running it again is
safe: an existing work pool is kept (its concurrency limit set), the blocks are overwritten with the
current settings.

- the work pool(s) named in prefect.yaml, of type `process`, with at most
  SOMEMODEL_WORK_POOL_CONCURRENCY_LIMIT (default 2) flow runs at once (set
  again on each run, so changing the setting and running set-up applies it);
- with SOMEMODEL_DATASTORE=blob: the container (created if missing) and, when
  a connection string or account URL is set, an AzureBlobStorageCredentials
  block (named by SOMEMODEL_BLOB_CREDENTIALS_BLOCK, default `somemodel-blob`),
  so a worker needs only `SOMEMODEL_BLOB_CREDENTIALS_BLOCK=<name>`;
- the deployments' default input folders (`raw/train`, `raw/score`), seeded
  with the bundled sample when they hold no file (deployments/seed.py), so the
  first scheduled runs succeed;
- the notification block (a generic webhook, with
  SOMEMODEL_NOTIFICATION_WEBHOOK_URL) and the automation that announces
  failed, crashed and not-promoted runs through it (deployments/automations.py);
- a Prefect variable `somemodel_settings`: the settings this was run with,
  secrets left out, so the UI (Variables) shows what the deployments were set
  up for. (Prefect 3 has no JSON block any more; a variable holds JSON.) The
  flows do not read it: they build their settings from their environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from prefect.variables import Variable
from prefect.workers.process import ProcessWorker
from pydantic import SecretStr, ValidationError

from deployments.automations import set_up_notifications
from deployments.blob import BlobSetupError, create_container, save_block
from deployments.declared import PREFECT_YAML, DeclarationError, load_deployments, work_pools
from deployments.seed import seed_default_inputs
from flows.datastore.base import DatastoreError
from flows.settings import Settings, SettingsError

WORK_POOL_TYPE = "process"
SETTINGS_VARIABLE = "somemodel_settings"
DEFAULT_BLOB_BLOCK = "somemodel-blob"


class SetupError(RuntimeError):
    """The Prefect side cannot be set up as asked; the message says what to fix."""


@dataclass(frozen=True)
class SetupResult:
    lines: tuple[str, ...]
    work_pools: tuple[str, ...]


def require_api_url() -> str:
    url = PREFECT_API_URL.value()
    if not url:
        raise SetupError(
            "PREFECT_API_URL is not set, so this would set up a throwaway in-process server: "
            "start one (`prefect server start`) and point at it with "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return str(url)


def _limit_text(limit: int | None) -> str:
    runs = f"at most {limit} flow run{'s' if limit != 1 else ''} at once" if limit else "no limit"
    return f"{runs} (SOMEMODEL_WORK_POOL_CONCURRENCY_LIMIT)"


async def ensure_work_pool(
    name: str, pool_type: str = WORK_POOL_TYPE, concurrency_limit: int | None = None
) -> str:
    """Create the work pool unless it exists (get-or-create), with `concurrency_limit` (None: no
    limit); an existing pool keeps everything but gets that limit.

    The limit is the pool's, so scheduled, triggered, CLI, UI and REST runs all
    wait in the pool's queue (state Late) until a slot is free, whichever worker
    would run them.
    """
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=pool_type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="Runs the somemodel flows as subprocesses of a process worker.",
                    concurrency_limit=concurrency_limit,
                )
            )
            return (
                f"Created work pool {name!r} (type {pool_type}): {_limit_text(concurrency_limit)}"
            )
        if pool.type != pool_type:
            raise SetupError(
                f"work pool {name!r} exists with type {pool.type!r}, but prefect.yaml's "
                f"deployments need a {pool_type!r} pool: delete it (`prefect work-pool delete "
                f"{name}`) and run this again"
            )
        if pool.concurrency_limit == concurrency_limit:
            return (
                f"Work pool {name!r} (type {pool_type}) already exists: "
                f"{_limit_text(concurrency_limit)}"
            )
        await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))
    return (
        f"Work pool {name!r} (type {pool_type}) already exists; its limit is now "
        f"{_limit_text(concurrency_limit)}, was {pool.concurrency_limit or 'none'}"
    )


def settings_summary(settings: Settings) -> dict[str, object]:
    """The settings as JSON, each secret replaced by whether it is set."""
    summary: dict[str, object] = {}
    for name, value in settings.model_dump(mode="python").items():
        if isinstance(value, SecretStr):
            summary[name] = "(set)"
        elif value is None:
            summary[name] = None
        elif isinstance(value, str | int | float | bool):
            summary[name] = value
        elif isinstance(value, tuple | list):
            summary[name] = [str(item) for item in value]
        else:
            summary[name] = str(value)
    return summary


def save_settings_summary(settings: Settings, name: str = SETTINGS_VARIABLE) -> str:
    Variable.set(name, settings_summary(settings), tags=["somemodel"], overwrite=True)
    return f"Saved the variable {name!r}: the settings, secrets left out"


def set_up_blob(settings: Settings) -> list[str]:
    """The container and the credentials block, from the blob settings."""
    lines = []
    if settings.blob_connection_string or settings.blob_account_url:
        name = settings.blob_credentials_block or DEFAULT_BLOB_BLOCK
        lines.append(save_block(settings, name))
    else:
        lines.append(
            f"Using the saved credentials block {settings.blob_credentials_block!r} "
            "(SOMEMODEL_BLOB_CREDENTIALS_BLOCK); not overwriting it"
        )
    lines.append(create_container(settings))
    return lines


def set_up(settings: Settings, prefect_yaml: Path = PREFECT_YAML) -> SetupResult:
    require_api_url()
    specs = load_deployments(prefect_yaml)
    pools = work_pools(specs)
    limit = settings.work_pool_concurrency_limit or None
    lines = [asyncio.run(ensure_work_pool(pool, concurrency_limit=limit)) for pool in pools]
    if settings.datastore == "blob":
        lines += set_up_blob(settings)
    lines += seed_default_inputs(settings, specs)
    lines += set_up_notifications(settings)
    lines.append(save_settings_summary(settings))
    return SetupResult(tuple(lines), pools)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        result = set_up(Settings())
    except (
        SetupError,
        SettingsError,
        ValidationError,
        DeclarationError,
        DatastoreError,
        BlobSetupError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != httpx.codes.UNAUTHORIZED:
            raise
        print(
            f"error: the Prefect API at {PREFECT_API_URL.value()} refused the credentials "
            "(401 Unauthorized): set PREFECT_API_AUTH_STRING to the server's "
            "PREFECT_SERVER_API_AUTH_STRING (user:password; docs/api.md)",
            file=sys.stderr,
        )
        return 1
    for line in result.lines:
        print(line)
    print("\nNext, from the repository root: `prefect deploy --all`, then")
    for pool in result.work_pools:
        print(f"  prefect worker start --pool {pool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
