"""Shared test fixtures: a real S3 endpoint (moto's server, in its own process) on loopback.

``s3_server`` (session): the endpoint, with IAM authentication on, so that wrong credentials
are really rejected. Use ``s3_server.storage`` (a StorageConfig-compatible dict with the
endpoint and a dummy access key made on that server) or ``s3_server.storage_config()``;
never your own AWS environment. ``s3_server.stop()`` / ``start()`` take the endpoint port
down and bring it back (same port, same buckets): see ``tests/tcp_front.py``.

``s3_server.env_storage`` and ``s3_server.aws_env``: the same endpoint with the credentials in the
environment, for flow runs (credentials never travel as flow parameters).

``s3_bucket`` (function): a fresh, empty bucket on that server; also makes sure the endpoint
is up (a test that stopped it and failed is not left to break the next one).

``prefect_api`` (session, not autouse): one ``prefect_test_harness`` (a real, temporary Prefect
API) for the whole pytest session; yields its API URL, so that subprocesses can use it too.
Folders whose tests run flows request it from an autouse fixture in their conftest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parent
_REGION = "us-east-1"
# The first three requests to the server (IAM bootstrap below) run unauthenticated; every
# later request must be signed with the access key they create.
_BOOTSTRAP_ACTIONS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")


def _stop_process(proc: subprocess.Popen | None, *, hard: bool = False) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.kill() if hard else proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class S3Server:
    """moto's S3 server behind a stoppable front process on ``endpoint_url``."""

    def __init__(self, log_dir: str) -> None:
        self.region_name = _REGION
        self.backend_port = free_port()
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self._backend: subprocess.Popen | None = None
        self._front: subprocess.Popen | None = None
        self.key = ""
        self.secret = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def launch(self) -> None:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_BOOTSTRAP_ACTIONS))
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            env.pop(name, None)
        log = open(os.path.join(self._log_dir, "moto_server.log"), "wb")  # noqa: SIM115 - lives with the process
        self._backend = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.backend_port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        _wait_for_port(self.backend_port, self._backend, "moto server")
        self._bootstrap_credentials()
        self.start()

    def _bootstrap_credentials(self) -> None:
        import boto3

        iam = boto3.client(
            "iam", endpoint_url=f"http://127.0.0.1:{self.backend_port}", region_name=_REGION,
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="normguide-tests")
        iam.put_user_policy(
            UserName="normguide-tests", PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17",
                                       "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        )
        access = iam.create_access_key(UserName="normguide-tests")["AccessKey"]
        self.key, self.secret = access["AccessKeyId"], access["SecretAccessKey"]

    @property
    def running(self) -> bool:
        return self._front is not None and self._front.poll() is None

    def start(self) -> None:
        """Bring the endpoint port (back) up; no-op if it is up."""
        if self.running:
            return
        self._front = subprocess.Popen(
            [sys.executable, str(_TESTS / "tcp_front.py"), str(self.port), str(self.backend_port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        line = self._front.stdout.readline() if self._front.stdout else b""
        if line.strip() != b"ready":
            _stop_process(self._front, hard=True)
            raise RuntimeError(f"could not listen on {self.endpoint_url} again")

    def stop(self) -> None:
        """Take the endpoint down abruptly: connections refused, open ones reset."""
        _stop_process(self._front, hard=True)
        self._front = None

    def close(self) -> None:
        self.stop()
        _stop_process(self._backend)

    # -- clients and configs -----------------------------------------------------------------
    @property
    def storage(self) -> dict[str, Any]:
        """StorageConfig-compatible dict: endpoint, region, the server's dummy access key."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region_name,
                "key": self.key, "secret": self.secret}

    @property
    def env_storage(self) -> dict[str, Any]:
        """StorageConfig-compatible dict with the endpoint and region only: the credentials come
        from the environment (:attr:`aws_env`), as they must for a Prefect flow run."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region_name}

    @property
    def aws_env(self) -> dict[str, str]:
        """The server's dummy access key as AWS environment variables."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": self.region_name}

    def storage_config(self, **overrides: Any) -> Any:
        from normguide.config import StorageConfig

        return StorageConfig(**{**self.storage, **overrides})

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region_name,
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"ng-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with tempfile.TemporaryDirectory(prefix="normguide-moto-") as log_dir:
        server = S3Server(log_dir)
        try:
            server.launch()
            yield server
        finally:
            server.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    s3_server.start()
    return s3_server.create_bucket()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
