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

    # --- scoring ------------------------------------------------------------------
    # A folder of CSVs is scored by up to this many shard steps run concurrently
    # (then merged); 1 scores every folder in one step.
    score_shards: int = Field(default=1, ge=1)
    # ...with at least this many CSV files per shard (fewer shards for small folders).
    score_min_files_per_shard: int = Field(default=2, ge=1)
    # How many steps of a fan-out the local compute runs at once (0: one per CPU).
    local_max_parallel: int = Field(default=0, ge=0)

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
