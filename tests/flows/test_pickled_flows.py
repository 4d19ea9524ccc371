"""A served flow run (``flow.serve``, ``register serve``) gets its flow pickled by value into a
fresh process (Prefect's ``run_flow_in_subprocess``); its parameters must still validate there."""

import subprocess
import sys

import cloudpickle

from normguide.flows.fan_out import generate_dataset_fan_out
from normguide.flows.generate_dataset import generate_dataset

CHILD = """
import sys, cloudpickle
for flow in cloudpickle.loads(sys.stdin.buffer.read()):
    print(flow.name, sorted(flow.validate_parameters({"config": {}})))
"""


def test_flows_validate_their_parameters_after_pickling_by_value():
    blob = cloudpickle.dumps([generate_dataset, generate_dataset_fan_out])
    res = subprocess.run([sys.executable, "-c", CHILD], input=blob, check=False, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = res.stdout.decode()
    assert "generate-dataset ['concept_ids', 'concepts_per_task', 'config', 'finalize']" in out, out
    assert "generate-dataset-fan-out ['config', 'deployment', 'poll_interval_s', 'shard_size', 'timeout_s']" in out, out
