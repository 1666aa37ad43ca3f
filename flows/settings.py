"""The one settings class: every knob the flows read, from env vars and `.env`.

Settings are built once at flow entry (`Settings()`) and passed down; no other
module reads `os.environ`. Every variable name is the field name upper-cased
with the `SOMEMODEL_` prefix, e.g. `SOMEMODEL_COMPUTE=aml`. `.env.example`
documents each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

# The step environment's pip packages. Pinned to the versions in uv.lock so the
# compute runs what the tests ran (tests/flows/test_settings.py checks the pins).
DEFAULT_PIP_PACKAGES = (
    "pandas==3.1.1",
    "pyarrow==26.0.1",
    "scikit-learn==1.9.1",
    "skops==0.16.0",
)


class SettingsError(ValueError):
    """A setting is missing or inconsistent; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SOMEMODEL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # A validation error would otherwise echo every input, the connection string included.
        hide_input_in_errors=True,
    )

    # --- the two seams -------------------------------------------------------
    compute: Literal["local", "aml"] = "local"
    datastore: Literal["local", "blob"] = "local"

    # --- local datastore and local compute -------------------------------------
    local_datastore_root: Path = REPO_ROOT / ".datastore"
    cache_dir: Path = REPO_ROOT / ".cache"
    step_timeout_seconds: float = Field(default=3600, gt=0)
    # Where `--dry-run` writes a run's AML environment and job definitions.
    plan_dir: Path = REPO_ROOT / "plans"

    # --- environment (the same definition for local venvs and AML images) -------
    environment_name: str = "somemodel-env"
    base_image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    pip_packages: tuple[str, ...] = DEFAULT_PIP_PACKAGES

    # --- blob datastore --------------------------------------------------------
    blob_container: str = "somemodel"
    blob_connection_string: SecretStr | None = None
    blob_account_url: str | None = None
    blob_credentials_block: str | None = None

    # --- Azure ML ----------------------------------------------------------------
    aml_subscription_id: str | None = None
    aml_resource_group: str | None = None
    aml_workspace: str | None = None
    aml_compute_target: str = "cpu-cluster"
    aml_experiment_name: str = "somemodel"
    aml_datastore: str = "workspaceblobstore"
    aml_tenant_id: str | None = None
    aml_client_id: str | None = None
    aml_client_secret: SecretStr | None = None
    aml_queue_timeout_seconds: float = Field(default=3600, gt=0)
    aml_run_timeout_seconds: float = Field(default=6 * 3600, gt=0)
    aml_register_model: bool = False
    aml_model_name: str = "somemodel"
    aml_parallel_instance_count: int = Field(default=2, ge=1)
    # Scoring goes parallel on AML for a folder of at least this many CSVs (0: never).
    aml_parallel_min_files: int = Field(default=0, ge=0)
    aml_parallel_mini_batch_size: int = Field(default=1, ge=1)
    aml_parallel_processes_per_node: int = Field(default=2, ge=1)

    # --- the weekly cycle (docs/deployments.md) -------------------------------------
    # A scoring run's claim on a new file may be taken over after this long, even
    # if the Prefect API still says the run is going.
    score_claim_lease_seconds: float = Field(default=12 * 3600, gt=0)
    # A new model is not promoted when its held-out accuracy is more than this below
    # the current model's on the same rows, or below the minimum.
    promotion_tolerance: float = Field(default=0.02, ge=0, le=1)
    min_accuracy: float = Field(default=0.0, ge=0, le=1)
    # The Prefect notification block the failure automation sends through.
    notification_block: str = "somemodel-notify"
    # Set-up saves a generic webhook block under that name when this is set.
    notification_webhook_url: SecretStr | None = None
    # The cleanup deployment deletes intermediate data older than this.
    retention_days: float = Field(default=28, gt=0)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.datastore == "blob" and not (
            self.blob_connection_string or self.blob_account_url or self.blob_credentials_block
        ):
            raise SettingsError(
                "SOMEMODEL_DATASTORE=blob needs one of SOMEMODEL_BLOB_CONNECTION_STRING, "
                "SOMEMODEL_BLOB_ACCOUNT_URL (managed identity / DefaultAzureCredential) or "
                "SOMEMODEL_BLOB_CREDENTIALS_BLOCK (a saved Prefect block name)"
            )
        if self.compute == "aml":
            missing = [
                f"SOMEMODEL_{name.upper()}"
                for name in ("aml_subscription_id", "aml_resource_group", "aml_workspace")
                if not getattr(self, name)
            ]
            if missing:
                raise SettingsError(f"SOMEMODEL_COMPUTE=aml needs {', '.join(missing)}")
            if self.datastore != "blob":
                raise SettingsError(
                    "SOMEMODEL_COMPUTE=aml needs SOMEMODEL_DATASTORE=blob: AML jobs read and "
                    "write the workspace's blob container, not a folder on this machine"
                )
        sp_fields = (self.aml_tenant_id, self.aml_client_id, self.aml_client_secret)
        if any(sp_fields) and not all(sp_fields):
            raise SettingsError(
                "a service principal needs all of SOMEMODEL_AML_TENANT_ID, "
                "SOMEMODEL_AML_CLIENT_ID and SOMEMODEL_AML_CLIENT_SECRET (or none of them "
                "to use DefaultAzureCredential)"
            )
        return self
