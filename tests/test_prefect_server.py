"""The harness's Prefect server: a copy of the migrated template, the services its session needs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.prefect_server import (
    PrefectServer,
    database_template_path,
    needs_full_server,
    sqlite_migrations,
)


def test_the_server_runs_on_a_copy_of_the_template_at_the_migration_head(
    prefect_server: PrefectServer,
) -> None:
    from alembic.script import ScriptDirectory

    migrations = sqlite_migrations()
    heads = ScriptDirectory(
        str(migrations.parents[1]), version_locations=[str(migrations)]
    ).get_heads()
    template = database_template_path()
    assert template.is_file()
    assert not prefect_server.database.samefile(template)
    with prefect_server.client() as client:
        flow_id = client.create_flow_from_name("harness-template-probe")
    # The server writes to the copy in its home (so it started on it), and it is at the head.
    with contextlib.closing(
        sqlite3.connect(f"file:{prefect_server.database}?mode=ro", uri=True)
    ) as database:
        assert database.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head,) for head in heads
        ]
        names = database.execute("SELECT name FROM flow WHERE id = ?", (str(flow_id),)).fetchall()
    assert names == [("harness-template-probe",)]
    with contextlib.closing(sqlite3.connect(f"file:{template}?mode=ro", uri=True)) as original:
        assert original.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head,) for head in heads
        ]


class _Item:
    def __init__(self, *markers: str) -> None:
        self.markers = markers

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


@pytest.mark.parametrize(
    ("markers", "full"),
    [((), False), (("aml_live",), False), (("slow",), True), (("integration",), True)],
)
def test_a_session_with_a_slow_or_integration_test_gets_every_server_service(
    markers: tuple[str, ...], full: bool
) -> None:
    items: list[Any] = [_Item(), _Item(*markers), _Item()]
    assert needs_full_server(items) is full


def test_the_server_runs_with_the_services_its_session_needs(
    prefect_server: PrefectServer, request: pytest.FixtureRequest
) -> None:
    assert prefect_server.lean is not needs_full_server(request.session.items)
    with prefect_server.client() as client:
        settings = client._client.get("/admin/settings").json()
    recorder = settings["server"]["services"]["task_run_recorder"]
    assert recorder["enabled"] is not prefect_server.lean
    if not prefect_server.lean:
        assert (recorder["batch_size"], recorder["flush_interval"]) == (50, 1.0)


def test_the_server_idles_without_burning_cpu(prefect_server: PrefectServer) -> None:
    """With a service misconfigured (a 0 s flush loop) the server kept a core busy."""
    pid = prefect_server.pid

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_seconds()
    time.sleep(2)
    assert cpu_seconds() - before < 1.0
