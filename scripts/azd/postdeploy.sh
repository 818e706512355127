#!/bin/sh
# azd postdeploy hook (azure.yaml): subscribe resource_events to the ARM events. Event Grid accepts an
# AzureFunction destination only when the function is listed and the host's Event Grid system key exists, that
# is once the host has started with the new code (on Flex Consumption it may be scaled to zero): wake the app,
# wait for both (bounded), then provision with the subscriptions on. KEYLESS_SUBSCRIBE_EVENTS is set to true
# only when that provision succeeded, so a failed attempt is tried again by the next `azd up` or `azd deploy`.
set -eu
value() { azd env get-value "$1" 2>/dev/null || true; }
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
