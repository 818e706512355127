"""Keyless engine: bindings, the reconcile loop, and the adapters that talk to Azure and Kubernetes.

Layers (checked by import-linter, see .importlinter):
- plain data and decisions: `errors`, `ids`, `naming`, `binding`, `settings`, `outcomes`, `planner`;
- side effects: `adapters/*` (the only modules that import azure.mgmt, kubernetes, storage SDKs);
- orchestration: `reconcile` runs the steps, calling the planner for decisions and adapters for I/O.
"""
