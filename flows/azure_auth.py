"""Azure credentials: one choice of identity for every Azure client the flows build.

The blob datastore and the Azure ML client both authenticate with it, so a
service principal or a managed identity works the same way for storage and
for the workspace.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential


def azure_credential(
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> TokenCredential:
    """A service principal when all three are given, else `DefaultAzureCredential`.

    Never an interactive browser login: these runs are unattended, and a
    browser prompt on a worker would hang the run instead of failing it.
    """
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if tenant_id and client_id and client_secret:
        return ClientSecretCredential(
            tenant_id=tenant_id, client_id=client_id, client_secret=client_secret
        )
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
