"""Run a submitted AML job on this machine, as AML would, when the fake workspace "completes" it.

Each command job runs its own command line. Inputs are
downloaded from the blob container (Azurite) and outputs uploaded to it, at
the `azureml://` paths the job names; the interpreter is a virtual env with
the wheel and the pinned packages (what the image holds).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml.entities import Job
from azure.storage.blob import ContainerClient

import flows.compute.aml as aml
from flows.compute.aml_client import Clock
from flows.compute.base import EnvironmentRef
from flows.datastore.blob import BlobDatastore
from flows.datastore.transfer import download, upload_folder
from flows.settings import Settings
from tests.conftest import TEST_CACHE_DIR
from tests.flows.compute.fake_aml import WORKSPACE, FakeMLClient, Outcome, Script
from tests.services import ACCOUNT_NAME, Azurite

DATASTORE_URI = "azureml://datastores/workspaceblobstore/paths/"


@contextmanager
def fake_aml_workspace(
    azurite: Azurite, image: EnvironmentRef, uploads: Path, container_prefix: str, **settings: str
) -> Iterator[FakeMLClient]:
    """SOMEMODEL_COMPUTE=aml against the fake workspace, on a new Azurite container.

    The settings (without their SOMEMODEL_ prefix) are added to the workspace's
    own; every job runs like AML (`run_like_aml`) once it has been queued and run
    for 0.1 s each.
    """
    name = azurite.new_container_name(container_prefix)
    ContainerClient.from_connection_string(azurite.connection_string, name).create_container()
    fake = FakeMLClient(
        uploads,
        clock=Clock(),  # type: ignore[arg-type]
        datastore_account=ACCOUNT_NAME,
        datastore_container=name,
    )
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "COMPUTE": "aml",
            "DATASTORE": "blob",
            "BLOB_CONTAINER": name,
            "BLOB_CONNECTION_STRING": azurite.connection_string,
            "CACHE_DIR": str(TEST_CACHE_DIR),
            "AML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
            "AML_RESOURCE_GROUP": "rg-test",
            "AML_WORKSPACE": WORKSPACE,
            **settings,
        }.items():
            patch.setenv(f"SOMEMODEL_{key}", value)
        patch.setattr(aml, "make_ml_client", lambda settings: fake)
        store = BlobDatastore.from_settings(Settings())
        fake.jobs.default_script = Script(
            queued_seconds=0.1, running_seconds=0.1, outcome=run_like_aml(store, image)
        )
        yield fake
        fake.jobs.release()


def datastore_path(uri: str) -> str:
    if not uri.startswith(DATASTORE_URI):
        raise ValueError(f"{uri} is not on the workspaceblobstore datastore")
    return uri[len(DATASTORE_URI) :].rstrip("/")


def _resolve(text: str, paths: Mapping[str, Path], kind: str) -> str:
    for name, path in paths.items():
        text = text.replace(f"${{{{{kind}.{name}}}}}", str(path))
    return text


def run_like_aml(store: BlobDatastore, image: EnvironmentRef) -> Callable[[Job], Outcome]:
    def run(job: Any) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="fake-aml-job-") as tmp:
            scratch = Path(tmp)
            node: Any = job
            code = scratch / "code"
            shutil.copytree(str(job.code), code)
            inputs = {
                name: download(store, datastore_path(given.path), scratch / "inputs" / name)
                for name, given in node.inputs.items()
            }
            outputs = {name: scratch / "outputs" / name for name in node.outputs}
            for folder in outputs.values():
                folder.mkdir(parents=True)
            command = _resolve(_resolve(str(job.command), inputs, "inputs"), outputs, "outputs")
            argvs = [["bash", "-c", command]]
            logs: list[str] = []
            for argv in argvs:
                done = subprocess.run(
                    argv,
                    cwd=code,
                    env={"PATH": f"{image.location}/bin:/usr/bin:/bin", "HOME": tmp},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                logs += (done.stdout + done.stderr).splitlines()
                if done.returncode != 0:
                    error = f"Execution failed. User process exited with {done.returncode}"
                    return Outcome("Failed", error=error, logs=tuple(logs))
            for name, given in node.outputs.items():
                upload_folder(store, outputs[name], datastore_path(given.path))
            return Outcome("Completed", logs=tuple(logs))

    return run
