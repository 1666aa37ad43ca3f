"""The train flow's promotion gate: measure the current model on the new held-out rows, decide.

The train step writes its held-out rows (`holdout.parquet`) next to the new
model; the current model (what `trained_models/latest.json` points at) is
verified (sha256) and scored on those rows here, so both accuracies are on the
same rows. The decision itself is pure (flows/gate.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from flows.datastore.base import Datastore, DatastoreNotFoundError
from flows.gate import GateDecision, decide
from flows.ledger import LedgerError, model_dir
from flows.registry import (
    ModelRef,
    ModelVerificationError,
    download_verified_model,
    latest_run_id,
)
from flows.settings import Settings
from somemodel.artifacts import HOLDOUT_FILENAME

# The final state's name when the gate kept the current model: the run is
# Completed (scoring may follow, with the current model), and the automation
# in deployments/automations.py announces it (event `prefect.flow-run.NotPromoted`).
NOT_PROMOTED = "NotPromoted"


def accuracy_on(
    datastore: Datastore, run_id: str, holdout: pd.DataFrame, target_col: str
) -> float | None:
    """The verified model of `run_id` scored on `holdout`; None when its features are absent."""
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        model, metadata = download_verified_model(datastore, run_id, Path(tmp))
    features = [str(name) for name in metadata.feature_names]
    if target_col not in holdout.columns or not set(features) <= set(holdout.columns):
        return None
    predicted = model.predict(holdout[features].astype("float64"))
    truth = holdout[target_col].astype(str).to_numpy()
    return float((pd.Series(predicted).astype(str).to_numpy() == truth).mean())


def read_holdout(datastore: Datastore, run_id: str) -> pd.DataFrame | None:
    """The held-out rows the train step of `run_id` wrote next to its model; None when there are
    none (a model trained before the holdout joined the artifact contract).
    """
    with tempfile.TemporaryDirectory(prefix="holdout-") as tmp:
        local = Path(tmp) / HOLDOUT_FILENAME
        try:
            datastore.download_file(f"{model_dir(run_id)}/{HOLDOUT_FILENAME}", local)
        except DatastoreNotFoundError:
            return None
        return pd.read_parquet(local)


@task(cache_policy=NO_CACHE)
def check_promotion(
    datastore: Datastore,
    settings: Settings,
    model: ModelRef,
    target_col: str,
    force_promote: bool = False,
) -> GateDecision:
    """Compare the new model with the current latest on the new held-out rows; decide."""
    logger = get_run_logger()
    try:
        current = latest_run_id(datastore)
    except LedgerError as exc:
        # A broken pointer must not block every later promotion: there is no
        # current model to compare with, and promoting replaces the pointer.
        logger.warning("No current model to compare with: %s; promoting replaces it", exc)
        current = None
    if current == model.run_id:
        # A reused or resumed run: its model is the current one already.
        return GateDecision(True, "this model is the current one already", model.accuracy)
    current_accuracy = None
    if current is not None and not force_promote:
        holdout = read_holdout(datastore, model.run_id)
        if holdout is not None:
            try:
                current_accuracy = accuracy_on(datastore, current, holdout, target_col)
            except ModelVerificationError as exc:
                # A current model that no longer verifies cannot serve; keeping it
                # would refuse every later model.
                logger.warning("The current model cannot be compared, replacing it: %s", exc)
                current = None
    decision = decide(
        model.accuracy,
        current_accuracy,
        current_run_id=current,
        tolerance=settings.promotion_tolerance,
        min_accuracy=settings.min_accuracy,
        force=force_promote,
    )
    (logger.info if decision.promote else logger.warning)("Gate: %s", decision.state_message)
    return decision


def final_state(summary: Any, decision: GateDecision) -> Any:
    """The flow's return: the summary, or a `NotPromoted` Completed state carrying it."""
    if decision.promote:
        return summary
    state: State[Any] = Completed(data=summary, message=decision.state_message, name=NOT_PROMOTED)
    return state
