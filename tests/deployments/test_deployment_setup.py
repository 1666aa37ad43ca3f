"""`python -m deployments.setup`: the work pool and the settings summary, idempotently."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.variables import Variable

from deployments.automations import AUTOMATION_NAME
from deployments.setup import (
    SETTINGS_VARIABLE,
    SetupError,
    ensure_work_pool,
    main,
    set_up,
    settings_summary,
)
from flows.settings import Settings


def test_settings_summary_leaves_secrets_out() -> None:
    secret = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0;"
    summary = settings_summary(
        Settings(datastore="blob", blob_connection_string=secret, blob_container="box")
    )
    assert summary["blob_connection_string"] == "(set)"
    assert summary["blob_container"] == "box"
    assert summary["aml_client_secret"] is None
    assert secret not in str(summary)
    assert isinstance(summary["pip_packages"], list)


def test_refuses_to_run_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main([]) == 1
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_api", "local_env")
def test_without_the_servers_credentials_it_says_which_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with temporary_settings(updates={PREFECT_API_AUTH_STRING: None}):
        assert main([]) == 1
    assert "set PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api", "local_env")
def test_set_up_twice_creates_the_pool_once_and_saves_the_summary() -> None:
    async def delete_pool_and_notification_block() -> None:
        # The session's server is shared: another test (the webhook one below, the
        # weekly cycle) may have set up the pool and saved a notification block already.
        async with get_client() as client:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_work_pool("somemodel-process")
            for block_type in await client.read_block_types():
                with contextlib.suppress(ObjectNotFound):
                    block = await client.read_block_document_by_name(
                        Settings().notification_block, block_type.slug
                    )
                    await client.delete_block_document(block.id)

    asyncio.run(delete_pool_and_notification_block())
    first = set_up(Settings())
    second = set_up(Settings())
    assert first.work_pools == ("somemodel-process",)
    assert any(line.startswith("Created work pool 'somemodel-process'") for line in first.lines)
    assert second.lines[0].startswith("Work pool 'somemodel-process' (type process) already exists")

    async def pool_type() -> str:
        async with get_client() as client:
            return (await client.read_work_pool("somemodel-process")).type

    assert asyncio.run(pool_type()) == "process"
    # Runs beyond the limit wait in the pool's queue instead of overloading the machine.
    assert _pool_limit("somemodel-process") == Settings().work_pool_concurrency_limit == 2
    assert "at most 2 flow runs at once (SOMEMODEL_WORK_POOL_CONCURRENCY_LIMIT)" in second.lines[0]
    saved = Variable.get(SETTINGS_VARIABLE)
    assert isinstance(saved, dict)
    assert saved["datastore"] == "local"
    # Day one: the deployments' default inputs exist.
    assert any(line.startswith("Seeded the default input 'raw/train'") for line in first.lines)
    assert any(line.startswith("Seeded the default input 'raw/score'") for line in first.lines)
    # No notification target configured: set-up still succeeds, and says what is missing.
    assert any("not announced yet" in line for line in first.lines)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api", "local_env")
def test_set_up_with_a_webhook_creates_the_block_and_one_failure_automation() -> None:
    settings = Settings(notification_webhook_url="http://127.0.0.1:9/hook")  # type: ignore[arg-type]
    set_up(settings)
    lines = set_up(settings).lines
    assert any(line.startswith("Replaced the automation 'somemodel-run-failed'") for line in lines)
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
    assert automation.trigger.expect == {  # type: ignore[union-attr]
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.NotPromoted",
        "prefect.flow-run.Drifted",
    }
    (action,) = automation.actions
    assert "{{ flow_run.state.message }}" in action.body  # type: ignore[union-attr]
    block = CustomWebhookNotificationBlock.load(settings.notification_block)
    assert block.secrets.get_secret_value() == {"url": "http://127.0.0.1:9/hook"}


def _pool_limit(name: str) -> int | None:
    with get_client(sync_client=True) as client:
        return client.read_work_pool(name).concurrency_limit


@pytest.mark.usefixtures("prefect_api")
def test_the_pool_limit_follows_the_setting_when_set_up_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "somemodel-limit-probe"
    monkeypatch.setenv("SOMEMODEL_WORK_POOL_CONCURRENCY_LIMIT", "3")
    limit = Settings().work_pool_concurrency_limit
    assert asyncio.run(ensure_work_pool(name, concurrency_limit=limit)).startswith(
        f"Created work pool {name!r} (type process): at most 3 flow runs at once"
    )
    assert _pool_limit(name) == 3
    line = asyncio.run(ensure_work_pool(name, concurrency_limit=1))
    assert "its limit is now at most 1 flow run at once" in line
    assert _pool_limit(name) == 1
    asyncio.run(ensure_work_pool(name, concurrency_limit=None))  # SOMEMODEL_..._LIMIT=0
    assert _pool_limit(name) is None


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_pool_of_another_type_is_refused_with_the_fix() -> None:
    async def create_other() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="somemodel-wrong", type="docker"))

    asyncio.run(create_other())
    with pytest.raises(SetupError, match="prefect work-pool delete somemodel-wrong"):
        asyncio.run(ensure_work_pool("somemodel-wrong"))
