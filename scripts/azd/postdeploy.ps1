# azd postdeploy hook on Windows: the same as postdeploy.sh (read it for the why).
$ErrorActionPreference = 'Stop'
function Value($name) { $v = azd env get-value $name 2>$null; if ($LASTEXITCODE -eq 0) { $v } else { '' } }

# The team page's sign-in, on every deploy (idempotent): the API registration gets the callback among its web
# redirect URIs (the others kept), ID tokens, and a federated credential trusting the app's managed identity.
# When the signed-in user may not change it, the deployment goes on and the commands are printed (for a POSIX
# shell or Azure Cloud Shell, as postdeploy.sh prints them).
function Set-PageSignIn {
  $ErrorActionPreference = 'Continue' # az's refusals are answered below, by exit code
  $client = Value 'KEYLESS_API_CLIENT_ID'
  if (-not $client) { return }
  $hostName = Value 'KEYLESS_APP_HOST_NAME'; $principal = Value 'KEYLESS_PRINCIPAL_ID'; $issuer = Value 'KEYLESS_OPENID_ISSUER'
  if (-not ($hostName -and $principal -and $issuer)) {
    Write-Warning ("The team page's sign-in is not set up: KEYLESS_APP_HOST_NAME, KEYLESS_PRINCIPAL_ID or " +
      'KEYLESS_OPENID_ISSUER is missing from the azd environment; `azd up` sets them.')
    return
  }
  $callback = "https://$hostName/.auth/login/aad/callback"
  # One credential per app identity (several environments, or a new identity after `azd down`), found by subject.
  $credential = 'keyless-easy-auth-' + $principal.Substring(0, [Math]::Min(8, $principal.Length))
  $parameters = [ordered]@{
    name = $credential; issuer = $issuer; subject = $principal; audiences = @('api://AzureADTokenExchange')
    description = "Keyless team page: App Service Authentication of $hostName signs users in with the app managed identity"
  } | ConvertTo-Json -Compress
  $update = $false; $create = $false; $unread = $false
  $uris = @(az ad app show --id $client --query web.redirectUris -o tsv)
  $readOk = $LASTEXITCODE -eq 0
  $tokens = az ad app show --id $client --query web.implicitGrantSettings.enableIdTokenIssuance -o tsv
  if ($readOk -and $LASTEXITCODE -eq 0) {
    $uris = @($uris | Where-Object { $_ } | ForEach-Object { $_.Trim() })
    if (($uris -notcontains $callback) -or ($tokens -ne 'true')) {
      az ad app update --id $client --web-redirect-uris @($uris + $callback) --enable-id-token-issuance true
      if ($LASTEXITCODE -ne 0) { $update = $true }
    }
    $names = @(az ad app federated-credential list --id $client --query "[?subject=='$principal'].name" -o tsv)
    if ($LASTEXITCODE -ne 0) { $create = $true }
    elseif (-not ($names | Where-Object { $_ -and $_.Trim() })) {
      # A file, not an inline argument: PowerShell's quoting of JSON for native commands differs by version.
      $file = New-TemporaryFile
      try {
        Set-Content -Path $file.FullName -Value $parameters -Encoding ascii
        az ad app federated-credential create --id $client --parameters $file.FullName | Out-Null
        if ($LASTEXITCODE -ne 0) { $create = $true }
      } finally { Remove-Item $file.FullName -ErrorAction SilentlyContinue }
    }
  } else {
    $uris = @(); $update = $true; $create = $true; $unread = $true
  }
  if ($update -or $create) {
    Write-Host ("The app registration $client could not be changed by the signed-in user: the team page's sign-in " +
      'works once an owner of the registration has run (the deployment goes on without it):')
    Write-Host ''
    if ($update) {
      $quoted = (@($uris + $callback) | ForEach-Object { "'$_'" }) -join ' '
      Write-Host "  az ad app update --id $client --web-redirect-uris $quoted --enable-id-token-issuance true"
      if ($unread) { Write-Host "  (keep the registration's other redirect URIs: add them to that list; it replaces it)" }
    }
    if ($create) { Write-Host "  az ad app federated-credential create --id $client --parameters '$parameters'" }
    Write-Host ''
  }
}

try { Set-PageSignIn } catch { Write-Warning "The team page's sign-in was not set up: $_" }
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
