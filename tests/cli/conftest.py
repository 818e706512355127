"""The Functions tests' fixtures (Azurite, the managed-identity endpoint, the app's settings, the driver)."""

from tests.functions.conftest import app_env, host, identity_endpoint, storage  # noqa: F401
