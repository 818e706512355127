#!/bin/sh
# azd preprovision hook (azure.yaml): what `azd provision` would otherwise find out half-way.
# - Flex Consumption runs in some regions only: stop at once with the list when AZURE_LOCATION is not one.
# - With KEYLESS_SUBNET_ID, virtual network integration needs the Microsoft.App provider registered: register it.
# - The Event Grid subscriptions need the deployed function (azure.yaml, postdeploy): while it is not there
#   (a new environment, or after `azd down`), provision without them.
# - Custom role names are unique per tenant: a role of the deployment's name made by someone else (by hand
#   from infra/roles, another deployment) stops the provision half-way (RoleDefinitionWithSameNameExists):
#   stop before. Roles of infra/roles' plain names (made by hand earlier) are named, not used.
set -eu
value() { azd env get-value "$1" 2>/dev/null || true; }

location=$(value AZURE_LOCATION)
if [ -n "$location" ]; then
  regions=$(az functionapp list-flexconsumption-locations --query "[].name" -o tsv 2>/dev/null || true)
  if [ -n "$regions" ] && ! printf '%s\n' "$regions" | grep -qix "$(printf '%s' "$location" | tr -d ' ')"; then
    echo "Flex Consumption does not run in '$location'. Pick one of these (azd env set AZURE_LOCATION <region>):" >&2
    printf '%s\n' "$regions" | tr '\n' ' ' >&2
    echo >&2
    exit 1
  fi
fi

# ARM's guid(): a version-5 UUID of the arguments joined by '-' under ARM's namespace (custom-role.bicep
# names each role guid(tenant().tenantId, role.Name, nameSuffix)).
arm_guid() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, uuid; print(uuid.uuid5(uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830"), sys.argv[1]))' "$1"
  elif uuidgen --help 2>&1 | grep -q -- --sha1; then
    uuidgen --sha1 --namespace 11fb06fb-712d-4ddd-98c7-e71bbd588830 --name "$1"
  fi
}
suffix=$(value KEYLESS_ROLE_NAME_SUFFIX)
[ -n "$suffix" ] || suffix=" ($(value AZURE_ENV_NAME))"
tenant=$(az account show --query tenantId -o tsv 2>/dev/null || true)
roles_dir="$(cd "$(dirname "$0")/../.." && pwd)/infra/roles"
for file in "$roles_dir"/*.json; do
  base=$(sed -n 's/^ *"Name": *"\([^"]*\)".*/\1/p' "$file" | head -n 1)
  [ -n "$base" ] || continue
  name="$base$suffix"
  found=$(az role definition list --custom-role-only true --name "$name" --query "[].name" -o tsv 2>/dev/null || true)
  if [ -n "$found" ] && [ -n "$tenant" ]; then
    ours=$(arm_guid "$tenant-$base-$suffix" || true)
    if [ -n "$ours" ] && ! printf '%s\n' "$found" | grep -qix "$ours"; then
      {
        echo "A custom role named '$name' exists in the tenant (id $(printf '%s' "$found" | head -n 1)), not made by this"
        echo "deployment (its id would be $ours): the provision would stop with RoleDefinitionWithSameNameExists."
        echo "Give this environment other role names (azd env set KEYLESS_ROLE_NAME_SUFFIX ' (<name>)'), or, if"
        echo "nothing uses that role, delete it: az role definition delete --name '$name'"
      } >&2
      exit 1
    fi
  fi
  if [ -n "$(az role definition list --custom-role-only true --name "$base" --query "[].name" -o tsv 2>/dev/null || true)" ]; then
    echo "Note: a custom role '$base' exists (made by hand from infra/roles?). This deployment makes and assigns"
    echo "'$name' and leaves that one not used; delete it once nothing uses it: az role definition delete --name '$base'"
  fi
done

# Private storage (KEYLESS_STORAGE_ENDPOINT_SUBNET_ID): the app reaches its storage's private endpoints
# through its virtual network integration, so both subnets belong to one network; a private endpoint lives
# in its network's subscription, and the template makes them in the deployment's.
endpoints=$(value KEYLESS_STORAGE_ENDPOINT_SUBNET_ID)
if [ -n "$endpoints" ]; then
  app_subnet=$(value KEYLESS_SUBNET_ID)
  network_of() { printf '%s' "$1" | sed 's#/subnets/[^/]*/*$##' | tr 'A-Z' 'a-z'; }
  problem=""
  if [ -z "$app_subnet" ]; then
    problem="it needs virtual network integration: set KEYLESS_SUBNET_ID (a subnet delegated to Microsoft.App/environments) in the same network"
  elif [ "$(network_of "$endpoints")" != "$(network_of "$app_subnet")" ]; then
    problem="it must be a subnet of the app's virtual network ($(network_of "$app_subnet"))"
  elif [ "$(printf '%s' "$endpoints" | tr 'A-Z' 'a-z')" = "$(printf '%s' "$app_subnet" | tr 'A-Z' 'a-z')" ]; then
    problem="it must be another subnet than KEYLESS_SUBNET_ID (a delegated subnet holds no private endpoints)"
  else
    sub=$(value AZURE_SUBSCRIPTION_ID)
    if [ -n "$sub" ] && [ "$(printf '%s' "$endpoints" | cut -d/ -f3 | tr 'A-Z' 'a-z')" != "$(printf '%s' "$sub" | tr 'A-Z' 'a-z')" ]; then
      problem="its virtual network must be in the deployment's subscription ($sub), where the private endpoints are made"
    fi
  fi
  if [ -n "$problem" ]; then
    echo "KEYLESS_STORAGE_ENDPOINT_SUBNET_ID (private storage): $problem." >&2
    echo "Or leave storage public (Entra-only access): azd env set KEYLESS_STORAGE_ENDPOINT_SUBNET_ID ''" >&2
    exit 1
  fi
fi

if [ -n "$(value KEYLESS_SUBNET_ID)" ]; then
  state=$(az provider show --namespace Microsoft.App --query registrationState -o tsv 2>/dev/null || true)
  if [ "$state" != "Registered" ]; then
    echo "Registering the Microsoft.App resource provider (virtual network integration of Flex Consumption)..."
    az provider register --namespace Microsoft.App --wait
  fi
fi

if [ "$(value KEYLESS_SUBSCRIBE_EVENTS)" = "true" ]; then
  group=$(value AZURE_RESOURCE_GROUP)
  app=$(value AZURE_FUNCTION_APP_NAME)
  if [ -z "$app" ] || ! az functionapp function show -g "$group" -n "$app" --function-name resource_events \
      --query name -o tsv >/dev/null 2>&1; then
    echo "The function resource_events is not deployed (yet): provisioning without the Event Grid subscriptions;"
    echo "the postdeploy hook adds them once the code is deployed."
    azd env set KEYLESS_SUBSCRIBE_EVENTS false
  fi
fi

echo "Note: custom role definitions, and the app's new identity, take a minute or two to replicate in Entra ID"
echo "and ARM. If this provision stops with RoleDefinitionDoesNotExist or PrincipalNotFound, run \`azd provision\`"
echo "again (or \`azd up\`): nothing else needs undoing."
