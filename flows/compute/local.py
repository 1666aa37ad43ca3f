"""The local compute backend: each step in a subprocess, in a cached virtual env.

It does what an AML command job does, on this machine: the environment is a
virtual env into which the built wheel and the pip packages are installed (so a
step that imports something the environment lacks fails here too); the step's
code folder is copied to a scratch folder and run from there (so `somemodel`
can only come from the wheel); inputs are downloaded from the datastore and
outputs uploaded to it, like AML's download and upload modes.

Scratch folders live under `{cache}/scratch/`, named after this process
(flows/orphans.py): those of a run that was killed are removed by the next
local compute that starts.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from uv import find_uv_bin

from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    Registration,
    StepFailedError,
    StepResult,
    StepSpec,
)
from flows.datastore.base import Datastore
from flows.datastore.transfer import download, upload_folder
from flows.fsutil import file_lock
from flows.ledger import COMPLETION_MARKER as COMPLETION_MARKER
from flows.ledger import CompletionMarker, RunLedger
from flows.orphans import reap_scratch, scratch_prefix, scratch_root

STDERR_TAIL_LINES = 40
_READY = ".ready.json"


class EnvironmentBuildError(RuntimeError):
    """Creating the local virtual environment failed; the message has pip's output."""


class LocalCompute:
    def __init__(
        self,
        datastore: Datastore,
        cache_dir: Path,
        step_timeout_seconds: float = 3600,
        max_parallel: int = 0,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.datastore = datastore
        self.cache_dir = cache_dir
        self.step_timeout_seconds = step_timeout_seconds
        # Steps of a fan-out run at once (0: one per CPU).
        self.max_parallel = max_parallel or os.cpu_count() or 1
        self.log = logger or logging.getLogger(__name__)
        self._live: set[subprocess.Popen[str]] = set()
        self._live_lock = threading.Lock()
        self._stopping = threading.Event()
        self._first_failure: BaseException | None = None
        # A run killed with SIGKILL could not remove its scratch folders.
        reap_scratch(cache_dir, self.log)

    # --- environment -------------------------------------------------------------

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        root = self.cache_dir / "envs" / f"{spec.name}-{spec.version}"
        root.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(root.with_name(f".lock-{root.name}")):
            reused = (root / _READY).is_file()
            if reused:
                problem = environment_problem(spec, root)
                if problem is not None:
                    # Marked ready but broken (a package removed, the interpreter gone):
                    # reusing it would fail every step that runs in it.
                    self.log.warning(
                        "Local environment %s@%s is marked ready but %s; rebuilding it",
                        spec.name,
                        spec.version,
                        problem,
                    )
                    reused = False
            if reused:
                self.log.info("Reusing local environment %s@%s", spec.name, spec.version)
            else:
                self._build_environment(spec, root)
        return EnvironmentRef(spec.name, spec.version, str(root), reused=reused)

    def _build_environment(self, spec: EnvironmentSpec, root: Path) -> None:
        self.log.info(
            "Building local environment %s@%s: %s + %s",
            spec.name,
            spec.version,
            " ".join(spec.pip_packages),
            spec.wheel.filename,
        )
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        uv = find_uv_bin()
        try:
            with tempfile.TemporaryDirectory(prefix="wheel-") as wheel_dir:
                wheel = Path(wheel_dir) / spec.wheel.filename
                self.datastore.download_file(spec.wheel.datastore_path, wheel)
                _run_tool([uv, "venv", "--quiet", "--python", sys.executable, str(root)])
                _run_tool(
                    [
                        uv,
                        "pip",
                        "install",
                        "--quiet",
                        "--python",
                        str(root / "bin" / "python"),
                        *spec.pip_packages,
                        str(wheel),
                    ]
                )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / _READY).write_text(
            json.dumps({"name": spec.name, "version": spec.version, "wheel": spec.wheel.sha256})
        )
        self.log.info("Built local environment in %.1f s", time.monotonic() - started)

    # --- steps ---------------------------------------------------------------------

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        outputs = {o.name: o.path for o in spec.outputs}
        if self._is_complete(spec):
            self.log.info("Step %s already completed: reusing its outputs", spec.job_name)
            return StepResult(spec.step, spec.job_name, "Completed", outputs, url="", reused=True)
        started = time.monotonic()
        root = scratch_root(self.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=scratch_prefix(spec.job_name), dir=root) as tmp:
            scratch = Path(tmp)
            code = scratch / "code"
            shutil.copytree(
                spec.code_dir, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
            local_inputs, local_outputs = stage_step(self.datastore, spec, scratch)
            python = str(Path(environment.location) / "bin" / "python")
            argv = spec.command(local_inputs, local_outputs, python=python)
            self.log.info("Running step %s: %s", spec.job_name, " ".join(argv[1:]))
            self._run_step_process(spec, argv, cwd=code, home=scratch, environment=environment)
            upload_step_outputs(self.datastore, spec, local_outputs)
        duration = time.monotonic() - started
        self._mark_complete(spec, environment, duration)
        self.log.info("Step %s completed in %.1f s", spec.job_name, duration)
        return StepResult(
            spec.step, spec.job_name, "Completed", outputs, url="", duration_seconds=duration
        )

    def run_steps(self, specs: Sequence[StepSpec], environment: EnvironmentRef) -> list[StepResult]:
        """Each step in its own process, `max_parallel` at a time, as AML runs jobs side by side.

        The first failure stops the others (their processes are killed, the
        waiting ones never start) and is raised.
        """
        if len(specs) <= 1:
            return [self.run_step(spec, environment) for spec in specs]
        workers = min(len(specs), self.max_parallel)
        self.log.info("Running %d steps, %d at a time", len(specs), workers)
        self._stopping.clear()
        self._first_failure = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="local-step") as pool:
            futures = [pool.submit(self._run_in_fan_out, spec, environment) for spec in specs]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in futures if f in done and f.exception() is not None]
                if failed:
                    raise self._first_failure or failed[0].exception()  # type: ignore[misc]
            except BaseException:
                self._stop_all()
                wait(futures)
                raise
            finally:
                self._stopping.clear()
        return [f.result() for f in futures]

    def _run_in_fan_out(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        if self._stopping.is_set():
            raise StepFailedError(f"step {spec.job_name} not started: another step failed")
        try:
            return self.run_step(spec, environment)
        except BaseException as exc:
            # Here, not in the waiting thread: this worker must not start the next step.
            if not self._stopping.is_set():
                self._first_failure = exc
                self._stop_all()
            raise

    def _stop_all(self) -> None:
        self._stopping.set()
        with self._live_lock:
            for process in self._live:
                process.kill()

    def register_model(self, model: ModelToRegister) -> Registration:
        """No registry on this machine: the datastore's trained_models/ is the record."""
        message = (
            f"not registered: the local compute has no model registry; the model of run "
            f"{model.run_id} stays in {model.folder} (set SOMEMODEL_COMPUTE=aml to register "
            "models in the Azure ML workspace)"
        )
        self.log.info("Model %s", message)
        return Registration(None, message)

    def _run_step_process(
        self, spec: StepSpec, argv: list[str], cwd: Path, home: Path, environment: EnvironmentRef
    ) -> None:
        bin_dir = Path(environment.location) / "bin"
        # The step gets only what it needs: no credentials, no PYTHONPATH, no
        # site-packages of the orchestrator.
        env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TMPDIR": str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            # Bytecode goes into the environment, not next to the step's code:
            # the first step compiles what it imports (pandas, scikit-learn...),
            # and every later step in this environment starts about 4 CPU s faster.
            "PYTHONPYCACHEPREFIX": str(Path(environment.location) / ".pycache"),
        }
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        with self._live_lock:
            self._live.add(process)
            if self._stopping.is_set():  # another step failed while this one was starting
                process.kill()
        timed_out = threading.Event()

        def kill_on_timeout() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(self.step_timeout_seconds, kill_on_timeout)
        timer.start()
        try:
            for line in process.stdout or ():
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("[%s] %s", spec.step, line)
            returncode = process.wait()
        finally:
            # Cancellation, a crash of the flow or a timeout: never leave the step running.
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            with self._live_lock:
                self._live.discard(process)
        if returncode != 0:
            if timed_out.is_set():
                reason = f"timed out after {self.step_timeout_seconds:.0f} s"
            elif self._stopping.is_set():
                reason = "was stopped: another step of the fan-out failed"
            else:
                reason = f"exited with code {returncode}"
            raise StepFailedError(
                f"step {spec.job_name} {reason}. Last output:\n" + "\n".join(tail)
            )

    def _is_complete(self, spec: StepSpec) -> bool:
        return RunLedger(self.datastore).is_complete(o.path for o in spec.outputs)

    def _mark_complete(self, spec: StepSpec, environment: EnvironmentRef, duration: float) -> None:
        RunLedger(self.datastore).mark_complete(
            (o.path for o in spec.outputs),
            CompletionMarker(spec.job_name, environment.id, duration),
        )


# Run by the environment's own python: each pinned distribution is installed at
# its pinned version. Prints what is wrong, one problem a line.
_CHECK_PINS = """
import sys
from importlib import metadata
for requirement in sys.argv[1:]:
    name, _, wanted = requirement.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(f"{name} is not installed")
        continue
    if wanted and have != wanted:
        print(f"{name} is {have}, not {wanted}")
"""
ENV_CHECK_TIMEOUT_SECONDS = 120


def stage_step(
    datastore: Datastore, spec: StepSpec, scratch: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """A step's inputs downloaded under `scratch/inputs/`, its outputs as empty folders under
    `scratch/outputs/` (AML's download and upload modes): the local paths by name.

    A "ro_mount" input is downloaded too: this machine has no mount of the
    datastore, and the step cannot tell a read-only mount from a copy.
    """
    local_inputs = {
        i.name: str(download(datastore, i.path, scratch / "inputs" / i.name)) for i in spec.inputs
    }
    local_outputs = {}
    for o in spec.outputs:
        (scratch / "outputs" / o.name).mkdir(parents=True)
        local_outputs[o.name] = str(scratch / "outputs" / o.name)
    return local_inputs, local_outputs


def upload_step_outputs(
    datastore: Datastore, spec: StepSpec, local_outputs: dict[str, str]
) -> None:
    """Upload each output folder `stage_step` made to the step's datastore path."""
    for o in spec.outputs:
        upload_folder(datastore, Path(local_outputs[o.name]), o.path)


def environment_problem(spec: EnvironmentSpec, root: Path) -> str | None:
    """What is wrong with the built environment at `root`, or None when it can be reused.

    Its python must run, every pinned package and the wheel's distribution must be
    installed at their versions, and `uv pip check` must find their dependencies.
    """
    python = root / "bin" / "python"
    name, version = spec.wheel.filename.split("-")[:2]
    pins = [re.split(r"[\s;\[<>!~]", p, maxsplit=1)[0] for p in spec.pip_packages]
    try:
        checked = subprocess.run(
            [str(python), "-c", _CHECK_PINS, *pins, f"{name}=={version}"],
            capture_output=True,
            text=True,
            timeout=ENV_CHECK_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its python does not run ({exc})"
    if checked.returncode != 0:
        return f"its python does not run (exit {checked.returncode}: {checked.stderr[-500:]})"
    if checked.stdout.strip():
        return "; ".join(checked.stdout.split("\n")).strip("; ")
    try:
        deps = subprocess.run(
            [find_uv_bin(), "pip", "check", "--python", str(python)],
            capture_output=True,
            text=True,
            timeout=ENV_CHECK_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`uv pip check` could not run ({exc})"
    if deps.returncode != 0:
        return f"`uv pip check` failed: {(deps.stdout + deps.stderr).strip()[-500:]}"
    return None


def _run_tool(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EnvironmentBuildError(
            f"{Path(argv[0]).name} {argv[1]} failed (exit {result.returncode}):\n"
            + (result.stderr or result.stdout)[-4000:]
        )
