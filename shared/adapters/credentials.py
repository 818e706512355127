"""The Azure credential: managed identity in Azure, `az login` (or env) locally."""

from __future__ import annotations

from typing import Any

from shared.domain.settings import Settings


def default_credential(settings: Settings) -> Any:
    from azure.identity import DefaultAzureCredential

    # Interactive browser sign-in is excluded: a Functions worker has no one to click.
    return DefaultAzureCredential(authority=settings.authority_host, exclude_interactive_browser_credential=True)
