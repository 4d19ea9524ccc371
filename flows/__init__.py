"""Prefect flows: numbered recipes of task calls, no maths and no IO inline."""
