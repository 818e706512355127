"""The azd hooks of azure.yaml (scripts/azd/*.sh), run with stand-ins for the azd, az and curl commands.

The stand-ins keep the azd environment in files, count calls and answer as the case needs; the hooks run
as they would under `azd up` (issue 21, findings 2, 3, 11 and 14)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "scripts" / "azd"

AZD = """#!/bin/sh
echo "azd $*" >> "$STATE/calls"
case "$1 $2" in
  "env get-value") [ -f "$STATE/env/$3" ] && cat "$STATE/env/$3" && exit 0; exit 1 ;;
  "env set") printf '%s' "$4" > "$STATE/env/$3"; exit 0 ;;
esac
[ "$1" = provision ] && exit "$(cat "$STATE/provision_rc" 2>/dev/null || echo 0)"
exit 0
"""
AZ = """#!/bin/sh
echo "az $*" >> "$STATE/calls"
case "$*" in
  *list-flexconsumption-locations*) printf 'eastus\\nnortheurope\\nswedencentral\\n' ;;
  *"function show"*)
    n=$(($(cat "$STATE/shows" 2>/dev/null || echo 0) + 1)); echo "$n" > "$STATE/shows"
    [ "$n" -ge "$(cat "$STATE/listed_after" 2>/dev/null || echo 999)" ] && echo resource_events && exit 0
    exit 3 ;;
  *"keys list"*) cat "$STATE/key" 2>/dev/null ;;
  *"provider show"*) echo NotRegistered ;;
  *"account show"*) echo "$TENANT" ;;
  *"ad app show"*)
    [ -f "$STATE/app_unreadable" ] && echo "ERROR: Insufficient privileges" >&2 && exit 1
    case "$*" in
      *redirectUris*) cat "$STATE/redirect_uris" 2>/dev/null ;;
      *enableIdTokenIssuance*) cat "$STATE/id_tokens" 2>/dev/null || echo false ;;
    esac ;;
  *"ad app update"*)
    [ -f "$STATE/app_locked" ] && echo "ERROR: Insufficient privileges" >&2 && exit 1
    : > "$STATE/redirect_uris"; taking=""
    for a in "$@"; do
      case "$a" in --web-redirect-uris) taking=1; continue ;; --*) taking="" ;; esac
      [ -n "$taking" ] && echo "$a" >> "$STATE/redirect_uris"
    done
    case "$*" in *"--enable-id-token-issuance true"*) echo true > "$STATE/id_tokens" ;; esac ;;
  *"federated-credential list"*)
    subject=$(echo "$*" | sed -n "s/.*subject=='\\([^']*\\)'.*/\\1/p")
    grep "\\"subject\\": *\\"$subject" "$STATE/credentials" 2>/dev/null | sed 's/.*"name": *"\\([^"]*\\)".*/\\1/' ;;
  *"federated-credential create"*)
    [ -f "$STATE/app_locked" ] && echo "ERROR: Insufficient privileges" >&2 && exit 1
    echo "$*" | sed "s/.*--parameters //" >> "$STATE/credentials" ;;
  *"role definition list"*)
    name=""; prev=""
    for a in "$@"; do [ "$prev" = "--name" ] && name=$a; prev=$a; done
    [ -f "$STATE/roles/$name" ] && cat "$STATE/roles/$name" ;;
esac
exit 0
"""
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PRINCIPAL = "9b1e3c55-2f0a-4d6e-8c3b-1a2b3c4d5e6f"  # the app identity's object id
API_APP = "3f2d7a11-0c4e-4b9e-9a57-6a1f0e0b2c11"  # the API's app registration (client id)
CALLBACK = "https://func-keyless-x.azurewebsites.net/.auth/login/aad/callback"
ARM_GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


def template_role_guid(role_name: str, suffix: str) -> str:
    """What custom-role.bicep names the role: guid(tenant().tenantId, role.Name, nameSuffix), ARM's guid()
    being a version-5 UUID of the arguments joined by '-' under ARM's namespace."""
    return str(uuid.uuid5(ARM_GUID_NAMESPACE, "-".join((TENANT, role_name, suffix))))


CURL = """#!/bin/sh
echo "curl $*" >> "$STATE/calls"
"""


@pytest.fixture
def world(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    (state / "env").mkdir(parents=True)
    bin_dir.mkdir()
    for name, text in (("azd", AZD), ("az", AZ), ("curl", CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = os.environ | {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STATE": str(state),
        "KEYLESS_HOOK_ATTEMPTS": "3",
        "KEYLESS_HOOK_PAUSE_SECONDS": "0",
        "TENANT": TENANT,
    }
    for key, value in {
        "AZURE_LOCATION": "swedencentral",
        "AZURE_ENV_NAME": "keyless-dev",
        "AZURE_RESOURCE_GROUP": "rg-dev",
        "AZURE_FUNCTION_APP_NAME": "func-keyless-x",
        "KEYLESS_API_URL": "https://func-keyless-x.azurewebsites.net/api",
        "KEYLESS_APP_HOST_NAME": "func-keyless-x.azurewebsites.net",
        "KEYLESS_PRINCIPAL_ID": PRINCIPAL,
        "KEYLESS_OPENID_ISSUER": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "AZURE_TENANT_ID": TENANT,
    }.items():
        (state / "env" / key).write_text(value)

    class World:
        def run(self, hook: str) -> subprocess.CompletedProcess[str]:
            return self.sh(str(HOOKS / hook))

        def sh(self, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", *args], env=env, capture_output=True, text=True, timeout=60)

        def env(self, key: str) -> str | None:
            path = state / "env" / key
            return path.read_text() if path.exists() else None

        def set(self, name: str, value: str) -> None:
            (state / name).parent.mkdir(parents=True, exist_ok=True)
            (state / name).write_text(value)

        def unset(self, name: str) -> None:
            (state / name).unlink()

        def read(self, name: str) -> str:
            return (state / name).read_text()

        def calls(self) -> list[str]:
            path = state / "calls"
            return path.read_text().splitlines() if path.exists() else []

    return World()


def test_azure_yaml_runs_the_hooks_and_resets_the_subscription_after_down():
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]
    assert hooks["preprovision"]["posix"]["run"] == "scripts/azd/preprovision.sh"
    assert hooks["postdeploy"]["posix"]["run"] == "scripts/azd/postdeploy.sh"
    assert hooks["preprovision"]["windows"]["run"] == "scripts/azd/preprovision.ps1"
    assert hooks["postdeploy"]["windows"]["run"] == "scripts/azd/postdeploy.ps1"
    for shell in ("posix", "windows"):
        assert hooks["postdown"][shell]["run"] == "azd env set KEYLESS_SUBSCRIBE_EVENTS false"
    for script in ("preprovision", "postdeploy"):
        assert (HOOKS / f"{script}.ps1").is_file()


def test_postdeploy_waits_for_the_function_and_its_key_then_subscribes(world):
    world.set("listed_after", "2")
    world.set("key", "k3y")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "true"
    calls = world.calls()
    assert any(c.startswith("curl ") and "openapi.json" in c for c in calls), "the app is woken"
    assert calls.index("azd env set KEYLESS_SUBSCRIBE_EVENTS true") < calls.index("azd provision --no-prompt")
    assert "k3y" not in result.stdout + result.stderr, "the key is never printed"


def test_postdeploy_gives_up_after_its_bound_with_a_clear_message(world):
    world.set("key", "k3y")  # the key, but the function never listed
    result = world.run("postdeploy.sh")
    assert result.returncode == 1
    assert "After 3 tries" in result.stderr and "resource_events" in result.stderr and "azd deploy" in result.stderr
    assert not any(c.startswith("azd provision") for c in world.calls())
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") is None


def test_postdeploy_does_not_mark_a_failed_provision_done(world):
    """Finding 2: a failed subscription provision is tried again by the next azd up / azd deploy."""
    world.set("listed_after", "1")
    world.set("key", "k3y")
    world.set("provision_rc", "1")
    result = world.run("postdeploy.sh")
    assert result.returncode == 1
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "false"
    assert "tries again" in result.stderr


def test_postdeploy_does_nothing_once_subscribed(world):
    world.set("env/KEYLESS_SUBSCRIBE_EVENTS", "true")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0
    assert [c for c in world.calls() if not c.startswith("azd env get-value")] == []


def test_preprovision_leaves_the_subscriptions_out_while_the_function_is_missing(world):
    """Finding 2: after `azd down` (or any environment without the code) the subscriptions wait for the deploy."""
    result = _with_env(world, "KEYLESS_SUBSCRIBE_EVENTS", "true", "preprovision.sh")
    assert result.returncode == 0, result.stderr
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "false"
    assert "RoleDefinitionDoesNotExist" in result.stdout, "finding 11: the output says a re-run may be needed"


def _with_env(world, key: str, value: str, hook: str) -> subprocess.CompletedProcess[str]:
    world.set(f"env/{key}", value)
    return world.run(hook)


def test_preprovision_keeps_the_subscriptions_when_the_function_is_there(world):
    world.set("listed_after", "1")
    result = _with_env(world, "KEYLESS_SUBSCRIBE_EVENTS", "true", "preprovision.sh")
    assert result.returncode == 0, result.stderr
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "true"


def test_preprovision_refuses_a_region_without_flex_consumption(world):
    """Finding 14."""
    result = _with_env(world, "AZURE_LOCATION", "westindia", "preprovision.sh")
    assert result.returncode == 1
    assert "Flex Consumption does not run in 'westindia'" in result.stderr and "swedencentral" in result.stderr


def test_preprovision_registers_microsoft_app_for_a_subnet(world):
    """Finding 14: virtual network integration needs the Microsoft.App provider."""
    subnet = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a"
    result = _with_env(world, "KEYLESS_SUBNET_ID", subnet, "preprovision.sh")
    assert result.returncode == 0, result.stderr
    assert "az provider register --namespace Microsoft.App --wait" in world.calls()
    plain = _with_env(world, "KEYLESS_SUBNET_ID", "", "preprovision.sh")
    assert plain.returncode == 0
    assert world.calls().count("az provider register --namespace Microsoft.App --wait") == 1


def test_preprovision_stops_on_a_role_of_the_same_name_it_did_not_make(world):
    """Finding 10: custom role names are unique per tenant; a role of the deployment's name with another id
    (made by hand from infra/roles, or by another deployment) would stop the provision half-way with
    RoleDefinitionWithSameNameExists: stop before, naming the role and the two ways out."""
    world.set("roles/Keyless Cluster Reader (keyless-dev)", "0d9ac8f6-3c4e-4a36-9c4f-1f1f1f1f1f1f\n")
    result = world.run("preprovision.sh")
    assert result.returncode == 1
    assert "'Keyless Cluster Reader (keyless-dev)'" in result.stderr
    assert "RoleDefinitionWithSameNameExists" in result.stderr and "KEYLESS_ROLE_NAME_SUFFIX" in result.stderr
    assert "az role definition delete --name 'Keyless Cluster Reader (keyless-dev)'" in result.stderr
    assert not any(c.startswith("azd env set") for c in world.calls())


def test_preprovision_lets_its_own_roles_be_and_names_hand_made_ones_without_the_suffix(world):
    """A re-run finds the roles it made (their ids are the template's); a role made by hand with the plain
    name of infra/roles does not block (the deployment's names carry the suffix) but is named, unused."""
    world.set("env/KEYLESS_ROLE_NAME_SUFFIX", " (prod-eu)")
    world.set("roles/Keyless Cluster Reader (prod-eu)", template_role_guid("Keyless Cluster Reader", " (prod-eu)"))
    world.set("roles/Keyless Identity Operator", "5f0e6c1a-0000-4000-8000-000000000001")
    result = world.run("preprovision.sh")
    assert result.returncode == 0, result.stderr
    assert "'Keyless Identity Operator'" in result.stdout and "not used" in result.stdout
    assert "Keyless Cluster Reader" not in result.stdout + result.stderr
    listed = "az role definition list --custom-role-only true --name Keyless Cluster Reader (prod-eu) --query [].name"
    assert f"{listed} -o tsv" in world.calls()


def test_the_documented_registration_issues_the_tokens_the_issuer_check_accepts():
    """Finding 6: openIdIssuer ends in /v2.0, so the registration docs/deploy.md gives must ask for v2 tokens."""
    bicep = (ROOT / "infra" / "modules" / "function-app.bicep").read_text()
    assert "${tenant().tenantId}/v2.0'" in bicep
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "--set api.requestedAccessTokenVersion=2" in deploy
    steps = [
        deploy.index(step) for step in ("1. **preprovision**", "2. **provision**", "3. **deploy**", "4. **postdeploy**")
    ]
    assert steps == sorted(steps)


NETWORK = "/subscriptions/0000000d-aaaa-bbbb-cccc-dddddddddddd/resourceGroups/rg-net/providers/Microsoft.Network"


@pytest.mark.parametrize(
    ("app_subnet", "endpoints", "said"),
    [
        ("", f"{NETWORK}/virtualNetworks/v1/subnets/pe", "needs virtual network integration: set KEYLESS_SUBNET_ID"),
        (
            f"{NETWORK}/virtualNetworks/v1/subnets/apps",
            f"{NETWORK}/virtualNetworks/v2/subnets/pe",
            "app's virtual network",
        ),
        (f"{NETWORK}/virtualNetworks/v1/subnets/apps", f"{NETWORK}/virtualNetworks/v1/subnets/apps", "another subnet"),
        (
            f"{NETWORK.replace('0000000d', '0000000e')}/virtualNetworks/v1/subnets/apps",
            f"{NETWORK.replace('0000000d', '0000000e')}/virtualNetworks/v1/subnets/pe",
            "deployment's subscription",
        ),
    ],
    ids=["no-integration", "other-network", "same-subnet", "other-subscription"],
)
def test_preprovision_refuses_private_storage_the_app_could_not_reach(world, app_subnet, endpoints, said):
    """Issue 21, storage network: private endpoints only in the network the app is integrated with."""
    world.set("env/AZURE_SUBSCRIPTION_ID", "0000000d-aaaa-bbbb-cccc-dddddddddddd")
    world.set("env/KEYLESS_SUBNET_ID", app_subnet)
    result = _with_env(world, "KEYLESS_STORAGE_ENDPOINT_SUBNET_ID", endpoints, "preprovision.sh")
    assert result.returncode == 1
    assert "KEYLESS_STORAGE_ENDPOINT_SUBNET_ID (private storage)" in result.stderr and said in result.stderr


def test_preprovision_accepts_private_storage_in_the_apps_network(world):
    world.set("env/AZURE_SUBSCRIPTION_ID", "0000000d-aaaa-bbbb-cccc-dddddddddddd")
    world.set("env/KEYLESS_SUBNET_ID", f"{NETWORK}/virtualNetworks/v1/subnets/apps")
    result = _with_env(
        world, "KEYLESS_STORAGE_ENDPOINT_SUBNET_ID", f"{NETWORK}/virtualNetworks/V1/subnets/pe", "preprovision.sh"
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ the team page's sign-in (no secret)


def _subscribing(world, client_id: str = API_APP) -> None:
    world.set("env/KEYLESS_API_CLIENT_ID", client_id)
    world.set("listed_after", "1")
    world.set("key", "k3y")


def _credential(command: str) -> dict:
    """The --parameters JSON of a federated-credential create call (made or printed)."""
    return json.loads(command.split("--parameters ", 1)[1].strip().strip("'"))


def test_postdeploy_adds_the_pages_callback_to_the_registration_and_trusts_the_apps_identity(world):
    """The team page signs in through App Service Authentication: the registration gets the callback, kept
    beside the redirect URIs it has, ID tokens, and a federated credential for the app's managed identity
    (OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID in function-app.bicep), so that no client secret exists."""
    _subscribing(world)
    world.set("redirect_uris", "https://other.example/cb\nhttp://localhost:7071/.auth/login/aad/callback\n")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    assert world.read("redirect_uris").splitlines() == [
        "https://other.example/cb",
        "http://localhost:7071/.auth/login/aad/callback",
        CALLBACK,
    ]
    assert world.read("id_tokens").strip() == "true"
    (create,) = [c for c in world.calls() if "federated-credential create" in c]
    assert f"--id {API_APP} " in create
    credential = _credential(create)
    assert credential["name"] == "keyless-easy-auth-9b1e3c55", "one per app identity"
    assert credential["issuer"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert credential["subject"] == PRINCIPAL
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "true", "the Event Grid part still runs"


def test_postdeploy_prepares_the_registration_once_and_checks_it_on_later_deploys(world):
    _subscribing(world)
    world.set("redirect_uris", "https://other.example/cb\n")
    assert world.run("postdeploy.sh").returncode == 0
    before = len(world.calls())
    again = world.run("postdeploy.sh")
    assert again.returncode == 0, again.stderr
    later = world.calls()[before:]
    assert any(c.startswith("az ad app show") for c in later), "an already subscribed deploy still checks"
    assert not [c for c in later if "ad app update" in c or "federated-credential create" in c]
    assert not any(c.startswith("azd provision") for c in later)
    assert world.read("redirect_uris").splitlines() == ["https://other.example/cb", CALLBACK]


def test_postdeploy_prints_the_commands_when_the_user_may_not_change_the_registration(world):
    """Only the registration's owners (or an admin) may change it: the deployment goes on, and the hook says
    exactly what to run, with the real values."""
    _subscribing(world)
    world.set("redirect_uris", "https://other.example/cb\n")
    world.set("app_locked", "")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    update = (
        f"az ad app update --id {API_APP} --web-redirect-uris 'https://other.example/cb' '{CALLBACK}'"
        " --enable-id-token-issuance true"
    )
    assert update in out
    (create,) = [line for line in out.splitlines() if "az ad app federated-credential create" in line]
    assert create.strip().startswith(f"az ad app federated-credential create --id {API_APP} --parameters '")
    credential = _credential(create)
    assert (credential["subject"], credential["issuer"]) == (
        PRINCIPAL,
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
    )
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "true", "the Event Grid part still runs"
    assert "azd provision --no-prompt" in world.calls()
    # The owner pastes them into a shell: they do what the hook would have done.
    world.unset("app_locked")
    pasted = world.sh("-c", f"{update}\n{create}")
    assert pasted.returncode == 0, pasted.stderr
    assert world.read("redirect_uris").splitlines() == ["https://other.example/cb", CALLBACK]
    assert [json.loads(line)["subject"] for line in world.read("credentials").splitlines()] == [PRINCIPAL]
    assert world.run("postdeploy.sh").stdout == "", "nothing left to do"


def test_postdeploy_prints_the_commands_when_it_cannot_even_read_the_registration(world):
    _subscribing(world)
    world.set("app_unreadable", "")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert f"az ad app update --id {API_APP} --web-redirect-uris '{CALLBACK}' --enable-id-token-issuance true" in out
    assert "keep the registration's other redirect URIs" in out
    assert f"az ad app federated-credential create --id {API_APP} --parameters '" in out
    assert not [c for c in world.calls() if "ad app update" in c or "federated-credential create" in c]
    assert world.env("KEYLESS_SUBSCRIBE_EVENTS") == "true"


def test_postdeploy_trusts_the_new_identity_after_azd_down_and_up(world):
    """`azd down` deletes the app's identity, `azd up` makes one with another principal id: the credential
    trusting the old one (it stays on the registration) is not the new one's."""
    _subscribing(world)
    world.set("redirect_uris", f"{CALLBACK}\n")
    world.set("id_tokens", "true")
    old = {"name": "keyless-easy-auth", "issuer": "x", "subject": "0b5e7e1e-0000-4000-8000-000000000000"}
    world.set("credentials", json.dumps(old) + "\n")
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    assert not [c for c in world.calls() if "ad app update" in c]
    (create,) = [c for c in world.calls() if "federated-credential create" in c]
    assert _credential(create)["subject"] == PRINCIPAL


@pytest.mark.parametrize("client_id", ["", None], ids=["empty", "unset"])
def test_postdeploy_leaves_registrations_alone_without_an_api_client_id(world, client_id):
    world.set("listed_after", "1")
    world.set("key", "k3y")
    if client_id is not None:
        world.set("env/KEYLESS_API_CLIENT_ID", client_id)
    result = world.run("postdeploy.sh")
    assert result.returncode == 0, result.stderr
    assert not [c for c in world.calls() if c.startswith("az ad ")]
    assert "redirect" not in (result.stdout + result.stderr).lower()


def test_the_windows_hook_prepares_the_registration_the_same_way():
    """pwsh is not on our machines: at least the Windows twin makes the same calls with the same values."""
    ps1 = (HOOKS / "postdeploy.ps1").read_text()
    for needle in (
        "KEYLESS_API_CLIENT_ID",
        "KEYLESS_APP_HOST_NAME",
        "KEYLESS_PRINCIPAL_ID",
        "KEYLESS_OPENID_ISSUER",
        "/.auth/login/aad/callback",
        "az ad app show",
        "web.redirectUris",
        "web.implicitGrantSettings.enableIdTokenIssuance",
        "--web-redirect-uris",
        "--enable-id-token-issuance",
        "az ad app federated-credential list",
        "az ad app federated-credential create",
        "keyless-easy-auth-",
        "[?subject==",
        "api://AzureADTokenExchange",
    ):
        assert needle in ps1, needle
    assert ps1.index("KEYLESS_API_CLIENT_ID") < ps1.index("KEYLESS_SUBSCRIBE_EVENTS"), "also on later deploys"
