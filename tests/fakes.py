"""An in-process compute backend for the fast tier: the flows' orchestration without venvs.

`InProcessCompute` implements the compute protocol (flows/compute/base.py) the
way `LocalCompute` does, minus the subprocess: inputs are downloaded from the
datastore into a scratch folder, the step script's own `main(argv)` is called
with the command line every backend builds (`StepSpec.command`), and the output
folders are uploaded back, each with the same completion marker, so a resumed
run re-attaches to its finished steps. A non-zero exit, an uncaught exception
or an argparse error fails the step with `StepFailedError` and the step's last
output lines, like the real backends.

What it does not check: the step environment (the wheel, the pinned packages,
imports that only the orchestrator has), process isolation and timeouts. The
slow tier runs the same flows on `LocalCompute` and the fake AML workspace.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import io
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

from flows.compute.base import (
    Compute,
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    Registration,
    StepFailedError,
    StepResult,
    StepSpec,
)
from flows.compute.local import STDERR_TAIL_LINES, stage_step, upload_step_outputs
from flows.datastore.base import Datastore
from flows.ledger import CompletionMarker, RunLedger
from flows.settings import Settings

IN_PROCESS_LOCATION = "in-process"


class InProcessCompute:
    """Each step's `main(argv)` in this process, with local paths for its inputs and outputs.

    `environments` holds the ids of environments already "built": share one set
    between instances (the flows make a backend per run) to see reuse.
    """

    def __init__(
        self,
        datastore: Datastore,
        environments: set[str] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.datastore = datastore
        self.environments = environments if environments is not None else set()
        self.log = logger or logging.getLogger(__name__)
        self.steps_run: list[str] = []

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        ref = EnvironmentRef(spec.name, spec.version, IN_PROCESS_LOCATION, reused=False)
        reused = ref.id in self.environments
        self.environments.add(ref.id)
        return EnvironmentRef(spec.name, spec.version, IN_PROCESS_LOCATION, reused=reused)

    def run_steps(self, specs: Sequence[StepSpec], environment: EnvironmentRef) -> list[StepResult]:
        """One after another: the steps share this process's stdout and logging."""
        return [self.run_step(spec, environment) for spec in specs]

    def register_model(self, model: ModelToRegister) -> Registration:
        return Registration(None, f"not registered: in-process test compute ({model.run_id})")

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        outputs = {o.name: o.path for o in spec.outputs}
        if RunLedger(self.datastore).is_complete(outputs.values()):
            self.log.info("Step %s already completed: reusing its outputs", spec.job_name)
            return StepResult(spec.step, spec.job_name, "Completed", outputs, url="", reused=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{spec.job_name}-") as tmp:
            scratch = Path(tmp)
            local_inputs, local_outputs = stage_step(self.datastore, spec, scratch)
            argv = spec.command(local_inputs, local_outputs)
            self.log.info("Running step %s in-process: %s", spec.job_name, " ".join(argv[1:]))
            self.steps_run.append(spec.job_name)
            run_main(spec, argv[2:])
            upload_step_outputs(self.datastore, spec, local_outputs)
        duration = time.monotonic() - started
        RunLedger(self.datastore).mark_complete(
            outputs.values(), CompletionMarker(spec.job_name, environment.id, duration)
        )
        return StepResult(
            spec.step, spec.job_name, "Completed", outputs, url="", duration_seconds=duration
        )


def load_step_script(code_dir: Path, script: str) -> ModuleType:
    """Import `script` from `code_dir` the way the step runs it: its folder first on sys.path.

    The step folders share no module names, so a module already imported from
    the same folder is reused; one of the same name from elsewhere is refused.
    """
    folder = code_dir.resolve()
    name = Path(script).stem
    module = sys.modules.get(name)
    if module is None:
        sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(name)
        finally:
            sys.path.remove(str(folder))
    if Path(module.__file__ or "").resolve().parent != folder:
        raise RuntimeError(f"module {name!r} is already imported from {module.__file__}")
    return module


def run_main(spec: StepSpec, args: list[str]) -> None:
    """Call the step script's `main(args)`; StepFailedError with its last lines if it fails."""
    main: Callable[[list[str]], int] = load_step_script(spec.code_dir, spec.script).main
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    with _captured(tail):
        try:
            code: object = main(args)
        except SystemExit as exc:  # argparse, or a script that exits
            code = exc.code
        except Exception:
            print(traceback.format_exc(), file=sys.stderr)
            code = 1
    if code not in (0, None):
        raise StepFailedError(
            f"step {spec.job_name} exited with code {code}. Last output:\n" + "\n".join(tail)
        )


@contextlib.contextmanager
def _captured(tail: collections.deque[str]) -> Iterator[None]:
    """The step's stdout, stderr and log records, into `tail` (logging is set up already)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        root.removeHandler(handler)
        tail.extend(buffer.getvalue().splitlines())


class InProcessFactory:
    """Stands in for `flows.backends.make_compute`: one `InProcessCompute` per flow run.

    Every backend it made shares one set of environments, and `steps_run` lists
    the jobs they ran, in order.
    """

    def __init__(self) -> None:
        self.environments: set[str] = set()
        self.made: list[InProcessCompute] = []

    def __call__(
        self,
        settings: Settings,
        datastore: Datastore,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> Compute:
        compute = InProcessCompute(datastore, self.environments, logger)
        self.made.append(compute)
        return compute

    @property
    def steps_run(self) -> list[str]:
        return [job for compute in self.made for job in compute.steps_run]
