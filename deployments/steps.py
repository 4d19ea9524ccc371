"""Deploy-time steps used by ``deployments/prefect.yaml`` (run by ``prefect deploy``).

They run on the machine that deploys, from the checkout, with no network: the checkout's own
location becomes the process pool's pull step, and a scheduled deployment's parameters come
from a RunConfig file validated here, before anything reaches the Prefect API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The checkout this file belongs to (entry points in prefect.yaml are relative to it).
CHECKOUT = Path(__file__).resolve().parent.parent


def checkout_directory() -> dict[str, str]:
    """``{"directory": <absolute path of this checkout>}`` for a ``set_working_directory`` pull step."""
    return {"directory": str(CHECKOUT)}


def run_config_parameters(path: str) -> dict[str, Any]:
    """``{"config": <RunConfig as JSON-able dict>}`` read from a YAML/JSON config file.

    ``path`` is relative to the checkout unless absolute. The file is validated as a
    :class:`~normguide.config.RunConfig` (an invalid file fails the deploy, naming the field).

    A file without ``concepts`` runs the shipped example: the parameter then leaves ``concepts``
    out, so each worker reads the example inside its own installed package (no path of the
    deploying machine travels). A local table the file names must exist, resolved as the flows
    will resolve it: relative to the checkout, their working directory.

    Raises:
        ValueError: the file is invalid; it names a local concept table that does not exist; or
            it holds credentials (``storage.key``, ``secret``, ``token``): deployment parameters
            are stored in plain text by the Prefect API, so credentials belong in a block
            (``storage.aws_credentials_block``) or the workers' environment.
    """
    from normguide.config import load_config

    file = Path(path) if Path(path).is_absolute() else CHECKOUT / path
    config = load_config(file)
    if secrets := config.inline_secrets():
        raise ValueError(
            f"config file {str(file)!r} sets {', '.join(secrets)}: deployment parameters are stored in "
            "plain text; use storage.aws_credentials_block or the workers' AWS environment instead"
        )
    params = config.model_dump(mode="json")
    if "concepts" not in config.model_fields_set:
        params.pop("concepts")
    elif "://" not in config.concepts:  # a local table: the flows run with the checkout as working directory
        table = Path(config.concepts).expanduser()
        table = table if table.is_absolute() else CHECKOUT / table
        if not table.is_file():
            raise ValueError(f"config file {str(file)!r}: concepts: concept table {config.concepts!r} does not exist "
                             f"(looked for {str(table)!r}; relative paths are relative to {str(CHECKOUT)!r}, where the "
                             "deployment's flows run)")
    return {"config": params}
