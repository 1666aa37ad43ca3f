"""Random `input_path` strings, as the public API could receive them.

Each is either refused with InvalidPathError, or comes back as a normalised
relative path that resolves inside a LocalDatastore's root and names the same
blob in the blob datastore: never a traceback, never a way out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flows.datastore import LocalDatastore
from flows.paths import MAX_PATH_LENGTH, InvalidPathError, check_datastore_path, check_run_id

PIECES = [
    "..", ".", "", "/", "//", "\\", "~", "%2e%2e", "%2f", "raw", "a.csv", "C:", "c:\\",
    "file:", "https:", "://", "azureml:", "wasbs://c@a.blob.core.windows.net", "?sv=x&sig=y",
    "\x00", "\n", "\r", "\t", "\u202e", "\u2025", "\uff0e\uff0e", "é", "名", " ", "-", "=", "+",
    "..\\..", "/etc/passwd", "$HOME", "*", "a" * 300,
]  # fmt: skip
PATHS = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    st.lists(st.sampled_from(PIECES), max_size=8).map("/".join),
    st.text(max_size=64),
    st.text(alphabet="./\\:%a0 ", max_size=40),
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalDatastore:
    return LocalDatastore(tmp_path_factory.mktemp("root") / "datastore")


@FUZZ
@given(path=PATHS)
@example(path="../x.csv")
@example(path="raw/../../x.csv")
@example(path="raw/..")
@example(path="raw/./x")
@example(path="/abs")
@example(path="raw\\..\\x")
@example(path="C:x")
@example(path="http://x/y")
@example(path="raw/x\x00.csv")
@example(path="a" * (MAX_PATH_LENGTH + 1))
@example(path="\uff0e\uff0e/x")
@example(path="raw/week 47/")
@example(path="raw///")
def test_input_path_is_safe_or_refused(store: LocalDatastore, path: str) -> None:
    try:
        safe = check_datastore_path(path)
    except InvalidPathError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.strip()
        assert len(refusal) < 400, "the message shows a truncated path"
        return
    assert safe == check_datastore_path(safe), "normalising is idempotent"
    assert safe
    assert not safe.startswith("/")
    assert not safe.endswith("/")
    assert len(safe) <= MAX_PATH_LENGTH
    parts = safe.split("/")
    assert all(part not in ("", ".", "..") for part in parts)
    assert all(c.isprintable() and c.isascii() for c in safe)
    assert not set(safe) & set("\\:%?#*$~")
    # Resolved by the datastore, it stays below the root (no symlinks involved).
    resolved = Path(os.path.normpath(store.root / safe))
    assert store.root in resolved.parents
    assert store.uri(safe).startswith(store.root.as_uri())


@settings(max_examples=200, deadline=None)
@given(run_id=st.text(max_size=80))
@example(run_id="../x")
@example(run_id="a" * 63)
def test_run_id_is_a_safe_segment_or_refused(run_id: str) -> None:
    try:
        safe = check_run_id(run_id)
    except InvalidPathError:
        return
    assert safe == run_id
    assert check_datastore_path(f"trained_models/{safe}") == f"trained_models/{safe}"
