// The optional outcome topic (docs/design.md: Outcome events): a custom Event Grid topic with local (key)
// authentication disabled; Keyless publishes with its identity through the Keyless Outcome Sender role
// (infra/roles/keyless-outcome-sender.json, created by keyless-access.bicep) assigned at the topic.
param name string
param location string
param tags object
@allowed([
  'cloudevents'
  'eventgrid'
])
@description('KEYLESS_OUTCOME_EVENT_SCHEMA: the schema the app publishes in.')
param schema string
param principalId string
param senderRoleGuid string

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: (schema == 'eventgrid') ? 'EventGridSchema' : 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, principalId, senderRoleGuid)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', senderRoleGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Keyless: publish outcome events'
  }
}

// KEYLESS_OUTCOME_TOPIC_ENDPOINT: https://<topic>.<region>-1.eventgrid.azure.net/api/events
output endpoint string = topic.properties.endpoint
