"""Signing a person in to a deployed Keyless's API (the `keyless` command's API mode).

The API sits behind App Service Authentication (Entra ID): a call carries an access token for the API's
app registration, `api://<client id>/.default`. Locally (http://localhost, `func start` with the dev
principal) no token is needed, and none is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def needs_token(api_url: str) -> bool:
    """Only a local Keyless (the dev principal stands in) is called without a token."""
    return (urlsplit(api_url).hostname or "").lower() not in LOCAL_HOSTS


def scope_for(client_id: str) -> str:
    """The API's scope: its app registration's application id URI, `.default`."""
    client_id = client_id.strip()
    if not client_id:
        raise ValueError("api-client-id: required for a Keyless outside localhost (KEYLESS_API_CLIENT_ID)")
    return (
        client_id
        if client_id.startswith("api://") and client_id.endswith("/.default")
        else (f"{client_id.rstrip('/')}/.default" if client_id.startswith("api://") else f"api://{client_id}/.default")
    )


def token(client_id: str, prompt: Callable[[str], None], device_code: bool = True) -> str:
    """A token for the API as the person signed in (the Azure CLI's sign-in, else a device code);
    NoCredential naming the fix."""
    from shared.adapters.credentials import user_token

    return user_token(scope_for(client_id), prompt, device_code)
