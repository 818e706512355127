"""The fault suite: many bindings through the real handlers and worker while Azure misbehaves."""
