// The app's storage reached only from the virtual network the app is integrated with: a private endpoint
// per service the host and the app use (blob: deployment package and leases; queue; table), in a subnet
// of that network, and the private DNS zones that resolve the storage's names to them there, linked to
// the network. Public network access is denied in storage.bicep. As Microsoft's Flex Consumption samples
// with a virtual network do (Azure-Samples/functions-quickstart-dotnet-azd, infra/app/storage-PrivateEndpoint.bicep).
// A private endpoint lives in its network's subscription and region: the network must be in the
// deployment's (the preprovision hook checks).
param storageAccountName string
@description('The subnet for the private endpoints (not the app\'s delegated subnet), in the app\'s virtual network.')
param subnetId string
param location string
param tags object

var virtualNetworkId = join(take(split(subnetId, '/'), 9), '/')
var services = [
  'blob'
  'queue'
  'table'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for service in services: {
  name: 'privatelink.${service}.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (service, i) in services: {
  parent: zones[i]
  name: 'keyless-${uniqueString(virtualNetworkId)}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}]

resource endpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for service in services: {
  name: 'pe-${storageAccountName}-${service}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: service
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource dnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (service, i) in services: {
  parent: endpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output endpointIds array = [for (service, i) in services: endpoints[i].id]
