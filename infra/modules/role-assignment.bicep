// One role assignment for the Keyless app at a resource group, an OpenAI (Cognitive Services) account or an
// AKS cluster of this resource group, given by its id (lower case). principalType ServicePrincipal lets ARM
// skip the directory lookup of a new identity (RBAC troubleshooting docs). An ABAC condition, when given, is
// attached with conditionVersion 2.0.
param scopeId string
param roleDefinitionGuid string
param principalId string
param condition string
param assignmentDescription string

var parts = split(scopeId, '/')
// Nested ?: rather than &&: only the branch taken is evaluated, so parts[5] is never read from a short id.
// Comparisons are parenthesised throughout these files: the template test's parser (pycep) binds ?: tighter than ==.
var kind = (length(parts) == 5) ? 'group' : ((length(parts) == 9) ? ((toLower(parts[5]) == 'providers') ? toLower('${parts[6]}/${parts[7]}') : 'unsupported') : 'unsupported')
var assignment = union({
  roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
  principalId: principalId
  principalType: 'ServicePrincipal'
  description: assignmentDescription
}, empty(condition) ? {} : {
  condition: condition
  conditionVersion: '2.0'
})

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = if (kind == 'microsoft.cognitiveservices/accounts') {
  name: last(parts)
}

resource cluster 'Microsoft.ContainerService/managedClusters@2024-09-01' existing = if (kind == 'microsoft.containerservice/managedclusters') {
  name: last(parts)
}

resource atGroup 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'group') {
  name: guid(scopeId, roleDefinitionGuid, principalId)
  properties: assignment
}

resource atAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'microsoft.cognitiveservices/accounts') {
  name: guid(scopeId, roleDefinitionGuid, principalId)
  scope: account
  properties: assignment
}

resource atCluster 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'microsoft.containerservice/managedclusters') {
  name: guid(scopeId, roleDefinitionGuid, principalId)
  scope: cluster
  properties: assignment
}

// false: the scope is none of the three kinds above, and nothing was assigned.
output assigned bool = kind != 'unsupported'
