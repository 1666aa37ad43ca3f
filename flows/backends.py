"""The one factory of backends: settings in, a datastore and a compute out.

The flows build `Settings()` once at entry and call `open_backends()`; they
never ask a backend what it is. Which implementation runs is decided here and
only here (`SOMEMODEL_COMPUTE`, `SOMEMODEL_DATASTORE`, a dry run), so a test
replaces the whole choice with `use_backends(factory)` instead of environment
variables or patches:

    with use_backends(lambda settings, logger, dry_run: Backends(my_settings, store, compute)):
        train(input_path="samples/iris.csv")

Flow parameters stay JSON-typed (deployments build a parameter schema from
them), which is why the backends are not a flow parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from flows.compute.base import Compute
from flows.compute.local import LocalCompute
from flows.datastore.base import Datastore
from flows.datastore.local import LocalDatastore
from flows.settings import Settings

Logger = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class Backends:
    """What a flow run works with: its settings, its datastore and its compute.

    `dry_run` marks the planning backends: the compute describes each step
    instead of running it, and the run writes nothing to the datastore (no
    wheel upload, no step-reuse records) and reuses no earlier step.
    """

    settings: Settings
    datastore: Datastore
    compute: Compute
    dry_run: bool = False


class BackendsFactory(Protocol):
    def __call__(self, settings: Settings, logger: Logger | None, dry_run: bool) -> Backends: ...


def make_datastore(settings: Settings) -> Datastore:
    """The datastore `SOMEMODEL_DATASTORE` names: the blob container, or the local folder."""
    if settings.datastore == "blob":
        from flows.datastore.blob import BlobDatastore

        return BlobDatastore.from_settings(settings)
    return LocalDatastore(settings.local_datastore_root)


def make_compute(settings: Settings, datastore: Datastore, logger: Logger | None = None) -> Compute:
    """The compute `SOMEMODEL_COMPUTE` names: Azure ML (imported only then), or local venvs
    that read and write `datastore`.
    """
    if settings.compute == "aml":
        # Imported here: azure.ai.ml takes seconds to import, and only AML runs need it.
        from flows.compute.aml import AmlCompute

        return AmlCompute.from_settings(settings, logger=logger)
    return LocalCompute(
        datastore,
        cache_dir=settings.cache_dir,
        step_timeout_seconds=settings.step_timeout_seconds,
        max_parallel=settings.local_max_parallel,
        logger=logger,
    )


def make_planning_compute(settings: Settings, logger: Logger | None = None) -> Compute:
    """The dry run's compute: every step as the SDK's Azure ML YAML under `plan_dir`.

    It needs no credential and no workspace, whatever `SOMEMODEL_COMPUTE` is.
    """
    from flows.compute.aml_plan import AmlPlanCompute

    return AmlPlanCompute.from_settings(settings, logger=logger)


def make_backends(
    settings: Settings, logger: Logger | None = None, dry_run: bool = False
) -> Backends:
    """The backends `settings` name; for a dry run, the planning compute instead."""
    datastore = make_datastore(settings)
    if dry_run:
        return Backends(settings, datastore, make_planning_compute(settings, logger), dry_run=True)
    return Backends(settings, datastore, make_compute(settings, datastore, logger))


# A process-wide stack rather than a ContextVar: Prefect may run a flow body in
# another thread, with another context, than the caller's.
_overrides: list[BackendsFactory] = []


@contextmanager
def use_backends(factory: BackendsFactory) -> Iterator[None]:
    """Within the block, flows get their backends from `factory` (tests, embedding)."""
    _overrides.append(factory)
    try:
        yield
    finally:
        _overrides.remove(factory)


def open_backends(
    settings: Settings, logger: Logger | None = None, dry_run: bool = False
) -> Backends:
    """The backends for a flow run: `make_backends`, unless `use_backends` says otherwise."""
    factory = _overrides[-1] if _overrides else make_backends
    return factory(settings, logger, dry_run)
