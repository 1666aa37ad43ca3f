"""Failures are announced: a notification block and one Prefect automation over both flows.

`deployments.setup` calls `set_up_notifications`:

- with SOMEMODEL_NOTIFICATION_WEBHOOK_URL set, it saves a generic webhook block
  (`CustomWebhookNotificationBlock`, JSON body `{"subject", "text"}`) under
  SOMEMODEL_NOTIFICATION_BLOCK (default `somemodel-notify`); without it, a
  block of that name must already exist (Slack, Microsoft Teams, email... any
  Prefect notification block, saved in the UI or with its own class);
- it creates or replaces the automation `somemodel-run-failed`: a flow run of
  the somemodel flows, started from a deployment, that ends Failed, Crashed,
  or Completed as `NotPromoted` (the promotion gate kept the current model) or
  `Drifted` (a scoring run's data drifted, flows/trends.py: the message names the
  features), sends the run's name, state, message and link through that block.

The trigger matches the flows by name (not by deployment id), so set-up may
run before `prefect deploy`.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from flows.settings import Settings

AUTOMATION_NAME = "somemodel-run-failed"
FLOW_NAMES = ("train-somemodel", "score-somemodel", "cleanup-somemodel")
ANNOUNCED_STATES = ("Failed", "Crashed", "NotPromoted", "Drifted")

SUBJECT = "somemodel: {{ flow_run.name }} ended {{ flow_run.state.name }}"
BODY = """\
Flow run {{ flow_run.name }} ({{ flow.name }}/{{ deployment.name }}) ended \
{{ flow_run.state.name }}.
Message: {{ flow_run.state.message }}
Link: {{ flow_run|ui_url }}
Flow run id: {{ flow_run.id }}"""


class NotificationSetupError(RuntimeError):
    """The notification block is missing; the message says how to create one."""


def failure_automation(block_document_id: object) -> AutomationCore:
    """The automation, built offline: which events it reacts to and what it sends."""
    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            "Announces somemodel runs that fail, crash, keep the current model "
            "(NotPromoted) or score drifted data (Drifted), through the notification block "
            "set up by deployments.setup."
        ),
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in ANNOUNCED_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": list(FLOW_NAMES)},
                {"prefect.resource.role": "deployment"},
            ],
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,  # type: ignore[arg-type]
                subject=SUBJECT,
                body=BODY,
            )
        ],
    )


def save_webhook_block(settings: Settings, url: str) -> str:
    block = CustomWebhookNotificationBlock(
        name=settings.notification_block,
        # The URL is a secret (a Slack/Teams URL carries its token): kept in `secrets`.
        url="{{url}}",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        headers=None,
        cookies=None,
        secrets={"url": url},  # type: ignore[arg-type]
    )
    block.save(settings.notification_block, overwrite=True)
    return (
        f"Saved the notification block {settings.notification_block!r} "
        "(generic webhook, SOMEMODEL_NOTIFICATION_WEBHOOK_URL)"
    )


def _block_document_id(name: str) -> object:
    """The id of the saved notification block `name`, whatever its type."""
    with get_client(sync_client=True) as client:
        for block_type in client.read_block_types():
            try:
                document = client.read_block_document_by_name(name, block_type.slug)
            except ObjectNotFound:
                continue
            if document.block_schema and "notify" in document.block_schema.capabilities:
                return document.id
    raise NotificationSetupError(
        f"no notification block named {name!r}: set SOMEMODEL_NOTIFICATION_WEBHOOK_URL for a "
        "generic webhook, or save a Slack/Teams/email notification block under that name "
        "(UI: Blocks, or e.g. `SlackWebhook(url=...).save(name)`), or set "
        "SOMEMODEL_NOTIFICATION_BLOCK to an existing one"
    )


def set_up_notifications(settings: Settings) -> list[str]:
    lines = []
    if settings.notification_webhook_url is not None:
        url = settings.notification_webhook_url.get_secret_value()
        lines.append(save_webhook_block(settings, url))
    try:
        block_id = _block_document_id(settings.notification_block)
    except NotificationSetupError as exc:
        # A first set-up without a notification target still works; it says what is missing.
        return [f"Failed runs are not announced yet: {exc}"]
    automation = failure_automation(block_id)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        for old in existing:
            client.delete_automation(old.id)
        client.create_automation(automation)
    lines.append(
        f"{'Replaced' if existing else 'Created'} the automation {AUTOMATION_NAME!r}: "
        f"{', '.join(ANNOUNCED_STATES)} runs of {', '.join(FLOW_NAMES)} are announced "
        f"through the block {settings.notification_block!r}"
    )
    return lines
