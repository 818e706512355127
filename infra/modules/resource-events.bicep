// ARM events of the subscription (an Event Grid system topic of type Microsoft.Resources.Subscriptions)
// delivered to the `resource_events` function, filtered so that only what
// shared/domain/resource_events.parse_event acts on reaches the app (tests/unit/test_bicep.py evaluates these
// filters against it). Advanced filters: values of one filter are ORed, filters are ANDed, string
// comparisons ignore case; at most 25 filter values per subscription (Event Grid docs, "Event filtering").
// Deliveries go to the function itself (endpoint type AzureFunction): no key or URL with a key in the template.
// Event Grid checks that the function exists when the subscription is made, so `subscribe` stays false on
// the first `azd provision` (the code is not deployed yet); azure.yaml's postdeploy hook provisions again.
param topicName string
@description('Create the system topic (false: it exists already; a subscription has at most one topic of this type).')
param createTopic bool
param subscribe bool
param functionAppId string
param tags object

// handlers/events.py: @bp.function_name("resource_events")
var functionName = 'resource_events'
var writeSuccess = 'Microsoft.Resources.ResourceWriteSuccess'
var deleteSuccess = 'Microsoft.Resources.ResourceDeleteSuccess'
var delivery = {
  endpointType: 'AzureFunction'
  properties: {
    resourceId: '${functionAppId}/functions/${functionName}'
    // The Python trigger takes one event per invocation.
    maxEventsPerBatch: 1
    preferredBatchSizeInKilobytes: 64
  }
}
var retryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}

resource createdTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (createTopic) {
  name: topicName
  location: 'global'
  tags: tags
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

// Writes and deletes of clusters, OpenAI (Cognitive Services) accounts and their deployments; deletes of
// user-assigned identities and of their federated credentials (their writes are mostly Keyless's own).
resource resourceChanges 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (subscribe) {
  parent: topic
  name: 'keyless-resources'
  dependsOn: [createdTopic]
  properties: {
    destination: delivery
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
    filter: {
      includedEventTypes: [
        writeSuccess
        deleteSuccess
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.ContainerService/managedClusters/write'
            'Microsoft.ContainerService/managedClusters/delete'
            'Microsoft.CognitiveServices/accounts/write'
            'Microsoft.CognitiveServices/accounts/delete'
            'Microsoft.CognitiveServices/accounts/deployments/write'
            'Microsoft.CognitiveServices/accounts/deployments/delete'
            'Microsoft.ManagedIdentity/userAssignedIdentities/delete'
            'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete'
          ]
        }
      ]
    }
  }
}

// Deletes of role assignments made at OpenAI accounts (the same operation at any other scope is not ours;
// filters are ANDed, hence a subscription of its own).
resource roleAssignments 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (subscribe) {
  parent: topic
  name: 'keyless-role-assignments'
  dependsOn: [createdTopic, resourceChanges]
  properties: {
    destination: delivery
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
    filter: {
      includedEventTypes: [
        deleteSuccess
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.Authorization/roleAssignments/delete'
          ]
        }
        {
          operatorType: 'StringContains'
          key: 'subject'
          values: [
            '/providers/Microsoft.CognitiveServices/accounts/'
          ]
        }
      ]
    }
  }
}

// Tag changes made through the Tags API (`az tag update|delete --resource-id`, the undo of the README's consent
// command) on clusters and OpenAI accounts: the resource's own write event does not fire for them. The event's
// subject is `<resource>/providers/Microsoft.Resources/tags/default`; the app re-reads the resource.
resource tagChanges 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (subscribe) {
  parent: topic
  name: 'keyless-tags'
  dependsOn: [createdTopic, roleAssignments]
  properties: {
    destination: delivery
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
    filter: {
      includedEventTypes: [
        writeSuccess
        deleteSuccess
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.Resources/tags/write'
            'Microsoft.Resources/tags/delete'
          ]
        }
        {
          operatorType: 'StringContains'
          key: 'subject'
          values: [
            '/providers/Microsoft.ContainerService/managedClusters/'
            '/providers/Microsoft.CognitiveServices/accounts/'
          ]
        }
      ]
    }
  }
}

output topicId string = topic.id
