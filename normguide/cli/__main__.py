"""``python -m normguide.cli``: the ``normguide`` command."""

from normguide.cli.app import main

main()
