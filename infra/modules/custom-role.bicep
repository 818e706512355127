// One custom role of infra/roles, created as it is written there, its AssignableScopes placeholders
// (<subscription-id>, <identity-resource-group>) filled: one scope per subscription, or per resource group
// for a role written for a resource group. Custom role names are unique in a tenant: give each deployment
// of Keyless in one tenant its own nameSuffix.
targetScope = 'subscription'

@description('The role file\'s content (loadJsonContent of infra/roles/<role>.json).')
param role object
@description('Subscription ids that fill <subscription-id> in a subscription-wide role.')
param subscriptionIds array
@description('Resource group ids (/subscriptions/<s>/resourceGroups/<g>) that fill a role written for a resource group.')
param resourceGroupIds array
param nameSuffix string

var scopeTemplate = role.AssignableScopes[0]
var perSubscription = [for id in subscriptionIds: replace(scopeTemplate, '<subscription-id>', id)]
var perResourceGroup = [for id in resourceGroupIds: replace(replace(scopeTemplate, '<subscription-id>', split(id, '/')[2]), '<identity-resource-group>', split(id, '/')[4])]

resource definition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  // Role definition ids are tenant-wide: the same id wherever (in which subscription) it is written.
  name: guid(tenant().tenantId, role.Name, nameSuffix)
  properties: {
    roleName: '${role.Name}${nameSuffix}'
    description: role.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: role.Actions
        notActions: role.NotActions
        dataActions: role.DataActions
        notDataActions: role.NotDataActions
      }
    ]
    assignableScopes: contains(scopeTemplate, '<identity-resource-group>') ? perResourceGroup : perSubscription
  }
}

// The role definition's GUID: an assignment in any subscription of its assignable scopes names it as
// /subscriptions/<that subscription>/providers/Microsoft.Authorization/roleDefinitions/<guid>.
output roleDefinitionGuid string = definition.name
