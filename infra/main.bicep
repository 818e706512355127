// Keyless in Azure, deployed by `azd up` (azure.yaml): a resource group holding the Function App on Flex
// Consumption with its user-assigned identity, its storage (identity-based connections only), Application
// Insights on Log Analytics with a workbook, the Event Grid system topic of the subscription subscribed to
// `resource_events`, the optional outcome topic; and, at the scopes given, the custom roles of infra/roles
// assigned to the app's identity. docs/deploy.md lists the parameters; tests/unit/test_bicep.py
// checks these files (no Bicep compiler on our machines).
targetScope = 'subscription'

// ------------------------------------------------------------------------------------------ deployment

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags derive from it.')
param environmentName string

@minLength(1)
@description('Region of the resource group and everything in it (one where Flex Consumption runs).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Function App name; empty: func-keyless-<token>.')
param functionAppName string = ''

@description('Client id of the Entra app registration for the API (App Service Authentication). Empty: no authentication in front of the API, which then answers 503 AuthenticationNotConfigured; azd cannot create app registrations.')
param apiClientId string = ''

@description('Comma-separated client ids of the applications allowed to call the API (App Service Authentication); empty: any application in the tenant.')
param apiAllowedApplications string = ''

@description('Comma-separated object ids of the Entra groups whose members may call the API; empty: anyone in the tenant. The access policy still decides what each caller may do.')
param apiAllowedGroups string = ''

@description('Comma-separated ids of the OpenAI accounts Keyless grants access to, or of their resource groups (Keyless OpenAI Access Granter, with the role-assignment condition; Role Assignment Counter on their subscriptions).')
param openAIScopes string = ''

@description('Comma-separated ids of the AKS clusters, or of their resource groups (Keyless Cluster Reader, Cluster Feature Enabler, AKS Workload Binder; identities go to their resource groups unless keylessIdentityResourceGroup is set).')
param clusterScopes string = ''

@description('Comma-separated ids of private clusters that Keyless reaches through the AKS run-command API (Keyless Run Command Invoker).')
param privateClusterScopes string = ''

@description('Comma-separated ids of OpenAI accounts (or groups) where Keyless may set disableLocalAuth (Keyless Local Auth Disabler); all of openAIScopes when keylessEnforceKeylessAccounts is true.')
param localAuthDisablerScopes string = ''

@description('Assign Keyless AKS Workload Binder (Kubernetes data actions) at the clusters, for Azure RBAC clusters. Kubernetes-RBAC clusters need infra/kubernetes/keyless-rbac.yaml instead.')
param grantAksWorkloadBinder bool = true

@description('Appended to the custom role names, which are unique per tenant; empty: " (<environmentName>)", so that environments, and roles made by hand from infra/roles, never share one.')
param customRoleNameSuffix string = ''

@description('Subscribe resource_events to the ARM events. Event Grid checks that the function exists: false on the first provision, set to true by the postdeploy hook of azure.yaml.')
param subscribeResourceEvents bool = false

@description('Id of an existing Microsoft.Resources.Subscriptions system topic of this subscription (a subscription has at most one); empty: create one.')
param existingResourceEventsTopicId string = ''

@description('Comma-separated other subscriptions whose ARM events Keyless acts on, each a subscription id, or the id of its existing Microsoft.Resources.Subscriptions system topic: in each, the system topic (in rg-<environmentName>-events unless given) and the filtered event subscriptions to resource_events. The deployment\'s own subscription is always watched.')
param watchedSubscriptionIds string = ''

@description('Create the outcome topic (custom topic, keys disabled) and point KEYLESS_OUTCOME_TOPIC_ENDPOINT at it.')
param deployOutcomeTopic bool = false

@description('Subnet id for virtual network integration (delegated to Microsoft.App/environments), e.g. to reach private clusters\' API servers; empty: none.')
param virtualNetworkSubnetId string = ''

@description('Subnet id for private endpoints of the app\'s storage (blob, queue, table), in the virtual network of virtualNetworkSubnetId (not the delegated subnet); set: storage denies public network access and is reached only through them, with private DNS zones linked to that network. Needs virtualNetworkSubnetId; empty: storage reachable from every network (Entra-only access).')
param storagePrivateEndpointSubnetId string = ''

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Telemetry with Entra ID only: Application Insights local auth disabled, the app authenticates as its identity.')
param appInsightsEntraAuth bool = true

// ------------------------------------------------------------------------------------------ app settings
// One parameter per KEYLESS_* setting of local.settings.sample.json, defaulting to the sample's value
// (docs/settings.md). Settings the template derives are noted.

param keylessArmEndpoint string = 'https://management.azure.com'
param keylessArmScope string = 'https://management.azure.com/.default'
param keylessAuthorityHost string = 'https://login.microsoftonline.com'
param keylessAksServerAppId string = '6dae42f8-4368-4678-94ff-3960e28e3630'
@description('Tests only.')
param keylessCaBundle string = ''
@description('Also where the Identity Operator role is assigned.')
param keylessIdentitySubscriptionId string = ''
@description('Also where the Identity Operator role is assigned (empty: the clusters\' resource groups).')
param keylessIdentityResourceGroup string = ''
@description('Also the role GUIDs the Access Granter\'s condition allows.')
param keylessRoleAllowlist string = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
param keylessDefaultRole string = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
@description('true also assigns Keyless Cluster Feature Enabler at the clusters.')
param keylessEnableClusterFeatures string = 'true'
param keylessClusterUpdateWaitSeconds string = '0'
param keylessAllowLocalAccounts string = 'false'
param keylessCreateNamespaces string = 'false'
param keylessFieldManager string = 'keyless'
param keylessKubeCredentialsTtlSeconds string = '900'
param keylessSweepSchedule string = '0 */30 * * * *'
param keylessTableName string = 'keylessbindings'
@description('The access policy (inline JSON or a file path in the package); README, Security.')
param keylessAccessPolicy string = ''
@description('Local runs only: refused inside Azure.')
param keylessDevPrincipal string = ''
param keylessSystemNamespaces string = ''
param keylessAllowedSubscriptions string = ''
param keylessRevokeAfterSeconds string = '3600'
param keylessRemovedRetentionDays string = '30'
param keylessDefaultMaxBindings string = '250'
param keylessMaxTagBindingsPerCluster string = '25'
@description('Ledger rows one GET /api/onboardings reads at most.')
param keylessListScanRows string = '1000'
@description('Above 0 also assigns Keyless Role Assignment Counter on the OpenAI accounts\' subscriptions.')
param keylessRoleAssignmentHeadroom string = '200'
param keylessArmReadCacheSeconds string = '20'
param keylessRequestTimeoutSeconds string = '30'
param keylessArmPacingScale string = '1'
param keylessSharedPacing string = 'true'
param keylessPacingFallbackShare string = '0.25'
param keylessRetryDelayScale string = '1'
param keylessApiKeyVariables string = 'AZURE_OPENAI_API_KEY,AZURE_OPENAI_KEY,OPENAI_API_KEY'
param keylessApiKeySecretPatterns string = '*openai*key*,*openai*secret*'
@description('true also assigns Keyless Local Auth Disabler at every OpenAI scope.')
param keylessEnforceKeylessAccounts string = 'false'
@description('true: verification proves access with the workload\'s own token (Entra exchange and one OpenAI data-plane read).')
param keylessProveAccess string = 'false'
@description('true also assigns Keyless Run Command Invoker at privateClusterScopes.')
param keylessRunCommandFallback string = 'true'
param keylessRunCommandWaitSeconds string = '60'
@description('An outcome topic made elsewhere; replaced by the created topic\'s endpoint with deployOutcomeTopic.')
param keylessOutcomeTopicEndpoint string = ''
param keylessOutcomeEventSchema string = 'cloudevents'

// ------------------------------------------------------------------------------------------ names

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'keyless'
}
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var appName = empty(functionAppName) ? 'func-keyless-${token}' : functionAppName
// A blob container name: lower case, letters, digits and single hyphens, 3-63 characters (hyphens of the app
// name dropped, so that none doubles or ends it).
var containerAppPart = take(toLower(replace(appName, '-', '')), 32)
var containerTokenPart = take(token, 7)
var deploymentContainerName = 'app-package-${containerAppPart}-${containerTokenPart}'
var roleNameSuffix = empty(customRoleNameSuffix) ? ' (${environmentName})' : customRoleNameSuffix
// Private storage only with virtual network integration (the app reaches the endpoints through it); the
// preprovision hook stops with a clear message otherwise, and without it nothing private is made here.
var privateStorage = !(empty(storagePrivateEndpointSubnetId) || empty(virtualNetworkSubnetId))
// Other subscriptions to watch, each {subscriptionId, existingTopicId}, without the deployment's own.
var watchedItems = union(filter(map(split(watchedSubscriptionIds, ','), w => toLower(trim(w))), w => !empty(w)), [])
var watched = filter(map(watchedItems, w => startsWith(w, '/subscriptions/') ? {
  subscriptionId: split(w, '/')[2]
  existingTopicId: w
} : {
  subscriptionId: w
  existingTopicId: ''
}), w => toLower(subscription().subscriptionId) != w.subscriptionId)
var eventsTopicParts = split(existingResourceEventsTopicId, '/')
var eventsTopicSubscriptionId = empty(existingResourceEventsTopicId) ? subscription().subscriptionId : eventsTopicParts[2]
var eventsTopicGroup = empty(existingResourceEventsTopicId) ? rgName : eventsTopicParts[4]
var eventsTopicName = empty(existingResourceEventsTopicId) ? 'evgt-keyless-${token}' : last(eventsTopicParts)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module identity 'modules/app-identity.bicep' = {
  name: 'keyless-identity'
  scope: rg
  params: {
    name: 'id-keyless-${token}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'keyless-storage'
  scope: rg
  params: {
    name: 'stkeyless${token}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    principalId: identity.outputs.principalId
    privateOnly: privateStorage
  }
}

module storageNetwork 'modules/storage-network.bicep' = if (privateStorage) {
  name: 'keyless-storage-network'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    subnetId: storagePrivateEndpointSubnetId
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'keyless-monitoring'
  scope: rg
  params: {
    workspaceName: 'log-keyless-${token}'
    appInsightsName: 'appi-keyless-${token}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    localAuthDisabled: appInsightsEntraAuth
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'keyless-workbook'
  scope: rg
  params: {
    name: 'Keyless (${environmentName})'
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

module access 'modules/keyless-access.bicep' = {
  name: 'keyless-access-${token}'
  params: {
    principalId: identity.outputs.principalId
    deploymentToken: token
    roleNameSuffix: roleNameSuffix
    appResourceGroupId: rg.id
    openAIScopes: openAIScopes
    clusterScopes: clusterScopes
    privateClusterScopes: privateClusterScopes
    localAuthDisablerScopes: localAuthDisablerScopes
    identitySubscriptionId: keylessIdentitySubscriptionId
    identityResourceGroup: keylessIdentityResourceGroup
    enableClusterFeatures: keylessEnableClusterFeatures
    runCommandFallback: keylessRunCommandFallback
    roleAssignmentHeadroom: keylessRoleAssignmentHeadroom
    enforceKeylessAccounts: keylessEnforceKeylessAccounts
    roleAllowlist: keylessRoleAllowlist
    grantAksWorkloadBinder: grantAksWorkloadBinder
    allowLocalAccounts: keylessAllowLocalAccounts
    watchedSubscriptionIds: map(watched, w => w.subscriptionId)
  }
}

module outcomeTopic 'modules/outcome-topic.bicep' = if (deployOutcomeTopic) {
  name: 'keyless-outcome-topic'
  scope: rg
  params: {
    name: 'evgt-keyless-outcome-${token}'
    location: location
    tags: tags
    schema: keylessOutcomeEventSchema
    principalId: identity.outputs.principalId
    senderRoleGuid: access.outputs.outcomeSenderRoleGuid
  }
}

var keylessSettings = {
  KEYLESS_ARM_ENDPOINT: keylessArmEndpoint
  KEYLESS_ARM_SCOPE: keylessArmScope
  KEYLESS_AUTHORITY_HOST: keylessAuthorityHost
  KEYLESS_AKS_SERVER_APP_ID: keylessAksServerAppId
  KEYLESS_CA_BUNDLE: keylessCaBundle
  KEYLESS_IDENTITY_SUBSCRIPTION_ID: keylessIdentitySubscriptionId
  KEYLESS_IDENTITY_RESOURCE_GROUP: keylessIdentityResourceGroup
  KEYLESS_ROLE_ALLOWLIST: keylessRoleAllowlist
  KEYLESS_DEFAULT_ROLE: keylessDefaultRole
  KEYLESS_ENABLE_CLUSTER_FEATURES: keylessEnableClusterFeatures
  KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS: keylessClusterUpdateWaitSeconds
  KEYLESS_ALLOW_LOCAL_ACCOUNTS: keylessAllowLocalAccounts
  KEYLESS_CREATE_NAMESPACES: keylessCreateNamespaces
  KEYLESS_FIELD_MANAGER: keylessFieldManager
  KEYLESS_KUBE_CREDENTIALS_TTL_SECONDS: keylessKubeCredentialsTtlSeconds
  KEYLESS_SWEEP_SCHEDULE: keylessSweepSchedule
  KEYLESS_TABLE_NAME: keylessTableName
  KEYLESS_ACCESS_POLICY: keylessAccessPolicy
  KEYLESS_DEV_PRINCIPAL: keylessDevPrincipal
  KEYLESS_SYSTEM_NAMESPACES: keylessSystemNamespaces
  KEYLESS_ALLOWED_SUBSCRIPTIONS: keylessAllowedSubscriptions
  KEYLESS_REVOKE_AFTER_SECONDS: keylessRevokeAfterSeconds
  KEYLESS_REMOVED_RETENTION_DAYS: keylessRemovedRetentionDays
  KEYLESS_DEFAULT_MAX_BINDINGS: keylessDefaultMaxBindings
  KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER: keylessMaxTagBindingsPerCluster
  KEYLESS_ROLE_ASSIGNMENT_HEADROOM: keylessRoleAssignmentHeadroom
  KEYLESS_LIST_SCAN_ROWS: keylessListScanRows
  KEYLESS_ARM_READ_CACHE_SECONDS: keylessArmReadCacheSeconds
  KEYLESS_REQUEST_TIMEOUT_SECONDS: keylessRequestTimeoutSeconds
  KEYLESS_ARM_PACING_SCALE: keylessArmPacingScale
  KEYLESS_SHARED_PACING: keylessSharedPacing
  KEYLESS_PACING_FALLBACK_SHARE: keylessPacingFallbackShare
  KEYLESS_RETRY_DELAY_SCALE: keylessRetryDelayScale
  KEYLESS_API_KEY_VARIABLES: keylessApiKeyVariables
  KEYLESS_API_KEY_SECRET_PATTERNS: keylessApiKeySecretPatterns
  KEYLESS_ENFORCE_KEYLESS_ACCOUNTS: keylessEnforceKeylessAccounts
  KEYLESS_PROVE_ACCESS: keylessProveAccess
  KEYLESS_RUN_COMMAND_FALLBACK: keylessRunCommandFallback
  KEYLESS_RUN_COMMAND_WAIT_SECONDS: keylessRunCommandWaitSeconds
  KEYLESS_OUTCOME_TOPIC_ENDPOINT: deployOutcomeTopic ? outcomeTopic.outputs.endpoint : keylessOutcomeTopicEndpoint
  KEYLESS_OUTCOME_EVENT_SCHEMA: keylessOutcomeEventSchema
}

module app 'modules/function-app.bicep' = {
  name: 'keyless-function-app'
  scope: rg
  // The host starts as soon as the site exists: its storage roles (and private endpoints) first.
  dependsOn: [storage, storageNetwork]
  params: {
    name: appName
    planName: 'plan-keyless-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    appInsightsEntraAuth: appInsightsEntraAuth
    appSettings: keylessSettings
    apiClientId: apiClientId
    apiAllowedApplications: filter(map(split(apiAllowedApplications, ','), id => trim(id)), id => !empty(id))
    apiAllowedGroups: filter(map(split(apiAllowedGroups, ','), id => trim(id)), id => !empty(id))
    subnetId: virtualNetworkSubnetId
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module resourceEvents 'modules/resource-events.bicep' = {
  name: 'keyless-resource-events-${token}'
  scope: resourceGroup(eventsTopicSubscriptionId, eventsTopicGroup)
  dependsOn: [rg]
  params: {
    topicName: eventsTopicName
    createTopic: empty(existingResourceEventsTopicId)
    subscribe: subscribeResourceEvents
    functionAppId: app.outputs.id
    tags: tags
  }
}

module watchedSubscriptions 'modules/watched-subscription.bicep' = [for w in watched: {
  name: 'keyless-watch-${take(uniqueString(w.subscriptionId, token), 8)}'
  scope: subscription(w.subscriptionId)
  params: {
    existingTopicId: w.existingTopicId
    resourceGroupName: 'rg-${environmentName}-events'
    topicName: 'evgt-keyless-${token}'
    location: location
    tags: tags
    subscribe: subscribeResourceEvents
    functionAppId: app.outputs.id
  }
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output KEYLESS_API_URL string = 'https://${app.outputs.defaultHostName}/api'
@description('The app identity\'s object id: the subject of infra/kubernetes/keyless-rbac.yaml on Kubernetes-RBAC clusters.')
output KEYLESS_PRINCIPAL_ID string = identity.outputs.principalId
output KEYLESS_CLIENT_ID string = identity.outputs.clientId
@description('The app\'s host name: the team page\'s sign-in callback https://<host>/.auth/login/aad/callback (postdeploy hook).')
output KEYLESS_APP_HOST_NAME string = app.outputs.defaultHostName
@description('The tenant\'s v2.0 issuer: App Service Authentication\'s openIdIssuer, and the issuer of the federated credential that lets the app\'s identity sign users in for the API\'s registration (postdeploy hook).')
output KEYLESS_OPENID_ISSUER string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
output RESOURCE_EVENTS_SYSTEM_TOPIC_ID string = resourceEvents.outputs.topicId
output KEYLESS_OUTCOME_TOPIC_ENDPOINT string = keylessSettings.KEYLESS_OUTCOME_TOPIC_ENDPOINT
