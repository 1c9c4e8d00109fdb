"""Faults: a kill during ``save_checkpoint`` never loses the previous checkpoint, and a checkpoint
is checked against the model it is loaded into."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI

from numpyro_ebm import (
    PersistentContrastiveDivergence,
    Unnormalized,
    load_checkpoint,
    save_checkpoint,
)

# A writer that saves states [i, i, ..., i] (4 MB each) to the same path forever; it prints
# "ready" once it has imported everything and saved its first state.
WRITER = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    from numpyro_ebm import save_checkpoint

    path = sys.argv[1]
    i = 1
    save_checkpoint(path, {"step": jnp.asarray(i), "w": jnp.full((1_000_000,), float(i))})
    print("ready", flush=True)
    while True:
        i += 1
        save_checkpoint(path, {"step": jnp.asarray(i), "w": jnp.full((1_000_000,), float(i))})
    """
)


def _state(i):
    return {"step": jnp.asarray(i), "w": jnp.full((1_000_000,), float(i))}


def _assert_one_saved_state(path):
    state = load_checkpoint(path, like=_state(0))
    step = int(state["step"])
    assert step >= 0
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full((1_000_000,), float(step)))
    return step


@pytest.mark.slow
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.msgpack"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    save_checkpoint(path, _state(0))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    rng = random.Random(0)
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert child.stdout.readline().strip() == b"ready"
            # kill at a random moment of the save loop (each save takes ~10-50 ms)
            child.stdout.close()
            time.sleep(rng.uniform(0.0, 0.3))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        assert _assert_one_saved_state(path) >= 1


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, _state(1))

    def crash(fd):
        raise KeyboardInterrupt  # the process dies between write and rename

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    assert _assert_one_saved_state(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file is removed
    save_checkpoint(path, _state(3))
    assert _assert_one_saved_state(path) == 3


# checked against the model


BOX = dist.Uniform(-3.0 * jnp.ones(2), 3.0 * jnp.ones(2)).to_event(1)
DATA = jax.random.normal(jax.random.key(0), (64, 2))


def quadratic_model(data=None):
    mu = numpyro.param("mu", jnp.zeros(2))
    numpyro.sample(
        "x", Unnormalized(lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1), event_shape=(2,)), obs=data
    )


def other_model(data=None):
    theta = numpyro.param("theta", jnp.zeros(2))
    numpyro.sample(
        "x", Unnormalized(lambda x: 0.5 * jnp.sum((x - theta) ** 2, -1), event_shape=(2,)), obs=data
    )


def _svi(model, **pcd_options):
    options = {"num_chains": 16, "num_steps": 1, "init_dist": BOX, **pcd_options}
    pcd = PersistentContrastiveDivergence(partial(blackjax.mala, step_size=0.05), **options)
    return SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.msgpack"
    state = _svi(quadratic_model).init(jax.random.key(1), DATA)
    save_checkpoint(path, state)
    return path


def test_checkpoint_loads_into_the_same_model(saved):
    load_checkpoint(saved, like=_svi(quadratic_model).init(jax.random.key(2), DATA))


def test_checkpoint_of_another_model_names_the_params(saved):
    like = _svi(other_model).init(jax.random.key(2), DATA)
    with pytest.raises(ValueError, match=r"does not have the structure.*'mu'.*'theta'"):
        load_checkpoint(saved, like=like)


@pytest.mark.parametrize(
    "options, rows",
    [({"num_chains": 8}, 8), ({"buffer_size": 32}, 32)],
    ids=["num_chains", "buffer_size"],
)
def test_checkpoint_with_other_chain_or_buffer_size(saved, options, rows):
    like = _svi(quadratic_model, **options).init(jax.random.key(2), DATA)
    with pytest.raises(
        ValueError, match=rf"persistent chains: the checkpoint holds 16 of them.*`like` {rows}"
    ):
        load_checkpoint(saved, like=like)
