from datetime import UTC, datetime

import pytest

from flows.paths import InvalidPathError, check_datastore_path, check_run_id, make_run_id


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("raw/2026-11-23.csv", "raw/2026-11-23.csv"),
        ("raw/", "raw"),
        ("raw/week 47/data_v2.csv", "raw/week 47/data_v2.csv"),
        ("samples/iris.csv", "samples/iris.csv"),
    ],
)
def test_accepts_relative_paths(given: str, expected: str) -> None:
    assert check_datastore_path(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("../secrets.csv", "'..' segment"),
        ("raw/../../etc/passwd", "'..' segment"),
        ("raw/./x.csv", "'.' or '..'"),
        ("/etc/passwd", "absolute"),
        ("C:/data/x.csv", "absolute"),
        ("raw\\x.csv", "absolute"),
        ("https://evil.example/x.csv", "URL"),
        ("azureml://datastores/x/paths/y", "URL"),
        ("file:///etc/passwd", "URL"),
        ("raw/x\x00.csv", "control characters"),
        ("raw/x\n.csv", "control characters"),
        ("", "empty"),
        ("/", "empty"),
        ("raw//x.csv", "empty"),
        ("raw/.hidden", "segment"),
        ("raw/" + "a" * 2000, "longer than"),
        (
            "raw/" + "a" * 300 + ".csv",
            "is 304 bytes long; a file or folder name may be at most 255",
        ),
    ],
)
def test_rejects_unsafe_paths_with_a_reason(given: str, reason: str) -> None:
    with pytest.raises(InvalidPathError, match=reason):
        check_datastore_path(given)


def test_error_message_shows_a_truncated_path() -> None:
    with pytest.raises(InvalidPathError) as info:
        check_datastore_path("/" + "x" * 500)
    assert len(str(info.value)) < 300


def test_run_id_is_readable_and_valid() -> None:
    run_id = make_run_id(
        "train", "DD499527-1b2c-4d5e-8f90-123456789abc", datetime(2026, 11, 23, tzinfo=UTC)
    )
    assert run_id == "train-2026-11-23-dd499527"


@pytest.mark.parametrize("bad", ["Train-1", "1abc", "ab", "a_b_c", "x" * 64, "run/../x"])
def test_run_id_rejects_names_that_cannot_name_jobs(bad: str) -> None:
    with pytest.raises(InvalidPathError, match="run id"):
        check_run_id(bad)


def test_segment_of_255_bytes_is_the_limit() -> None:
    assert check_datastore_path("raw/" + "a" * 255) == "raw/" + "a" * 255
    with pytest.raises(InvalidPathError, match="at most 255 bytes"):
        check_datastore_path("a" * 256 + "/x.csv")


def test_schema_pattern_caps_segments_like_the_validator() -> None:
    import re

    from flows.paths import DATASTORE_PATH_PATTERN

    assert re.match(DATASTORE_PATH_PATTERN, "raw/" + "a" * 255)
    assert not re.match(DATASTORE_PATH_PATTERN, "raw/" + "a" * 256)
