"""Prefect tasks: thin wrappers, one IO or compute step each, calling :mod:`normguide.run`."""
