"""Faults: a kill during ``save_checkpoint`` never loses the previous checkpoint, and a checkpoint
is checked against the model it is loaded into."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
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


# divergence is not silent by default (no stable_update)


def scaled_model(data, scale=1.0):
    """A Gaussian energy of precision exp(log_s), times ``scale``; log_Z learnable (NCE/FCE)."""
    log_s = numpyro.param("log_s", 0.0)
    log_Z = numpyro.param("log_Z", 0.0)
    energy = lambda x: scale * 0.5 * jnp.exp(log_s) * jnp.sum(x**2, -1)  # noqa: E731
    numpyro.sample("x", Unnormalized(energy, (2,), log_Z=log_Z), obs=data)


def _estimator(name):
    import numpyro_ebm

    mala = partial(blackjax.mala, step_size=0.05)
    if name == "SM":
        return numpyro_ebm.ScoreMatching(), None
    if name == "SSM":
        return numpyro_ebm.SlicedScoreMatching(), None
    if name == "NCE":
        return numpyro_ebm.NoiseContrastiveEstimation(
            dist.Normal(jnp.zeros(2), 2.0).to_event(1)
        ), None
    if name == "CD":  # ULA with step 5 on curvature ~1: the negatives grow 4x per step
        return numpyro_ebm.ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=5.0), 80), None
    if name == "PCD":
        return PersistentContrastiveDivergence(mala, num_chains=16, init_dist=BOX), None
    if name == "FCE":
        guide = numpyro_ebm.flow_guide("x", 2, jax.random.key(0), flow="coupling-affine")
        return numpyro_ebm.FlowContrastiveEstimation(), guide
    raise AssertionError(name)


@pytest.mark.parametrize(  # FCE: 14 s; test_fce.test_errors and the others here cover the report
    "name", ["SM", "SSM", "NCE", "CD", "PCD", pytest.param("FCE", marks=pytest.mark.slow)]
)
def test_diverging_run_warns_during_the_run_and_check_fails(name):
    from numpyro_ebm import check_svi_result

    est, guide = _estimator(name)
    lr = 1e-2 if name == "CD" else 1e3  # CD diverges through its sampler, the rest through SGD
    svi = SVI(scaled_model, guide or est.guide, optax.sgd(lr), loss=est)
    with pytest.warns(
        RuntimeWarning, match=rf"{type(est).__name__}: non-finite loss; .*(reduce|lower)"
    ):
        result = svi.run(jax.random.key(1), 30, DATA, progress_bar=False)
        jax.effects_barrier()
    with pytest.raises(FloatingPointError, match=r"non-finite values in params\[.*'log_s'"):
        check_svi_result(result)


def test_check_fails_on_parameters_grown_without_bound():
    from numpyro_ebm import check_svi_result

    est = __import__("numpyro_ebm").DenoisingScoreMatching(0.1)
    svi = SVI(scaled_model, est.guide, optax.sgd(1e3), loss=est)
    result = svi.run(jax.random.key(1), 30, DATA, progress_bar=False)
    assert np.all(np.isfinite(np.asarray(result.params["log_s"])))  # finite, but absurd
    with pytest.raises(FloatingPointError, match=r"grew beyond max_abs_param=1e\+10.*'log_s'"):
        check_svi_result(result)
    check_svi_result(result, max_abs_param=float("inf"))  # the bound is the caller's


@pytest.mark.parametrize("name", ["NCE", "CD", "PCD"])
def test_huge_energies_freeze_adam_warn_and_check_fails(name):
    """Energies of order 1e30 overflow Adam's statistics and freeze the parameters with a finite
    loss. NCE's and PCD's losses are then huge too, which the default report sees. CD's chains,
    started at the data, reject every move, so its loss is 0 over huge energies: only the
    ``"full"`` report (the data's energy every step) warns during the run; the default one
    stays silent, and ``check_svi_result`` fails the run either way."""
    from numpyro_ebm import check_svi_result

    est, _ = _estimator(name if name != "CD" else "PCD")
    if name == "CD":
        est = __import__("numpyro_ebm").ContrastiveDivergence(
            partial(blackjax.mala, step_size=0.05)
        )
        svi = SVI(partial(scaled_model, scale=1e30), est.guide, optax.adam(1e-2), loss=est)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            result = svi.run(jax.random.key(1), 20, DATA, progress_bar=False)
            jax.effects_barrier()
        assert np.all(np.asarray(result.losses) == 0.0)  # the negatives are the data
        est = __import__("numpyro_ebm").ContrastiveDivergence(
            partial(blackjax.mala, step_size=0.05), report_nonfinite="full"
        )
    svi = SVI(partial(scaled_model, scale=1e30), est.guide, optax.adam(1e-2), loss=est)
    with pytest.warns(RuntimeWarning, match=r"exceeds 1e\+18 in magnitude.*freeze"):
        result = svi.run(jax.random.key(1), 20, DATA, progress_bar=False)
        jax.effects_barrier()
    assert float(result.params["log_s"]) == 0.0  # frozen at the initial value
    with pytest.raises(
        FloatingPointError, match=r"(optimizer state holds NaN or inf|frozen).*1e30"
    ):
        check_svi_result(result)


# A trainer that runs PCD through SVI in chunks of 5 updates and saves a checkpoint after each
# chunk (ckpt_<updates done>.msgpack, atomically), for ever; SIGKILLed at a random moment.
TRAINER = textwrap.dedent(
    """
    import sys
    from functools import partial
    import blackjax, jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, optax
    from numpyro.infer import SVI
    from numpyro_ebm import PersistentContrastiveDivergence, Unnormalized, save_checkpoint

    def model(data):
        mu = numpyro.param("mu", jnp.zeros(2))
        with numpyro.plate("data", data.shape[0], subsample_size=16):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1), (2,)),
                           obs=batch)

    def make():
        pcd = PersistentContrastiveDivergence(
            partial(blackjax.mala, step_size=0.1), num_steps=2, num_chains=32,
            init_dist=dist.Uniform(-3.0, 3.0).expand([2]).to_event(1))
        return SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)

    data = jax.random.normal(jax.random.key(0), (64, 2)) + 1.0
    svi = make()
    state = svi.init(jax.random.key(1), data)
    done = 0
    print("ready", flush=True)
    while True:
        state = svi.run(jax.random.key(2), 5, data, init_state=state, progress_bar=False).state
        done += 5
        save_checkpoint(f"{sys.argv[1]}/ckpt_{done}.msgpack", state)
    """
)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_bit_identical(tmp_path):
    """Kill a training process at a random moment; resuming from its last checkpoint to the
    same total number of updates gives exactly the parameters, chains, optimizer state and key
    of an uninterrupted run."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    deadline = time.time() + 120
    while not list(tmp_path.glob("ckpt_*.msgpack")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.2, 1.0))
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = max(int(p.stem.split("_")[1]) for p in tmp_path.glob("ckpt_*.msgpack"))
    total = done + 10

    namespace = {}
    exec(TRAINER.split("data = jax.random")[0], namespace)  # model and make(), not the loop
    make = namespace["make"]
    data = jax.random.normal(jax.random.key(0), (64, 2)) + 1.0

    svi = make()
    state = svi.init(jax.random.key(1), data)
    for _ in range(total // 5):  # the uninterrupted run, chunked exactly as the trainer
        state = svi.run(jax.random.key(2), 5, data, init_state=state, progress_bar=False).state

    svi = make()
    template = svi.init(jax.random.key(99), data)
    resumed = load_checkpoint(tmp_path / f"ckpt_{done}.msgpack", like=template)
    for _ in range((total - done) // 5):
        resumed = svi.run(jax.random.key(2), 5, data, init_state=resumed, progress_bar=False).state
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(state)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
