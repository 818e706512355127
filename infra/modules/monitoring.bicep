// Application Insights on a Log Analytics workspace. With localAuthDisabled the component accepts only
// Entra-authenticated telemetry: the app sends it as its identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// in function-app.bicep), which needs Monitoring Metrics Publisher on the component. The connection string
// carries no secret (Microsoft docs: "Connection strings in Application Insights": the instrumentation key
// is an identifier, not a credential), and with local auth off it alone cannot ingest anything.
param workspaceName string
param appInsightsName string
param location string
param tags object
param principalId string
param localAuthDisabled bool

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: localAuthDisabled
  }
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Keyless app: send telemetry with Entra ID'
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output appInsightsConnectionString string = appInsights.properties.ConnectionString
