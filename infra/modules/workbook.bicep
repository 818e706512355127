// The operator's view of Keyless (infra/workbook.json): bindings by status, failures by reason, drift
// sweep health, from the app's customMetrics and traces in Application Insights.
param name string
param location string
param tags object
param appInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'keyless-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: name
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('../workbook.json')
  }
}

output id string = workbook.id
