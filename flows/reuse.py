"""Step reuse across runs: never pay twice for a step whose inputs did not change.

This replaces v1's `allow_reuse=True`. A step's key is the hash of everything
that determines its output: the step's code (every file of its folder), the
environment version (which covers the wheel and the pip packages), its literal
parameters except the run id, and a fingerprint of each input file (content
MD5/sha256, from the datastore). A finished step's outputs are recorded in the
run ledger under the key (flows/ledger.py); a later step with the same key
reuses them when they still exist. Any difference in any part gives another
key, so reuse never crosses different inputs.

Outputs are checked before they are reused, whether found through a reuse
record or through this run's own completion markers (a resumed run): a model
must still match the sha256 its metadata records, predictions must still
match their manifest. A broken output is run again, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from flows.compute.base import EnvironmentRef, StepFailedError, StepResult, StepSpec
from flows.datastore.base import Datastore, DatastoreNotFoundError
from flows.datastore.transfer import resolve_input
from flows.ledger import ReuseRecord, RunLedger, is_ledger_file
from flows.scoring import count_predictions
from somemodel.artifacts import (
    MANIFEST_FILENAME,
    METADATA_FILENAME,
    PREDICTIONS_FILENAME,
    ArtifactError,
    ModelMetadata,
    PredictionsManifest,
    sha256_of_file,
)

# Parameters that name the run rather than shape the output.
_RUN_PARAMS = frozenset({"run_id"})

logger = logging.getLogger(__name__)


def code_hash(code_dir: Path) -> str:
    """A sha256 over the names and contents of every file under `code_dir` (bytecode skipped),
    so any change to a step's code changes its reuse key.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in code_dir.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(code_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def step_key(datastore: Datastore, spec: StepSpec, environment: EnvironmentRef) -> str:
    """The reuse key of `spec`: a sha256 of its code, environment, parameters (but the run id)
    and each input file's fingerprint. Lists the inputs in the datastore.
    """
    inputs = {}
    for step_input in spec.inputs:
        _, files = resolve_input(datastore, step_input.path)
        # Ledger records such as `_COMPLETE.json` name the producing job, not the data.
        inputs[step_input.name] = [
            (f[len(step_input.path) :], datastore.fingerprint(f))
            for f in files
            if not is_ledger_file(f)
        ]
    content = {
        "step": spec.step,
        "script": spec.script,
        "code": code_hash(spec.code_dir),
        "environment": environment.id,
        "params": {k: str(v) for k, v in spec.params.items() if k not in _RUN_PARAMS},
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def find_reusable(datastore: Datastore, spec: StepSpec, key: str) -> StepResult | None:
    """The earlier result for `key`, if its outputs are all still there."""
    earlier = RunLedger(datastore).reuse_record(spec.step, key)
    if earlier is None:
        return None
    if not all(datastore.list_files(path) for path in earlier.outputs.values()):
        logger.warning("Step %s: the outputs recorded for reuse are gone; running it", spec.step)
        return None
    broken = broken_output(datastore, earlier.outputs)
    if broken is not None:
        # Reusing it would fail verification on every run until --force-rerun.
        logger.warning(
            "Step %s: not reusing the outputs of run %s: %s; running it again",
            spec.step,
            earlier.run_id,
            broken,
        )
        return None
    return StepResult(
        step=spec.step,
        job_name=earlier.job_name,
        status="Reused",
        outputs=dict(earlier.outputs),
        url=earlier.url,
        reused=True,
        run_id=earlier.run_id,
    )


def broken_output(datastore: Datastore, outputs: Mapping[str, str]) -> str | None:
    """Why a step's output folders cannot be reused, or None.

    A folder holding a model (its `metadata.json`) must hold the model file
    its metadata's sha256 names; a folder of predictions (a `manifest.json`, or
    the output named `predictions`) must hold the predictions file its
    manifest describes. Other folders (data prep's) are not checked here.
    """
    for name, folder in outputs.items():
        broken = broken_model_output(datastore, folder)
        if broken is None and (
            name == "predictions" or datastore.exists(f"{folder}/{MANIFEST_FILENAME}")
        ):
            broken = broken_predictions_output(datastore, folder)
        if broken is not None:
            return broken
    return None


def broken_model_output(datastore: Datastore, folder: str) -> str | None:
    """Why the model in `folder` cannot be reused (its file no longer matches the sha256 in
    its `metadata.json`), or None; a folder without a metadata file is not checked.
    """
    metadata_path = f"{folder}/{METADATA_FILENAME}"
    versioned = datastore.read_versioned(metadata_path)
    if versioned is None:
        return None
    try:
        metadata = ModelMetadata.from_json(versioned.text, repr(metadata_path))
    except ArtifactError as exc:
        return str(exc)
    model_path = f"{folder}/{metadata.model_file}"
    with tempfile.TemporaryDirectory(prefix="reuse-") as tmp:
        local = Path(tmp) / metadata.model_file
        try:
            datastore.download_file(model_path, local)
        except DatastoreNotFoundError:
            return f"{model_path} is missing"
        actual = sha256_of_file(local)
    if actual != metadata.model_sha256:
        return (
            f"{model_path} does not match its sha256 in {METADATA_FILENAME} "
            f"({actual[:12]}... instead of {metadata.model_sha256[:12]}...)"
        )
    return None


def broken_predictions_output(datastore: Datastore, folder: str) -> str | None:
    """Why the predictions in `folder` cannot be reused, or None.

    Its `manifest.json` must parse, and its `predictions.csv` must have the
    columns and the row count the manifest gives, and only the manifest's
    classes: what verification checks after the step (flows/scoring.py).
    """
    manifest_path = f"{folder}/{MANIFEST_FILENAME}"
    versioned = datastore.read_versioned(manifest_path)
    if versioned is None:
        return f"{manifest_path!r} is missing (the step that wrote {folder!r} did not finish)"
    try:
        manifest = PredictionsManifest.from_json(versioned.text, repr(manifest_path))
    except ArtifactError as exc:
        return str(exc)
    path = f"{folder}/{PREDICTIONS_FILENAME}"
    with tempfile.TemporaryDirectory(prefix="reuse-") as tmp:
        local = Path(tmp) / PREDICTIONS_FILENAME
        try:
            datastore.download_file(path, local)
        except DatastoreNotFoundError:
            return f"{path!r} is missing although its manifest exists"
        header, rows, counts = count_predictions(local)
    columns = ["row_id", "predicted_class", *(f"proba_{c}" for c in manifest.classes)]
    if header != columns:
        return f"{path!r} has columns {header}, but its manifest gives {columns}"
    if rows != manifest.output_rows:
        return f"{path!r} has {rows} rows, but its manifest counts {manifest.output_rows}"
    unknown = sorted(set(counts) - {str(c) for c in manifest.classes})
    if unknown:
        return (
            f"{path!r} predicts classes {unknown} outside its manifest's {list(manifest.classes)}"
        )
    return None


def record(datastore: Datastore, spec: StepSpec, key: str, result: StepResult) -> None:
    """Record `result` as the outputs of the step with `key`; a record written first by a
    concurrent run with the same key is kept.
    """
    entry = ReuseRecord(
        run_id=result.run_id or spec.run_id,
        job_name=result.job_name,
        outputs=dict(result.outputs),
        url=result.url,
    )
    if not RunLedger(datastore).record_reuse(spec.step, key, entry):
        # Another run with the same key recorded its outputs first: either will do.
        logger.info("Step %s: a concurrent run recorded the same key first", spec.step)


class BrokenOutputError(StepFailedError):
    """A step re-attached to its earlier, finished job, whose outputs no longer verify."""


def discard_broken_own_outputs(datastore: Datastore, spec: StepSpec) -> bool:
    """Before a step of a resumed run: outputs it finished earlier that no longer verify lose
    their completion markers (with a warning), so the compute runs it again.

    Returns whether its outputs were checked (they were marked complete).
    """
    ledger = RunLedger(datastore)
    folders = [o.path for o in spec.outputs]
    if not ledger.is_complete(folders):
        return False
    broken = broken_output(datastore, {o.name: o.path for o in spec.outputs})
    if broken is not None:
        logger.warning("Step %s finished earlier, but %s: running it again", spec.job_name, broken)
        ledger.clear_complete(folders)
    return True


def check_reattached(datastore: Datastore, spec: StepSpec, result: StepResult) -> StepResult:
    """`result`, unless it re-attached to a finished job whose outputs no longer verify.

    A compute that keeps no completion markers (Azure ML: a job name is used
    once) re-attaches to the job of an earlier attempt of this run; its broken
    outputs cannot be made again under the same run id.
    """
    if not result.reused:
        return result
    broken = broken_output(datastore, result.outputs)
    if broken is None:
        return result
    raise BrokenOutputError(
        f"step {spec.job_name} finished in an earlier attempt of run {spec.run_id}, but {broken}; "
        "its job cannot run again under the same name: start a new run (without run_id) "
        "to run the step again"
    )


def _run_checked(
    datastore: Datastore, spec: StepSpec, result: StepResult, checked: bool
) -> StepResult:
    result = result if result.run_id else replace(result, run_id=spec.run_id)
    return result if checked else check_reattached(datastore, spec, result)


def run_or_reuse(
    datastore: Datastore,
    spec: StepSpec,
    environment: EnvironmentRef,
    run: Callable[[], StepResult],
    *,
    force_rerun: bool = False,
) -> StepResult:
    """Reuse the step's earlier result for the same key, or `run()` it and record it.

    Either way the outputs are verified first (`broken_output`): broken ones are
    run again, with a warning.
    """
    key = step_key(datastore, spec, environment)
    earlier = None if force_rerun else find_reusable(datastore, spec, key)
    if earlier is not None:
        logger.info(
            "Reusing step %s: same code, environment, parameters and inputs as run %s",
            spec.step,
            earlier.run_id,
        )
        return earlier
    checked = discard_broken_own_outputs(datastore, spec)
    result = _run_checked(datastore, spec, run(), checked)
    record(datastore, spec, key, result)
    return result


def run_or_reuse_all(
    datastore: Datastore,
    specs: Sequence[StepSpec],
    environment: EnvironmentRef,
    run: Callable[[list[StepSpec]], list[StepResult]],
    *,
    force_rerun: bool = False,
) -> list[StepResult]:
    """`run_or_reuse` for a fan-out: reuse each step on its own, `run()` the rest together."""
    keys = [step_key(datastore, spec, environment) for spec in specs]
    results: list[StepResult | None] = [
        None if force_rerun else find_reusable(datastore, spec, key)
        for spec, key in zip(specs, keys, strict=True)
    ]
    todo = [i for i, result in enumerate(results) if result is None]
    for i, result in enumerate(results):
        if result is not None:
            logger.info("Reusing step %s of run %s", specs[i].step, result.run_id)
    checked = [discard_broken_own_outputs(datastore, specs[i]) for i in todo]
    fresh = run([specs[i] for i in todo]) if todo else []
    for i, result, was_checked in zip(todo, fresh, checked, strict=True):
        result = _run_checked(datastore, specs[i], result, was_checked)
        record(datastore, specs[i], keys[i], result)
        results[i] = result
    return [r for r in results if r is not None]
