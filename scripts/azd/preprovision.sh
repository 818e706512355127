#!/bin/sh
# azd preprovision hook (azure.yaml): what `azd provision` would otherwise find out half-way.
# - Flex Consumption runs in some regions only: stop at once with the list when AZURE_LOCATION is not one.
# - With KEYLESS_SUBNET_ID, virtual network integration needs the Microsoft.App provider registered: register it.
# - The Event Grid subscriptions need the deployed function (azure.yaml, postdeploy): while it is not there
#   (a new environment, or after `azd down`), provision without them.
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
