"""Seed the deployments' default input folders with the bundled sample, so day one works.

The flows' signatures name `raw/train` and `raw/score` as the deployments'
default inputs (prefect.yaml may override them per deployment); on a fresh
datastore they do not exist, and the first scheduled runs would fail.
`deployments.setup` calls `seed_default_inputs`: each default input folder that
holds no file yet gets the flow's bundled sample (iris for training, the
unlabelled iris rows for scoring). A folder that already holds files is left
alone, so the sample never mixes into real data.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deployments.declared import DeploymentSpec, load_flow
from flows.backends import make_datastore
from flows.samples import SAMPLES_DIR
from flows.settings import Settings

# The bundled sample for each flow module's default input.
SAMPLES: dict[str, Path] = {
    "flows.train": SAMPLES_DIR / "iris.csv",
    "flows.score": SAMPLES_DIR / "iris_score.csv",
}


def seed_default_inputs(settings: Settings, specs: Iterable[DeploymentSpec]) -> list[str]:
    """Put each deployment's sample into its default `input_path` folder when that is empty."""
    datastore = make_datastore(settings)
    lines = []
    for spec in specs:
        sample = SAMPLES.get(spec.module)
        if sample is None:
            continue
        folder = spec.parameters.get("input_path") or default_input(spec)
        existing = datastore.list_files(folder)
        if existing or datastore.exists(folder):
            lines.append(f"Default input {folder!r} already holds {len(existing) or 1} file(s)")
            continue
        path = f"{folder}/{sample.name}"
        datastore.upload_file(sample, path)
        lines.append(f"Seeded the default input {folder!r} with the sample: {datastore.uri(path)}")
    return lines


def default_input(spec: DeploymentSpec) -> str:
    """The `input_path` default of the deployment's flow signature."""
    return str(load_flow(spec).parameters.properties["input_path"]["default"])
