// The Keyless Function App on a Flex Consumption plan (Linux, Python 3.11), with the app's user-assigned
// identity for everything: the deployment package (functionAppConfig.deployment.storage), the host's storage
// (AzureWebJobsStorage__* identity-based connection), Application Insights (Entra auth) and the Keyless code
// (DefaultAzureCredential reads AZURE_CLIENT_ID). Sources for the shapes:
// - Flex Consumption: functionAppConfig (deployment.storage with UserAssignedIdentity, scaleAndConcurrency,
//   runtime), kind 'functionapp,linux', plan sku FC1 / tier FlexConsumption with reserved: true, as in
//   Microsoft's samples (Azure/azure-quickstart-templates quickstarts/microsoft.web/
//   function-app-flex-managed-identities; Azure-Samples/functions-quickstart-python-http-azd infra/app/api.bicep)
//   and "Automate resource deployment for your function app" (learn.microsoft.com/azure/azure-functions/
//   functions-infrastructure-as-code). The runtime comes from functionAppConfig.runtime: FUNCTIONS_WORKER_RUNTIME
//   and FUNCTIONS_EXTENSION_VERSION are not app settings there.
// - Host storage with an identity ("Azure Functions developer reference", connecting to host storage with an
//   identity): AzureWebJobsStorage__accountName or __<service>ServiceUri, __credential = managedidentity,
//   __clientId for a user-assigned identity.
// - Application Insights with Entra ID: APPLICATIONINSIGHTS_AUTHENTICATION_STRING = ClientId=<id>;Authorization=AAD
//   (learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication).
// - Virtual network integration on Flex Consumption: virtualNetworkSubnetId, a subnet delegated to
//   Microsoft.App/environments (learn.microsoft.com/azure/azure-functions/flex-consumption-plan).
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerUrl string
param appInsightsConnectionString string
param appInsightsEntraAuth bool
@description('The KEYLESS_* settings (main.bicep, one parameter each).')
param appSettings object
@description('Client id of the Entra app registration that callers get tokens for; empty: no App Service Authentication (the API then answers 503 AuthenticationNotConfigured).')
param apiClientId string
@description('Client ids of the applications whose tokens App Service Authentication accepts; empty: any in the tenant.')
param apiAllowedApplications array = []
@description('Object ids of the Entra groups whose members App Service Authentication accepts; empty: anyone in the tenant.')
param apiAllowedGroups array = []
@description('Subnet for virtual network integration (delegated to Microsoft.App/environments); empty: none.')
param subnetId string
param maximumInstanceCount int
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the code's target by this tag (azure.yaml: services.api).
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// What the platform and the SDKs read; every KEYLESS_* setting comes in appSettings.
var platformSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  // host.json telemetryMode OpenTelemetry: the Python worker passes each invocation's trace context on.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}
var telemetryAuth = appInsightsEntraAuth ? {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
} : {}
// App Service Authentication signs users in (the team page) with the app's managed identity as its client
// credential: this reserved setting name holds the identity's CLIENT id, not a secret (below, auth).
var signInSettings = empty(apiClientId) ? {} : {
  OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(appSettings, platformSettings, telemetryAuth, signInSettings)
}

// No publishing with user names and passwords: azd deploys with the signed-in user's Entra token. Flex
// Consumption has no FTP(S) publishing: neither ftpsState nor the 'ftp' policy is set (issue 21).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  dependsOn: [settings]
  properties: {
    allow: false
  }
}

// App Service Authentication (Entra ID) in front of the API: only callers with a token for the app
// registration get through, and the platform hands Keyless the X-MS-CLIENT-PRINCIPAL header it trusts.
// Unauthenticated requests get 401 (never a redirect): the API and the `keyless` command send bearer tokens.
// The team page (/api/ui) signs in through /.auth/login/aad (authorization code flow) and then calls the API
// with the session cookie. That flow needs a client credential, and there is no secret: clientSecretSettingName
// names the reserved setting OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID (the app's user-assigned identity's client
// id, signInSettings above), so App Service Authentication presents that managed identity's token as a
// federated identity credential assertion of the app registration ("Use a managed identity instead of a
// secret", learn.microsoft.com/azure/app-service/configure-authentication-provider-aad). The registration must
// trust the identity (a federated credential: issuer https://login.microsoftonline.com/<tenant>/v2.0, subject
// the identity's principal id, audience api://AzureADTokenExchange) and list the callback
// https://<host>/.auth/login/aad/callback: the postdeploy hook (scripts/azd/postdeploy.*) does both, as Bicep
// cannot write app registrations here. No token store: the session cookie carries the sign-in and Keyless
// never needs the user's tokens. The Event Grid webhook is left to its own protection (the Event Grid
// extension's system key), so that deliveries are not refused with 401.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(apiClientId)) {
  parent: site
  name: 'authsettingsV2'
  // One configuration write at a time on the site.
  dependsOn: [scmBasicAuth]
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // Event Grid and the Functions docs write both casings; Easy Auth's path matching is not documented.
      excludedPaths: [
        '/runtime/webhooks/eventgrid'
        '/runtime/webhooks/EventGrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          // Not a secret: the reserved name that makes the managed identity the client credential.
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        // Who is signed in at all (the access policy stays the authorisation): optional narrowing to given
        // client applications (the token's appid/azp) and groups (its groups claim).
        validation: union({
          allowedAudiences: [
            'api://${apiClientId}'
            apiClientId
          ]
        }, (empty(apiAllowedApplications) && empty(apiAllowedGroups)) ? {} : {
          defaultAuthorizationPolicy: union(empty(apiAllowedApplications) ? {} : {
            allowedApplications: apiAllowedApplications
          }, empty(apiAllowedGroups) ? {} : {
            allowedPrincipals: {
              groups: apiAllowedGroups
            }
          })
        })
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
