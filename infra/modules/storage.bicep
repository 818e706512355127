// The host's storage (queues, tables, timer leases, keys) and the Flex Consumption deployment container.
// Shared key access is off: the host and the app reach it with the app's identity only (Entra ID), through
// the data roles below. Role ids: Azure built-in roles (Storage Blob Data Owner, Storage Queue Data
// Contributor, Storage Table Data Contributor), as in Microsoft's Flex Consumption sample with managed
// identities (Azure/azure-quickstart-templates, quickstarts/microsoft.web/function-app-flex-managed-identities).
param name string
param location string
param tags object
param deploymentContainerName string
param principalId string
@description('Deny public network access: reached only through the private endpoints of storage-network.bicep.')
param privateOnly bool = false

var dataRoles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: privateOnly ? 'None' : 'AzureServices'
      defaultAction: privateOnly ? 'Deny' : 'Allow'
    }
  }

  resource blobServices 'blobServices' = {
    name: 'default'

    // Flex Consumption reads the app package from this container (functionAppConfig.deployment.storage).
    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }
}

resource dataRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in items(dataRoles): {
  name: guid(storage.id, principalId, role.value)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Keyless app: ${role.key} on its own storage'
  }
}]

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
