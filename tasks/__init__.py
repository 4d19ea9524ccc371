"""Prefect tasks: thin wrappers, one pipeline step each (``normguide.pipeline.steps``).

Each task builds its run context from the config it is given (credential blocks are resolved
here, on the worker, never passed as parameters) and returns the step's small typed record.
Installed as ``normguide.tasks``.
"""
