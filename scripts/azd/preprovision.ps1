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

# ARM's guid(): a version-5 UUID of the arguments joined by '-' under ARM's namespace.
function ArmGuid($text) {
  $ns = [Guid]::Parse('11fb06fb-712d-4ddd-98c7-e71bbd588830').ToByteArray()
  [Array]::Reverse($ns, 0, 4); [Array]::Reverse($ns, 4, 2); [Array]::Reverse($ns, 6, 2)
  $hash = [Security.Cryptography.SHA1]::Create().ComputeHash([byte[]]($ns + [Text.Encoding]::UTF8.GetBytes($text)))
  $b = $hash[0..15]
  $b[6] = ($b[6] -band 0x0F) -bor 0x50; $b[8] = ($b[8] -band 0x3F) -bor 0x80
  [Array]::Reverse($b, 0, 4); [Array]::Reverse($b, 4, 2); [Array]::Reverse($b, 6, 2)
  ([Guid]::new([byte[]]$b)).ToString()
}
$suffix = Value 'KEYLESS_ROLE_NAME_SUFFIX'
if (-not $suffix) { $suffix = " ($(Value 'AZURE_ENV_NAME'))" }
$tenant = az account show --query tenantId -o tsv 2>$null
foreach ($file in Get-ChildItem (Join-Path $PSScriptRoot '..' '..' 'infra' 'roles') -Filter *.json) {
  $base = (Get-Content $file.FullName -Raw | ConvertFrom-Json).Name
  $name = "$base$suffix"
  $found = @(az role definition list --custom-role-only true --name $name --query "[].name" -o tsv 2>$null)
  if ($found.Count -gt 0 -and $tenant) {
    $ours = ArmGuid "$tenant-$base-$suffix"
    if (-not ($found -contains $ours)) {
      Write-Error ("A custom role named '$name' exists in the tenant (id $($found[0])), not made by this deployment " +
        "(its id would be $ours): the provision would stop with RoleDefinitionWithSameNameExists. Give this " +
        "environment other role names (azd env set KEYLESS_ROLE_NAME_SUFFIX ' (<name>)'), or, if nothing uses " +
        "that role, delete it: az role definition delete --name '$name'")
      exit 1
    }
  }
  if (@(az role definition list --custom-role-only true --name $base --query "[].name" -o tsv 2>$null).Count -gt 0) {
    Write-Host "Note: a custom role '$base' exists (made by hand from infra/roles?). This deployment makes and assigns"
    Write-Host "'$name' and leaves that one not used; delete it once nothing uses it: az role definition delete --name '$base'"
  }
}

# Private storage: see preprovision.sh.
$endpoints = Value 'KEYLESS_STORAGE_ENDPOINT_SUBNET_ID'
if ($endpoints) {
  $appSubnet = Value 'KEYLESS_SUBNET_ID'
  function NetworkOf($id) { ($id -replace '/subnets/[^/]*/*$', '').ToLower() }
  $problem = ''
  if (-not $appSubnet) {
    $problem = 'it needs virtual network integration: set KEYLESS_SUBNET_ID (a subnet delegated to Microsoft.App/environments) in the same network'
  } elseif ((NetworkOf $endpoints) -ne (NetworkOf $appSubnet)) {
    $problem = "it must be a subnet of the app's virtual network ($(NetworkOf $appSubnet))"
  } elseif ($endpoints.ToLower() -eq $appSubnet.ToLower()) {
    $problem = 'it must be another subnet than KEYLESS_SUBNET_ID (a delegated subnet holds no private endpoints)'
  } else {
    $sub = Value 'AZURE_SUBSCRIPTION_ID'
    if ($sub -and ($endpoints.Split('/')[2].ToLower() -ne $sub.ToLower())) {
      $problem = "its virtual network must be in the deployment's subscription ($sub), where the private endpoints are made"
    }
  }
  if ($problem) {
    Write-Error "KEYLESS_STORAGE_ENDPOINT_SUBNET_ID (private storage): $problem. Or leave storage public (Entra-only access): azd env set KEYLESS_STORAGE_ENDPOINT_SUBNET_ID ''"
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
