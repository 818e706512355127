# azd postdeploy hook on Windows: the same as postdeploy.sh (read it for the why).
$ErrorActionPreference = 'Stop'
function Value($name) { $v = azd env get-value $name 2>$null; if ($LASTEXITCODE -eq 0) { $v } else { '' } }
if ((Value 'KEYLESS_SUBSCRIBE_EVENTS') -eq 'true') { exit 0 }

$group = Value 'AZURE_RESOURCE_GROUP'; $app = Value 'AZURE_FUNCTION_APP_NAME'; $url = Value 'KEYLESS_API_URL'
$attempts = if ($env:KEYLESS_HOOK_ATTEMPTS) { [int]$env:KEYLESS_HOOK_ATTEMPTS } else { 30 }
$pause = if ($env:KEYLESS_HOOK_PAUSE_SECONDS) { [int]$env:KEYLESS_HOOK_PAUSE_SECONDS } else { 10 }

for ($i = 1; ; $i++) {
  try { Invoke-WebRequest -Uri "$url/openapi.json" -TimeoutSec 30 -SkipHttpErrorCheck | Out-Null } catch { }
  $listed = az functionapp function show -g $group -n $app --function-name resource_events --query name -o tsv 2>$null
  $key = az functionapp keys list -g $group -n $app --query "systemKeys.eventgrid_extension" -o tsv 2>$null
  if ($listed -and $key) { break }
  if ($i -ge $attempts) {
    Write-Error ("After $attempts tries the function app $app does not list resource_events or has no Event Grid system " +
      "key: the host has not started with the deployed code. Look at its logs in Application Insights, then run " +
      "``azd deploy`` again: this hook then subscribes the events.")
    exit 1
  }
  Write-Host "Waiting for $app to start with resource_events and its Event Grid key ($i/$attempts)..."
  Start-Sleep -Seconds $pause
}

azd env set KEYLESS_SUBSCRIBE_EVENTS true
azd provision --no-prompt
if ($LASTEXITCODE -ne 0) {
  azd env set KEYLESS_SUBSCRIBE_EVENTS false
  Write-Error ('Provisioning the Event Grid subscriptions failed; KEYLESS_SUBSCRIBE_EVENTS stays false, so the next ' +
    '`azd up` or `azd deploy` tries again. A first run may fail while new role definitions replicate.')
  exit 1
}
