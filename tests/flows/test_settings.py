from importlib.metadata import version
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.settings import Settings


def test_defaults_are_local() -> None:
    settings = Settings()
    assert settings.compute == "local"
    assert settings.datastore == "local"


def test_reads_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(tmp_path))
    monkeypatch.setenv("SOMEMODEL_STEP_TIMEOUT_SECONDS", "12")
    settings = Settings()
    assert settings.local_datastore_root == tmp_path
    assert settings.step_timeout_seconds == 12


def test_reads_dotenv_in_working_directory() -> None:
    Path(".env").write_text("SOMEMODEL_ENVIRONMENT_NAME=from-dotenv\n")
    assert Settings().environment_name == "from-dotenv"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.compute = "aml"  # type: ignore[misc]


def test_rejects_unknown_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEMODEL_COMPUTE", "kubernetes")
    with pytest.raises(ValidationError, match="compute"):
        Settings()


def test_blob_datastore_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEMODEL_DATASTORE", "blob")
    with pytest.raises(ValidationError, match="SOMEMODEL_BLOB_CONNECTION_STRING"):
        Settings()


def test_aml_needs_its_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEMODEL_COMPUTE", "aml")
    monkeypatch.setenv("SOMEMODEL_DATASTORE", "blob")
    monkeypatch.setenv("SOMEMODEL_BLOB_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    with pytest.raises(ValidationError, match="SOMEMODEL_AML_SUBSCRIPTION_ID"):
        Settings()


def test_partial_service_principal_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEMODEL_AML_CLIENT_ID", "abc")
    with pytest.raises(ValidationError, match="SOMEMODEL_AML_CLIENT_SECRET"):
        Settings()


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEMODEL_BLOB_CONNECTION_STRING", "AccountKey=supersecret123")
    assert "supersecret123" not in repr(Settings())


def test_step_pip_pins_match_the_lock() -> None:
    """The compute runs the versions the tests ran: pins equal what uv.lock installed."""
    for requirement in Settings().pip_packages:
        name, pinned = requirement.split("==")
        assert version(name) == pinned, f"{name}: pinned {pinned}, locked {version(name)}"


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"SOMEMODEL_{name.upper()}" in example, name
