"""The `keyless` command: Keyless for people at a terminal (shared.app's use cases, like handlers/).

cli.__main__   the arguments, the exit codes, the dispatch
cli.local      the direct mode: the engine in this process, signed in as you (shared.app.direct)
cli.remote     a deployed Keyless through its HTTP API (shared.app.signin for the token)
cli.output     tables for people, JSON for scripts, colour only on a terminal
"""
