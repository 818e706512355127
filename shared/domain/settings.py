"""One frozen settings object, read from environment variables once and validated.

Every key is listed, with its default, in local.settings.sample.json. Endpoints are settings
so that sovereign clouds work, and so that tests can point the real SDKs at local emulators.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Mapping

from shared.domain import retry_policy
from shared.domain.binding import OPENAI_USER_ROLE_ID, resolve_role
from shared.domain.errors import PermanentError
from shared.domain.ids import SUBSCRIPTION_ID
from shared.domain.storage import StorageConnection
from shared.domain.storage import read as read_storage

AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
"""The Entra application of every AKS API server (the audience of kubelogin tokens)."""

WORK_QUEUE = "keyless-work"
POISON_QUEUE = WORK_QUEUE + "-poison"  # where the host moves a message after maxDequeueCount failures
"""The work queue's name: fixed, because the queue trigger's binding names it at indexing time."""

DEFAULT_SYSTEM_NAMESPACES = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "gatekeeper-system",
    "azure-workload-identity-system",
)
DEFAULT_API_KEY_VARIABLES = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY", "OPENAI_API_KEY")
DEFAULT_API_KEY_SECRET_PATTERNS = ("*openai*key*", "*openai*secret*")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(PermanentError):
    """A setting is missing or malformed: the app cannot start doing work."""


KNOWN_KEYS = (
    "KEYLESS_LIST_SCAN_ROWS",
    "KEYLESS_ARM_ENDPOINT",
    "KEYLESS_ARM_SCOPE",
    "KEYLESS_AUTHORITY_HOST",
    "KEYLESS_AKS_SERVER_APP_ID",
    "KEYLESS_CA_BUNDLE",
    "KEYLESS_IDENTITY_SUBSCRIPTION_ID",
    "KEYLESS_IDENTITY_RESOURCE_GROUP",
    "KEYLESS_ROLE_ALLOWLIST",
    "KEYLESS_DEFAULT_ROLE",
    "KEYLESS_ENABLE_CLUSTER_FEATURES",
    "KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS",
    "KEYLESS_ALLOW_LOCAL_ACCOUNTS",
    "KEYLESS_CREATE_NAMESPACES",
    "KEYLESS_FIELD_MANAGER",
    "KEYLESS_KUBE_CREDENTIALS_TTL_SECONDS",
    "KEYLESS_SWEEP_SCHEDULE",
    "KEYLESS_TABLE_NAME",
    "KEYLESS_ACCESS_POLICY",
    "KEYLESS_DEV_PRINCIPAL",
    "KEYLESS_SYSTEM_NAMESPACES",
    "KEYLESS_ALLOWED_SUBSCRIPTIONS",
    "KEYLESS_REVOKE_AFTER_SECONDS",
    "KEYLESS_REMOVED_RETENTION_DAYS",
    "KEYLESS_DEFAULT_MAX_BINDINGS",
    "KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER",
    "KEYLESS_ROLE_ASSIGNMENT_HEADROOM",
    "KEYLESS_ARM_READ_CACHE_SECONDS",
    "KEYLESS_REQUEST_TIMEOUT_SECONDS",
    "KEYLESS_ARM_PACING_SCALE",
    "KEYLESS_SHARED_PACING",
    "KEYLESS_PACING_FALLBACK_SHARE",
    "KEYLESS_RETRY_DELAY_SCALE",
    "KEYLESS_API_KEY_VARIABLES",
    "KEYLESS_API_KEY_SECRET_PATTERNS",
    "KEYLESS_ENFORCE_KEYLESS_ACCOUNTS",
    "KEYLESS_PROVE_ACCESS",
    "KEYLESS_RUN_COMMAND_FALLBACK",
    "KEYLESS_RUN_COMMAND_WAIT_SECONDS",
    "KEYLESS_OUTCOME_TOPIC_ENDPOINT",
    "KEYLESS_OUTCOME_EVENT_SCHEMA",
)
"""Every KEYLESS_* setting, as local.settings.sample.json documents them (a unit test keeps the two equal);
KEYLESS_SWEEP_SCHEDULE is read by the timer trigger's binding (handlers.sweep), the rest here."""


def unknown_keys(env: Mapping[str, str]) -> list[str]:
    """A message for each KEYLESS_* variable that is no setting (a misspelt one is silently ignored
    otherwise), naming the closest known one. The caller logs them once, when the app starts."""
    import difflib

    found = []
    for key in sorted(k for k in env if k.upper().startswith("KEYLESS_") and k not in KNOWN_KEYS):
        close = difflib.get_close_matches(key.upper(), KNOWN_KEYS, n=1, cutoff=0.8)
        found.append(f"{key}: not a Keyless setting" + (f"; did you mean {close[0]}?" if close else ""))
    return found


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{key}: expected true or false, got {raw!r}")


def _float(env: Mapping[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key}: must be >= {minimum}")
    return value


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    """A finite number > 0."""
    value = _float(env, key, default)
    if not 0 < value < math.inf:  # nan fails this too
        raise SettingsError(f"{key}: must be a positive number, got {env.get(key)!r}")
    return value


def _url(env: Mapping[str, str], key: str, default: str) -> str:
    value = (env.get(key) or default).strip().rstrip("/")
    if not value.startswith("https://"):
        raise SettingsError(f"{key}: must be an https:// URL, got {value!r}")
    return value


def _https_url(env: Mapping[str, str], key: str) -> str:
    """An optional https endpoint; never one carrying credentials (user info or a query string)."""
    value = (env.get(key) or "").strip()
    if not value:
        return ""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise SettingsError(f"{key}: must be an https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SettingsError(f"{key}: must not carry credentials or a query string (Keyless uses Entra ID, never keys)")
    return value


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{key}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key}: must be >= {minimum}")
    return value


def _subscriptions(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    items = _list(env, key)
    for item in items:
        if not SUBSCRIPTION_ID.fullmatch(item):
            raise SettingsError(f"{key}: {item!r} is not a subscription id (a GUID in its dashed form)")
    return tuple(i.lower() for i in items)


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = (env.get(key) or choices[0]).strip().lower()
    if value not in choices:
        raise SettingsError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (env.get(key) or "").replace(";", ",").split(",") if item.strip())


def _share(env: Mapping[str, str], key: str, default: float) -> float:
    value = _float(env, key, default)
    if not 0 < value <= 1:
        raise SettingsError(f"{key}: a share of the limits, > 0 and <= 1")
    return value


def _shared_pacing(env: Mapping[str, str]) -> bool:
    """KEYLESS_SHARED_PACING: on by default when there is storage to share the budget through."""
    storage = bool((env.get("AzureWebJobsStorage") or env.get("AzureWebJobsStorage__accountName") or "").strip())
    value = _bool(env, "KEYLESS_SHARED_PACING", storage)
    if value and not storage:
        raise SettingsError("KEYLESS_SHARED_PACING: needs AzureWebJobsStorage (the budget is kept in a table)")
    return value


def _dev_principal(env: Mapping[str, str]) -> str | None:
    """A development caller for local runs; impossible to turn on inside Azure App Service."""
    value = (env.get("KEYLESS_DEV_PRINCIPAL") or "").strip() or None
    if value and (env.get("WEBSITE_SITE_NAME") or env.get("WEBSITE_INSTANCE_ID")):
        raise SettingsError("KEYLESS_DEV_PRINCIPAL: refused inside Azure (WEBSITE_SITE_NAME is set); remove it")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    arm_endpoint: str = "https://management.azure.com"
    arm_scope: str = "https://management.azure.com/.default"
    authority_host: str = "https://login.microsoftonline.com"
    aks_server_app_id: str = AKS_SERVER_APP_ID
    ca_bundle: str | None = None
    identity_subscription_id: str | None = None
    identity_resource_group: str | None = None
    role_allowlist: tuple[str, ...] = (OPENAI_USER_ROLE_ID,)
    default_role: str = OPENAI_USER_ROLE_ID
    enable_cluster_features: bool = True
    cluster_update_wait_seconds: float = 0.0
    allow_local_accounts: bool = False
    create_namespaces: bool = False
    field_manager: str = "keyless"
    kube_credentials_ttl_seconds: float = 900.0
    request_timeout_seconds: float = 30.0  # read timeout of one ARM / Kubernetes call (connect: at most 10 s)
    storage_connection_string: str | None = dataclasses.field(default=None, repr=False)
    storage_account_name: str | None = None
    # AzureWebJobsStorage as the Functions host reads it: connection string, else service URIs / account
    # name with __credential and __clientId (shared.domain.storage); the two fields above mirror it.
    storage: StorageConnection = StorageConnection()
    # The user-assigned identity DefaultAzureCredential signs in as in Azure: AZURE_CLIENT_ID, else the
    # storage connection's __clientId when its __credential is managedidentity (one app identity).
    managed_identity_client_id: str | None = None
    table_name: str = "keylessbindings"
    # --- who may onboard what (docs/security.md) ---
    access_policy: str | None = None  # JSON text, or a path to a JSON file
    dev_principal: str | None = None  # local runs only; refused when WEBSITE_SITE_NAME is set
    system_namespaces: tuple[str, ...] = DEFAULT_SYSTEM_NAMESPACES
    allowed_subscriptions: tuple[str, ...] = ()  # empty: any subscription
    revoke_after_seconds: float = 3600.0  # a binding whose grant or consent was withdrawn is offboarded after this
    removed_retention_days: float = 30.0  # a removed binding's record is deleted from the ledger this long after
    default_max_bindings: int = 250  # live bindings per policy rule that names no maxBindings
    max_tag_bindings_per_cluster: int = 25  # live bindings one cluster's tags may ask for
    role_assignment_headroom: int = 200  # places of Azure's 4,000 per subscription a new binding leaves; 0: no count
    list_scan_rows: int = 1000  # ledger rows one GET /api/onboardings reads at most, however few the caller may see
    in_azure: bool = False  # WEBSITE_SITE_NAME is set: running in App Service / Functions
    app_service_auth: bool = False  # WEBSITE_AUTH_ENABLED: App Service Authentication is on
    # --- reads and throttling ---
    arm_read_cache_seconds: float = 20.0
    arm_pacing_scale: float = 1.0  # Azure's published ARM/MSI limits times this; 0 = no client-side pacing
    shared_pacing: bool = False  # pace against one budget kept in Azure Tables, shared by every process
    pacing_fallback_share: float = 0.25  # of the limits, per process, while that table cannot be reached
    retry_delay_scale: float = 1.0  # every "not yet" re-queue delay and run lease times this
    # --- workloads, verification and keyless accounts ---
    api_key_variables: tuple[str, ...] = DEFAULT_API_KEY_VARIABLES
    api_key_secret_patterns: tuple[str, ...] = DEFAULT_API_KEY_SECRET_PATTERNS
    enforce_keyless_accounts: bool = False
    prove_access: bool = False  # verification exchanges the workload's own token (shared.domain.access_proof)
    run_command_fallback: bool = True
    run_command_wait_seconds: float = 60.0  # how long a run waits for one run command before handing back
    # --- outcome events ---
    outcome_topic_endpoint: str = ""  # an Event Grid topic's endpoint; "" = no outcome events
    outcome_event_schema: str = "cloudevents"  # the topic's input schema: cloudevents | eventgrid

    def __repr__(self) -> str:  # never print the storage connection string
        return f"Settings(arm_endpoint={self.arm_endpoint!r}, table_name={self.table_name!r}, ...)"

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds for one ARM or Kubernetes call (shared.domain.retry_policy.call_timeouts):
        a silent server or a black-holed address never holds a worker for long."""
        return retry_policy.call_timeouts(self.request_timeout_seconds)

    @property
    def aks_server_scope(self) -> str:
        return f"{self.aks_server_app_id}/.default"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        arm = _url(env, "KEYLESS_ARM_ENDPOINT", cls.arm_endpoint)
        allow = tuple(
            r.strip().lower()
            for r in (env.get("KEYLESS_ROLE_ALLOWLIST") or OPENAI_USER_ROLE_ID).split(",")
            if r.strip()
        )
        try:
            for role in allow:
                resolve_role(role, allow, field="KEYLESS_ROLE_ALLOWLIST")
            default_role = resolve_role(
                env.get("KEYLESS_DEFAULT_ROLE") or allow[0], allow, field="KEYLESS_DEFAULT_ROLE"
            )
        except PermanentError as exc:
            raise SettingsError(exc.reason) from None
        field_manager = (env.get("KEYLESS_FIELD_MANAGER") or cls.field_manager).strip()
        if not field_manager or len(field_manager) > 128:
            raise SettingsError("KEYLESS_FIELD_MANAGER: 1 to 128 printable characters")
        ca_bundle = (env.get("KEYLESS_CA_BUNDLE") or "").strip() or None
        if ca_bundle and not os.path.isfile(ca_bundle):
            raise SettingsError(f"KEYLESS_CA_BUNDLE: no file at {ca_bundle!r}")
        try:
            store = read_storage(env, arm)
        except PermanentError as exc:
            raise SettingsError(exc.reason) from None
        app_client_id = (env.get("AZURE_CLIENT_ID") or "").strip() or None
        if not app_client_id and store.managed_identity:
            app_client_id = store.client_id
        return cls(
            arm_endpoint=arm,
            arm_scope=(env.get("KEYLESS_ARM_SCOPE") or f"{arm}/.default").strip(),
            authority_host=_url(env, "KEYLESS_AUTHORITY_HOST", cls.authority_host),
            aks_server_app_id=(env.get("KEYLESS_AKS_SERVER_APP_ID") or AKS_SERVER_APP_ID).strip(),
            ca_bundle=ca_bundle,
            identity_subscription_id=(env.get("KEYLESS_IDENTITY_SUBSCRIPTION_ID") or "").strip() or None,
            identity_resource_group=(env.get("KEYLESS_IDENTITY_RESOURCE_GROUP") or "").strip() or None,
            role_allowlist=allow,
            default_role=default_role,
            enable_cluster_features=_bool(env, "KEYLESS_ENABLE_CLUSTER_FEATURES", True),
            cluster_update_wait_seconds=_float(env, "KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS", 0.0),
            allow_local_accounts=_bool(env, "KEYLESS_ALLOW_LOCAL_ACCOUNTS", False),
            create_namespaces=_bool(env, "KEYLESS_CREATE_NAMESPACES", False),
            field_manager=field_manager,
            kube_credentials_ttl_seconds=_float(env, "KEYLESS_KUBE_CREDENTIALS_TTL_SECONDS", 900.0),
            request_timeout_seconds=_float(env, "KEYLESS_REQUEST_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            storage_connection_string=store.connection_string,
            storage_account_name=store.account_name,
            storage=store,
            managed_identity_client_id=app_client_id,
            table_name=(env.get("KEYLESS_TABLE_NAME") or cls.table_name).strip(),
            access_policy=(env.get("KEYLESS_ACCESS_POLICY") or "").strip() or None,
            dev_principal=_dev_principal(env),
            system_namespaces=DEFAULT_SYSTEM_NAMESPACES + _list(env, "KEYLESS_SYSTEM_NAMESPACES"),
            allowed_subscriptions=_subscriptions(env, "KEYLESS_ALLOWED_SUBSCRIPTIONS"),
            revoke_after_seconds=_float(env, "KEYLESS_REVOKE_AFTER_SECONDS", 3600.0),
            removed_retention_days=_positive(env, "KEYLESS_REMOVED_RETENTION_DAYS", 30.0),
            default_max_bindings=_int(env, "KEYLESS_DEFAULT_MAX_BINDINGS", 250),
            max_tag_bindings_per_cluster=_int(env, "KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER", 25),
            role_assignment_headroom=_int(env, "KEYLESS_ROLE_ASSIGNMENT_HEADROOM", 200),
            list_scan_rows=_int(env, "KEYLESS_LIST_SCAN_ROWS", 1000, minimum=1),
            in_azure=bool((env.get("WEBSITE_SITE_NAME") or "").strip()),
            app_service_auth=_bool(env, "WEBSITE_AUTH_ENABLED", False),
            arm_read_cache_seconds=_float(env, "KEYLESS_ARM_READ_CACHE_SECONDS", 20.0),
            arm_pacing_scale=_float(env, "KEYLESS_ARM_PACING_SCALE", 1.0),
            shared_pacing=_shared_pacing(env),
            pacing_fallback_share=_share(env, "KEYLESS_PACING_FALLBACK_SHARE", 0.25),
            retry_delay_scale=_float(env, "KEYLESS_RETRY_DELAY_SCALE", 1.0, minimum=0.001),
            api_key_variables=_list(env, "KEYLESS_API_KEY_VARIABLES") or DEFAULT_API_KEY_VARIABLES,
            api_key_secret_patterns=_list(env, "KEYLESS_API_KEY_SECRET_PATTERNS") or DEFAULT_API_KEY_SECRET_PATTERNS,
            enforce_keyless_accounts=_bool(env, "KEYLESS_ENFORCE_KEYLESS_ACCOUNTS", False),
            prove_access=_bool(env, "KEYLESS_PROVE_ACCESS", False),
            run_command_fallback=_bool(env, "KEYLESS_RUN_COMMAND_FALLBACK", True),
            run_command_wait_seconds=_float(env, "KEYLESS_RUN_COMMAND_WAIT_SECONDS", 60.0, minimum=1.0),
            outcome_topic_endpoint=_https_url(env, "KEYLESS_OUTCOME_TOPIC_ENDPOINT"),
            outcome_event_schema=_choice(env, "KEYLESS_OUTCOME_EVENT_SCHEMA", ("cloudevents", "eventgrid")),
        )

    def require_storage(self) -> None:
        """The work queue and the ledger can be reached (SettingsError names the key to set)."""
        problem = self.storage.problem()
        if problem:
            raise SettingsError(problem)
