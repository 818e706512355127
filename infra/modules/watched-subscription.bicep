// Another subscription whose ARM events reach the one function app: its Event Grid system topic (made in a
// resource group of its own there, or the one it has: a subscription has at most one topic of this type)
// and the three filtered event subscriptions of resource-events.bicep, delivered to `resource_events`.
// The app needs no role there for the events themselves (Event Grid delivers to the function); it acts on
// the clusters and accounts of its scopes, whose roles keyless-access.bicep assigns wherever they are.
targetScope = 'subscription'

@description('Id of the subscription\'s existing Microsoft.Resources.Subscriptions system topic; empty: create one.')
param existingTopicId string
@description('Resource group made for the topic when there is none.')
param resourceGroupName string
param topicName string
param location string
param tags object
param subscribe bool
param functionAppId string

var topicParts = split(existingTopicId, '/')
var createTopic = empty(existingTopicId)

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createTopic) {
  name: resourceGroupName
  location: location
  tags: tags
}

module events 'resource-events.bicep' = {
  name: 'keyless-watched-events-${uniqueString(subscription().id, topicName)}'
  scope: resourceGroup(createTopic ? resourceGroupName : topicParts[4])
  dependsOn: [group]
  params: {
    topicName: createTopic ? topicName : last(topicParts)
    createTopic: createTopic
    subscribe: subscribe
    functionAppId: functionAppId
    tags: tags
  }
}

output topicId string = events.outputs.topicId
