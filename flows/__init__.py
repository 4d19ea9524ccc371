"""Prefect flows: numbered recipes of task calls (installed as ``normguide.flows``)."""
