"""The test harness's Prefect server starts on a copy of the migrated database template."""

from __future__ import annotations

import contextlib
import sqlite3

from alembic.script import ScriptDirectory

from tests.prefect_server import PrefectServer, database_template_path, sqlite_migrations


def test_the_server_runs_on_a_copy_of_the_template_at_the_migration_head(
    prefect_server: PrefectServer,
) -> None:
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
