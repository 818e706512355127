# azd preprovision hook on Windows: the same checks as preprovision.sh (read it for the why).
$ErrorActionPreference = 'Stop'
function Value($name) { $v = azd env get-value $name 2>$null; if ($LASTEXITCODE -eq 0) { $v } else { '' } }

$location = Value 'AZURE_LOCATION'
if ($location) {
  $regions = @(az functionapp list-flexconsumption-locations --query "[].name" -o tsv 2>$null)
  if ($regions.Count -gt 0 -and -not ($regions -contains $location.Replace(' ', ''))) {
    Write-Error "Flex Consumption does not run in '$location'. Pick one of these (azd env set AZURE_LOCATION <region>): $($regions -join ' ')"
    exit 1
  }
}

if (Value 'KEYLESS_SUBNET_ID') {
  $state = az provider show --namespace Microsoft.App --query registrationState -o tsv 2>$null
  if ($state -ne 'Registered') {
    Write-Host 'Registering the Microsoft.App resource provider (virtual network integration of Flex Consumption)...'
    az provider register --namespace Microsoft.App --wait
  }
}

if ((Value 'KEYLESS_SUBSCRIBE_EVENTS') -eq 'true') {
  $group = Value 'AZURE_RESOURCE_GROUP'; $app = Value 'AZURE_FUNCTION_APP_NAME'
  $listed = if ($app) { az functionapp function show -g $group -n $app --function-name resource_events --query name -o tsv 2>$null } else { '' }
  if (-not $listed) {
    Write-Host 'The function resource_events is not deployed (yet): provisioning without the Event Grid subscriptions;'
    Write-Host 'the postdeploy hook adds them once the code is deployed.'
    azd env set KEYLESS_SUBSCRIBE_EVENTS false
  }
}

Write-Host 'Note: custom role definitions, and the app''s new identity, take a minute or two to replicate in Entra ID'
Write-Host 'and ARM. If this provision stops with RoleDefinitionDoesNotExist or PrincipalNotFound, run `azd provision`'
Write-Host 'again (or `azd up`): nothing else needs undoing.'
