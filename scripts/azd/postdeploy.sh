#!/bin/sh
# azd postdeploy hook (azure.yaml): subscribe resource_events to the ARM events. Event Grid accepts an
# AzureFunction destination only when the function is listed and the host's Event Grid system key exists, that
# is once the host has started with the new code (on Flex Consumption it may be scaled to zero): wake the app,
# wait for both (bounded), then provision with the subscriptions on. KEYLESS_SUBSCRIBE_EVENTS is set to true
# only when that provision succeeded, so a failed attempt is tried again by the next `azd up` or `azd deploy`.
#
# First, on every deploy (idempotent), the team page's sign-in: with KEYLESS_API_CLIENT_ID, App Service
# Authentication signs users in with the app's managed identity as the API registration's client credential
# (infra/modules/function-app.bicep; learn.microsoft.com/azure/app-service/configure-authentication-provider-aad,
# "Use a managed identity instead of a secret"). The registration needs the callback among its web redirect
# URIs (the others kept), ID tokens, and a federated credential trusting that identity. Only its owners may
# change it: when this fails, the deployment goes on and the commands to run are printed.
set -eu
value() { azd env get-value "$1" 2>/dev/null || true; }

page_sign_in() {
  client=$(value KEYLESS_API_CLIENT_ID)
  [ -n "$client" ] || return 0
  host=$(value KEYLESS_APP_HOST_NAME)
  principal=$(value KEYLESS_PRINCIPAL_ID)
  issuer=$(value KEYLESS_OPENID_ISSUER)
  if [ -z "$host" ] || [ -z "$principal" ] || [ -z "$issuer" ]; then
    echo "The team page's sign-in is not set up: KEYLESS_APP_HOST_NAME, KEYLESS_PRINCIPAL_ID or" >&2
    echo "KEYLESS_OPENID_ISSUER is missing from the azd environment; \`azd up\` sets them." >&2
    return 0
  fi
  callback="https://$host/.auth/login/aad/callback"
  # One credential per app identity (a registration may serve several environments; `azd down` and `azd up`
  # make a new identity): named after it, and found by its subject.
  credential="keyless-easy-auth-$(printf '%s' "$principal" | cut -c1-8)"
  parameters="{\"name\": \"$credential\", \"issuer\": \"$issuer\", \"subject\": \"$principal\", \"audiences\": [\"api://AzureADTokenExchange\"], \"description\": \"Keyless team page: App Service Authentication of $host signs users in with the app managed identity\"}"
  set -f # redirect URIs are words, never patterns
  update="" create="" unread=""
  if uris=$(az ad app show --id "$client" --query web.redirectUris -o tsv) &&
    tokens=$(az ad app show --id "$client" --query web.implicitGrantSettings.enableIdTokenIssuance -o tsv); then
    if ! printf '%s\n' "$uris" | grep -qxF "$callback" || [ "$tokens" != "true" ]; then
      # shellcheck disable=SC2086 # one argument per URI
      az ad app update --id "$client" --web-redirect-uris $uris "$callback" --enable-id-token-issuance true ||
        update=1
    fi
    if names=$(az ad app federated-credential list --id "$client" --query "[?subject=='$principal'].name" -o tsv); then
      if [ -z "$names" ]; then
        az ad app federated-credential create --id "$client" --parameters "$parameters" >/dev/null || create=1
      fi
    else
      create=1
    fi
  else
    uris="" update=1 create=1 unread=1
  fi
  if [ -n "$update$create" ]; then
    echo "The app registration $client could not be changed by the signed-in user: the team page's sign-in"
    echo "works once an owner of the registration has run (the deployment goes on without it):"
    echo
    if [ -n "$update" ]; then
      printf '  az ad app update --id %s --web-redirect-uris' "$client"
      for uri in $uris "$callback"; do printf " '%s'" "$uri"; done
      echo " --enable-id-token-issuance true"
      [ -z "$unread" ] || echo "  (keep the registration's other redirect URIs: add them to that list; it replaces it)"
    fi
    [ -z "$create" ] || echo "  az ad app federated-credential create --id $client --parameters '$parameters'"
    echo
  fi
  set +f
}

page_sign_in
[ "$(value KEYLESS_SUBSCRIBE_EVENTS)" = "true" ] && exit 0

group=$(value AZURE_RESOURCE_GROUP)
app=$(value AZURE_FUNCTION_APP_NAME)
url=$(value KEYLESS_API_URL)
attempts=${KEYLESS_HOOK_ATTEMPTS:-30}
pause=${KEYLESS_HOOK_PAUSE_SECONDS:-10}

i=0
while :; do
  i=$((i + 1))
  # Any request starts the host (the API answers 401 without a token: that is enough).
  curl -s -o /dev/null --max-time 30 "$url/openapi.json" || true
  listed=$(az functionapp function show -g "$group" -n "$app" --function-name resource_events --query name -o tsv 2>/dev/null || true)
  key=$(az functionapp keys list -g "$group" -n "$app" --query "systemKeys.eventgrid_extension" -o tsv 2>/dev/null || true)
  if [ -n "$listed" ] && [ -n "$key" ]; then
    break
  fi
  if [ "$i" -ge "$attempts" ]; then
    echo "After $attempts tries the function app $app does not list resource_events${listed:+ (listed)} or has no Event Grid" >&2
    echo "system key${key:+ (present)}: the host has not started with the deployed code. Look at its logs in" >&2
    echo "Application Insights, then run \`azd deploy\` again: this hook then subscribes the events." >&2
    exit 1
  fi
  echo "Waiting for $app to start with resource_events and its Event Grid key ($i/$attempts)..."
  sleep "$pause"
done

azd env set KEYLESS_SUBSCRIBE_EVENTS true
if ! azd provision --no-prompt; then
  azd env set KEYLESS_SUBSCRIBE_EVENTS false
  echo "Provisioning the Event Grid subscriptions failed; KEYLESS_SUBSCRIBE_EVENTS stays false, so the next" >&2
  echo "\`azd up\` or \`azd deploy\` tries again. A first run may fail while new role definitions replicate." >&2
  exit 1
fi
