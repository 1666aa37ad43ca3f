"""Which files a training run trained on: `trained_models/{run_id}/training_files.json`.

Training reads its whole `input_path` folder every week (unlike scoring, which
scores only new files); this record lists every file it read, with its content
fingerprint, next to the model they made.
"""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.datastore.base import Datastore
from flows.datastore.transfer import resolve_input
from flows.ledger import model_dir

TRAINING_FILES = "training_files.json"


@task(cache_policy=NO_CACHE)
def record_training_files(datastore: Datastore, model_run_id: str, input_path: str) -> int:
    """Write the record next to the model of `model_run_id`; return how many files it lists."""
    _, files = resolve_input(datastore, input_path)
    text = json.dumps(
        {
            "input_path": input_path,
            "files": [{"path": f, "fingerprint": datastore.fingerprint(f)} for f in files],
        },
        indent=1,
    )
    path = f"{model_dir(model_run_id)}/{TRAINING_FILES}"
    current = datastore.read_versioned(path)
    if current is None or current.text != text:
        datastore.write_conditional(path, text, etag=current.etag if current else None)
    get_run_logger().info(
        "Model %s was trained on %d file(s) under %s", model_run_id, len(files), input_path
    )
    return len(files)
