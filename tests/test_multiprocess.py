"""Chains as global arrays: the helpers of numpyro_ebm.sampling.distributed over 4 devices of one
process (equal to the 1-device results here), and (slow) examples/multiprocess.py, whose 2 CPU
processes under jax.distributed must give the single-process results with the same seed."""

import json
import os
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_ebm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runs():
    """sample_chains and logz_ais; shard=True puts the chains on every device first."""
    from numpyro_ebm.sampling.distributed import gather, shard_chains

    x0 = jax.random.normal(jax.random.key(1), (8, 2))
    chains = numpyro_ebm.sample_chains(
        jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2), partial(numpyro_ebm.ula, step_size=0.1),
        shard_chains(x0), 20)
    ising = numpyro_ebm.models.Ising((4, 4))
    ais = numpyro_ebm.logz_ais(jax.random.key(2), ising.annealing_path(ising.init_params(beta=0.3)),
                               num_chains=8, num_temperatures=20)
    return {
        "positions": gather(chains.positions).tolist(),
        "log_weights": gather(ais.log_weights).tolist(),
        "devices": [len(chains.positions.sharding.device_set),
                    len(ais.log_weights.sharding.device_set)],
    }


_SCRIPT = """
import json, sys
import numpy as np, jax
from numpyro_ebm.sampling.distributed import (chain_sharding, chains_from_local, gather,
                                              replicate, shard_chains)
sys.path.insert(0, sys.argv[1])
from test_multiprocess import runs
assert jax.device_count() == 4
x = np.arange(16, dtype=np.float32).reshape(8, 2)
g = shard_chains({"a": x})["a"]
assert g.sharding == chain_sharding() and len(g.sharding.device_set) == 4
assert (gather(g) == x).all() and (gather(chains_from_local(x)) == x).all()
r = replicate({"p": x, "k": jax.random.key(3), "name": "kept"})
assert r["name"] == "kept" and r["p"].is_fully_replicated and len(r["p"].sharding.device_set) == 4
assert (jax.random.key_data(r["k"]) == jax.random.key_data(jax.random.key(3))).all()
try:
    shard_chains(np.zeros((6, 2)))
    raise AssertionError("no error")
except ValueError as err:
    assert "multiple of the 4 devices" in str(err), err
print(json.dumps(runs()))
"""


def test_four_devices_match_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", _SCRIPT, os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    four = json.loads(run.stdout.strip().splitlines()[-1])
    one = runs()
    assert four["devices"] == [4, 4] and one["devices"] == [1, 1]
    np.testing.assert_allclose(four["positions"], one["positions"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(four["log_weights"], one["log_weights"], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_two_processes_equal_one_process():
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "multiprocess.py")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "identical within tolerance" in run.stdout
    assert "chains on 4 (ULA), 4 (PCD), 4 (AIS)" in run.stdout
