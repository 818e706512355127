"""Local HTTPS stand-ins for the services Keyless talks to across the network.

They are driven by the real SDK clients, so they must speak the real wire format:
paths, api-versions, status codes, error bodies, long-running operations.
"""
