// What Keyless itself may do (docs/security.md, "What Keyless itself may do"): the custom roles of
// infra/roles created, each assigned to the app's identity at the narrowest scope it needs, the OpenAI
// Access Granter with the ABAC condition of infra/role-assignment-condition.txt. Scopes come as
// comma-separated resource ids, compared in lower case.
targetScope = 'subscription'

param principalId string
param deploymentToken string
param roleNameSuffix string
@description('The app\'s resource group id: the identity role\'s assignable scope while no identity resource group is known.')
param appResourceGroupId string
@description('OpenAI accounts, or their resource groups.')
param openAIScopes string
@description('AKS clusters, or their resource groups.')
param clusterScopes string
@description('Private clusters Keyless reaches through the run-command API.')
param privateClusterScopes string
@description('OpenAI accounts (or groups) where Keyless may switch keys off (tag keyless-enforce=true).')
param localAuthDisablerScopes string
@description('KEYLESS_IDENTITY_SUBSCRIPTION_ID')
param identitySubscriptionId string
@description('KEYLESS_IDENTITY_RESOURCE_GROUP')
param identityResourceGroup string
@description('KEYLESS_ENABLE_CLUSTER_FEATURES')
param enableClusterFeatures string
@description('KEYLESS_RUN_COMMAND_FALLBACK')
param runCommandFallback string
@description('KEYLESS_ROLE_ASSIGNMENT_HEADROOM')
param roleAssignmentHeadroom string
@description('KEYLESS_ENFORCE_KEYLESS_ACCOUNTS')
param enforceKeylessAccounts string
@description('KEYLESS_ROLE_ALLOWLIST: the roles the Access Granter\'s condition lets Keyless assign.')
param roleAllowlist string
@description('Assign Keyless AKS Workload Binder at the clusters (Azure RBAC for Kubernetes authorization).')
param grantAksWorkloadBinder bool
@description('KEYLESS_ALLOW_LOCAL_ACCOUNTS: true also assigns Keyless Cluster Local Admin at the clusters.')
param allowLocalAccounts string
@description('Other subscriptions whose events Keyless watches: among the custom roles\' assignable scopes, so that a role can be assigned there (lower case).')
param watchedSubscriptionIds array = []

var openAIList = union(filter(map(split(openAIScopes, ','), id => toLower(trim(id))), id => !empty(id)), [])
var clusterList = union(filter(map(split(clusterScopes, ','), id => toLower(trim(id))), id => !empty(id)), [])
var privateClusterList = union(filter(map(split(privateClusterScopes, ','), id => toLower(trim(id))), id => !empty(id)), [])
var localAuthList = union(filter(map(split(localAuthDisablerScopes, ','), id => toLower(trim(id))), id => !empty(id)), [])
var openAISubscriptions = union(map(openAIList, id => split(id, '/')[2]), [])
var clusterSubscriptions = union(map(clusterList, id => split(id, '/')[2]), [])
var privateClusterSubscriptions = union(map(privateClusterList, id => split(id, '/')[2]), [])
var clusterGroups = union(map(clusterList, id => join(take(split(id, '/'), 5), '/')), [])

// Where identities are made (shared/engine/world.py): the identity group when set, in the identity
// subscription or else in each cluster's; without a group, each cluster's own resource group.
var identityGroupIn = map(empty(identitySubscriptionId) ? clusterSubscriptions : [identitySubscriptionId], s => toLower('/subscriptions/${s}/resourceGroups/${identityResourceGroup}'))
var identityGroups = empty(identityResourceGroup) ? clusterGroups : union(identityGroupIn, [])
var identityRoleGroups = empty(identityGroups) ? [toLower(appResourceGroupId)] : identityGroups
// Every subscription a role is assigned in must be among its assignable scopes (lower case, as the lists).
var localAuthSubscriptions = union(map(localAuthScopes, id => split(id, '/')[2]), [])
var subscriptionIds = union([toLower(subscription().subscriptionId)], openAISubscriptions, clusterSubscriptions, privateClusterSubscriptions, localAuthSubscriptions, map(watchedSubscriptionIds, s => toLower(s)))

// The condition file starts with # comments (Azure's condition syntax has none); its role GUID list is kept
// equal to KEYLESS_ROLE_ALLOWLIST.
var openAIUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
var conditionLines = filter(split(loadTextContent('../role-assignment-condition.txt'), '\n'), line => !startsWith(line, '#'))
var allowedRoleIds = join(filter(map(split(replace(roleAllowlist, ';', ','), ','), id => trim(id)), id => !empty(id)), ', ')
var accessGranterCondition = replace(join(conditionLines, '\n'), '{${openAIUserRoleId}}', '{${allowedRoleIds}}')

var withFeatures = toLower(trim(enableClusterFeatures)) == 'true'
var withRunCommand = toLower(trim(runCommandFallback)) == 'true'
var withCounter = int(trim(roleAssignmentHeadroom)) > 0
var withLocalAccounts = toLower(trim(allowLocalAccounts)) == 'true'
var localAuthScopes = (toLower(trim(enforceKeylessAccounts)) == 'true') ? union(openAIList, localAuthList) : localAuthList

// ------------------------------------------------------------------------------------- the role definitions

module identityOperatorRole 'custom-role.bicep' = {
  name: 'keyless-role-identity-operator-${deploymentToken}'
  scope: subscription(split(identityRoleGroups[0], '/')[2])
  params: {
    role: loadJsonContent('../roles/keyless-identity-operator.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: identityRoleGroups
    nameSuffix: roleNameSuffix
  }
}

module accessGranterRole 'custom-role.bicep' = {
  name: 'keyless-role-access-granter-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-access-granter.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module clusterReaderRole 'custom-role.bicep' = {
  name: 'keyless-role-cluster-reader-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-cluster-reader.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module featureEnablerRole 'custom-role.bicep' = {
  name: 'keyless-role-feature-enabler-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-cluster-feature-enabler.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module runCommandRole 'custom-role.bicep' = {
  name: 'keyless-role-run-command-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-run-command.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module counterRole 'custom-role.bicep' = {
  name: 'keyless-role-assignment-counter-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-role-assignment-counter.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module localAuthDisablerRole 'custom-role.bicep' = {
  name: 'keyless-role-local-auth-disabler-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-local-auth-disabler.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module workloadBinderRole 'custom-role.bicep' = {
  name: 'keyless-role-aks-binder-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-aks-rbac.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module localAdminRole 'custom-role.bicep' = {
  name: 'keyless-role-local-admin-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-cluster-local-admin.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

module outcomeSenderRole 'custom-role.bicep' = {
  name: 'keyless-role-outcome-sender-${deploymentToken}'
  params: {
    role: loadJsonContent('../roles/keyless-outcome-sender.json')
    subscriptionIds: subscriptionIds
    resourceGroupIds: []
    nameSuffix: roleNameSuffix
  }
}

// ------------------------------------------------------------------------------------- the assignments

module identityOperator 'role-assignment.bicep' = [for target in identityGroups: {
  name: take('keyless-idop-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: identityOperatorRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: workload identities and their federated credentials'
  }
}]

module accessGranter 'role-assignment.bicep' = [for target in openAIList: {
  name: take('keyless-grant-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: accessGranterRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: accessGranterCondition
    assignmentDescription: 'Keyless: grant the allowlisted role on OpenAI accounts (ABAC condition)'
  }
}]

module clusterReader 'role-assignment.bicep' = [for target in clusterList: {
  name: take('keyless-read-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: clusterReaderRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: read clusters (OIDC issuer, API server)'
  }
}]

module featureEnabler 'role-assignment.bicep' = [for target in clusterList: if(withFeatures) {
  name: take('keyless-enable-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: featureEnablerRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: enable OIDC issuer and workload identity (KEYLESS_ENABLE_CLUSTER_FEATURES)'
  }
}]

module runCommand 'role-assignment.bicep' = [for target in privateClusterList: if(withRunCommand) {
  name: take('keyless-runcmd-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: runCommandRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: run command on private clusters (KEYLESS_RUN_COMMAND_FALLBACK)'
  }
}]

module workloadBinder 'role-assignment.bicep' = [for target in clusterList: if(grantAksWorkloadBinder) {
  name: take('keyless-binder-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: workloadBinderRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: service accounts, config maps, deployments (Azure RBAC clusters)'
  }
}]

module localAuthDisabler 'role-assignment.bicep' = [for target in localAuthScopes: {
  name: take('keyless-keysoff-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: localAuthDisablerRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: disableLocalAuth on opted-in OpenAI accounts'
  }
}]

module localAdmin 'role-assignment.bicep' = [for target in clusterList: if(withLocalAccounts) {
  name: take('keyless-admin-${uniqueString(target, deploymentToken)}', 64)
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    scopeId: target
    roleDefinitionGuid: localAdminRole.outputs.roleDefinitionGuid
    principalId: principalId
    condition: ''
    assignmentDescription: 'Keyless: admin kubeconfig of clusters without Entra (KEYLESS_ALLOW_LOCAL_ACCOUNTS)'
  }
}]

module counter 'subscription-role-assignment.bicep' = [for id in openAISubscriptions: if(withCounter) {
  name: take('keyless-count-${uniqueString(id, deploymentToken)}', 64)
  scope: subscription(id)
  params: {
    roleDefinitionGuid: counterRole.outputs.roleDefinitionGuid
    principalId: principalId
    assignmentDescription: 'Keyless: count role assignments (KEYLESS_ROLE_ASSIGNMENT_HEADROOM)'
  }
}]

// Assigned at the outcome topic by outcome-topic.bicep.
output outcomeSenderRoleGuid string = outcomeSenderRole.outputs.roleDefinitionGuid
output accessGranterCondition string = accessGranterCondition
