"""Trigger families, one Blueprint each. Thin: parse, validate, hand to shared.app.keyless, map the outcome.

No Azure management SDK or kubernetes import here (import-linter checks it).
"""
