"""A failed run, where the user looks: its state message (UI, notifications) and its logs.

The flow runs the way a worker's flow-run process runs it (`prefect.engine`
calls `run_flow` with the run's logger as `error_logger`), in this process,
against the session's server: the state message must be the one-line cause,
and the run's logs must hold the traceback once (a worker's run logged it
three times: the task, the flow, and the engine's exit).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.flow_engine import flow_run_logger, run_flow
from prefect.logging.handlers import APILogWorker

from flows.failures import OneTracebackPerError
from flows.train import train
from tests.prefect_server import PrefectServer


def test_a_failed_run_states_its_cause_on_one_line_and_logs_one_traceback(
    prefect_api: PrefectServer, local_env: Path
) -> None:
    with prefect_api.client() as client:
        flow_run = client.create_flow_run(train, parameters={"input_path": "raw/missing.csv"})
    with pytest.raises(Exception, match="does not exist"):
        run_flow(train, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
    APILogWorker.drain_all()

    with prefect_api.client() as client:
        state = client.read_flow_run(flow_run.id).state
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
        )
    assert state is not None
    assert state.type == StateType.FAILED
    assert state.message == (
        f"input 'raw/missing.csv' does not exist in the local datastore at {local_env}: "
        "give an existing file or a folder that holds files"
    )
    tracebacks = [log.message for log in logs if "Traceback (most recent call last)" in log.message]
    assert len(tracebacks) == 1, "\n---\n".join(tracebacks)


def test_the_filter_keeps_the_first_traceback_of_an_error_and_every_line() -> None:
    records = []
    try:
        raise ValueError("input is missing")
    except ValueError:
        error = sys.exc_info()
    try:
        raise KeyError("another")
    except KeyError:
        other = sys.exc_info()
    keep = OneTracebackPerError()
    for message, exc_info in [("task", error), ("flow", error), ("engine", error), ("x", other)]:
        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, "", 0, message, (), exc_info)
        assert keep.filter(record)
        records.append(record)
    assert [bool(r.exc_info) for r in records] == [True, False, False, True]
