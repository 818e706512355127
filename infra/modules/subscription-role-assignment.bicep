// One role assignment for the Keyless app at a whole subscription (only the read-only role assignment
// counter needs this scope).
targetScope = 'subscription'

param roleDefinitionGuid string
param principalId string
param assignmentDescription string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, roleDefinitionGuid, principalId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: assignmentDescription
  }
}
