"""Side effects. The only modules that import azure.mgmt, azure.identity, kubernetes or storage SDKs.

Each adapter is a narrow class named after what it manages, built once from settings and a
credential. SDK exceptions are translated here, by HTTP status and error code, into
`shared.domain.errors` (TemporaryError / PermanentError); heavy SDKs are imported on first use so
the Functions host's cold start does not pay for them.
"""
