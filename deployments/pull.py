"""The deployments' pull step: run the flows from the checkout the worker's Python installed.

`prefect deploy` without a `pull` section records the absolute folder it ran
from, so a worker started from another clone (or on another machine) looks
for the code in a folder that is not there. The process worker has no image
to bake the code into either. What it does have is its own Python
environment, in which `uv sync` installed this project in editable mode: the
checkout that environment belongs to is where the code is. So the step asks
Python where `flows` lives and makes that checkout the working directory, for
whichever clone the worker runs from, without any path in the deployment.
"""

from __future__ import annotations

import os
from pathlib import Path

import flows


class ProjectNotFoundError(RuntimeError):
    """The worker's Python does not point at a checkout of this project."""


def project_root() -> Path:
    """The checkout whose `flows` package this Python imports (the repo root)."""
    root = Path(flows.__file__).resolve().parents[1]
    if not (root / "prefect.yaml").is_file() or not (root / "flows" / "train.py").is_file():
        raise ProjectNotFoundError(
            f"the worker's Python imports `flows` from {root}, which is not a checkout of "
            "this repository (no prefect.yaml / flows/train.py there): start the worker with "
            "the checkout's own environment, e.g. `.venv/bin/prefect worker start ...` after "
            "`make install`, not with a Python where the project is installed as a wheel"
        )
    return root


def use_project_directory() -> dict[str, str]:
    """Prefect pull step: chdir to the checkout; returns it as `directory` (Prefect's contract)."""
    root = project_root()
    os.chdir(root)
    return {"directory": str(root)}
