"""Training robustness with the contrastive estimators: the NaN guard, checkpoint/resume, and
clear errors on bad input."""

import pickle
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
from numpyro.infer.svi import SVIRunResult

import numpyro_ebm
from numpyro_ebm.estimators import (
    PCD_STATE,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    no_guide,
)
from numpyro_ebm.training import (
    check_finite_params,
    check_svi_result,
    load_checkpoint,
    save_checkpoint,
)

DATA = jnp.asarray(np.random.default_rng(0).normal(size=(512, 2)) * [1.0, 0.5] + [0.5, -1.0])
BOX = dist.Uniform(-4.0, 4.0).expand([2]).to_event(1)


def model(data):
    mu = numpyro.param("mu", jnp.zeros(2))
    log_s = numpyro.param("log_s", jnp.zeros(2))
    energy = lambda x: 0.5 * jnp.sum(((x - mu) * jnp.exp(log_s)) ** 2, -1)
    with numpyro.plate("data", data.shape[0], subsample_size=64):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)


def diverging_pcd():
    # ULA with step 5 on an energy of curvature ~1: x <- x - 5 (x - mu) + noise grows 4x per step
    return PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=5.0), num_steps=80, num_chains=64, init_dist=BOX
    )


# ------------------------------------------------------------------------------------------
# NaN guard


@pytest.mark.slow  # 9 s; test_faults runs every estimator into divergence
def test_diverging_run_warns_and_check_names_params():
    pcd = diverging_pcd()
    svi = SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)
    with pytest.warns(RuntimeWarning, match="negative samples diverged.*step_size"):
        result = svi.run(jax.random.key(0), 5, DATA, progress_bar=False)
        jax.effects_barrier()
    assert not np.all(np.isfinite(np.asarray(result.params["mu"])))  # plain SVI: NaN params
    with pytest.raises(FloatingPointError, match=r"params\['mu'\].*step_size"):
        check_finite_params(result.params)
    with pytest.raises(FloatingPointError, match="non-finite"):
        check_svi_result(result)


def test_stable_update_keeps_params_finite_and_check_raises_on_a_stalled_run():
    pcd = diverging_pcd()
    svi = SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = svi.run(jax.random.key(0), 5, DATA, progress_bar=False, stable_update=True)
        jax.effects_barrier()
    check_finite_params(result.params)  # every update was skipped: params unchanged
    np.testing.assert_array_equal(result.params["mu"], jnp.zeros(2))
    assert np.all(np.isnan(np.asarray(result.losses)))
    # diverged chains were written back as fresh draws from init_dist
    assert np.all(np.isfinite(np.asarray(result.state.mutable_state[PCD_STATE]["*"]["positions"])))
    with pytest.raises(FloatingPointError, match="5 of 5 training steps.*skipped"):
        check_svi_result(result)


def test_apply_if_finite_skips_and_check_counts():
    pcd = diverging_pcd()
    svi = SVI(model, pcd.guide, optax.apply_if_finite(optax.adam(1e-2), 100), loss=pcd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = svi.run(jax.random.key(0), 4, DATA, progress_bar=False)
        jax.effects_barrier()
    check_finite_params(result.params)
    with pytest.raises(FloatingPointError, match="4 of 4 training steps"):
        check_svi_result(result)


def test_check_svi_result_warns_on_a_few_skipped_steps():
    losses = jnp.array([1.0, jnp.nan, 0.5] + [0.4] * 17)
    result = SVIRunResult({"mu": jnp.zeros(2)}, None, losses)
    with pytest.warns(RuntimeWarning, match="1 of 20 training steps"):
        check_svi_result(result)
    check_svi_result(SVIRunResult({"mu": jnp.zeros(2)}, None, jnp.ones(20)))  # silent


def test_healthy_run_passes_checks():
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1e-2), num_steps=5, num_chains=64, init_dist=BOX
    )
    svi = SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = svi.run(jax.random.key(0), 20, DATA, progress_bar=False, stable_update=True)
        jax.effects_barrier()
        check_svi_result(result)


# ------------------------------------------------------------------------------------------
# checkpoint and resume


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("progress_bar", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, progress_bar):
    def make():
        pcd = PersistentContrastiveDivergence(
            partial(blackjax.mala, step_size=0.05),
            num_steps=3,
            num_chains=32,
            buffer_size=128,
            init_dist=BOX,
        )
        return SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)

    key = jax.random.key(3)
    full = make().run(key, 20, DATA, progress_bar=progress_bar)

    first = make().run(key, 10, DATA, progress_bar=progress_bar)
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, first.state)

    svi = make()  # a fresh SVI, as in a new process
    # init sets up the parameter transforms; its state is only the template of the structure
    template = svi.init(jax.random.key(99), DATA)
    state = load_checkpoint(path, like=template)
    assert type(state) is type(first.state)  # the SVIState namedtuple
    _leaves_equal(state, first.state)
    resumed = svi.run(jax.random.key(123), 10, DATA, progress_bar=progress_bar, init_state=state)

    _leaves_equal(resumed.params, full.params)
    _leaves_equal(resumed.state, full.state)  # optimizer state, chains/buffer and key
    np.testing.assert_array_equal(resumed.losses, full.losses[10:])


def small_state():
    from numpyro.infer.svi import SVIState

    return SVIState(
        optim_state=(jnp.asarray(3), {"mu": jnp.asarray([0.5, -1.0]), "n": jnp.arange(3)}),
        mutable_state={PCD_STATE: {"*": {"positions": jnp.linspace(0.0, 1.0, 8).reshape(4, 2)}}},
        rng_key=jax.random.key(5),
    )


def test_checkpoint_round_trip_and_inspection(tmp_path):
    state = small_state()
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, state)
    restored = load_checkpoint(path, like=state)
    assert type(restored) is type(state)
    _leaves_equal(restored, state)
    assert jax.random.key_impl(restored.rng_key) == jax.random.key_impl(state.rng_key)
    # without a template: a flat dict {keystr path: leaf}, keys restored as typed keys
    flat = load_checkpoint(path)
    assert set(flat) == {
        ".optim_state[0]", ".optim_state[1]['mu']", ".optim_state[1]['n']",
        ".mutable_state['pcd_chains']['*']['positions']", ".rng_key",
    }  # fmt: skip
    _leaves_equal(flat[".rng_key"], state.rng_key)
    np.testing.assert_array_equal(flat[".optim_state[1]['n']"], np.arange(3))


def test_checkpoint_template_must_match(tmp_path):
    state = small_state()
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, state)
    other = state._replace(mutable_state=None)
    with pytest.raises(ValueError, match="`like` does not have the structure"):
        load_checkpoint(path, like=other)
    wrong_shape = state._replace(optim_state=(jnp.asarray(3), {"mu": jnp.zeros(3), "n": jnp.arange(3)}))
    with pytest.raises(ValueError, match=r"\['mu'\] is float32\[2\] in the checkpoint but float32\[3\]"):
        load_checkpoint(path, like=wrong_shape)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_checkpoint_refuses_a_pickle_without_running_it(tmp_path, protocol):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"state": _RunsCodeWhenUnpickled(marker)}, protocol=protocol))
    with pytest.raises(ValueError, match="pickle.*never loaded"):
        load_checkpoint(path, like=small_state())
    with pytest.raises(ValueError, match="pickle.*never loaded"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_refuses_other_files(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\x93NUMPY\x01\x00 not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------
# bad input


def test_model_without_unnormalized_site():
    def normal_model(data):
        mu = numpyro.param("mu", jnp.zeros(2))
        numpyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=data)

    cd = ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2))
    svi = SVI(normal_model, no_guide, optax.adam(1e-2), loss=cd)
    with pytest.raises(ValueError, match="no observed numpyro_ebm.Unnormalized site"):
        svi.run(jax.random.key(0), 2, DATA, progress_bar=False)


def test_data_with_nan():
    cd = ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2))
    svi = SVI(model, no_guide, optax.adam(1e-2), loss=cd)
    state = svi.init(jax.random.key(0), DATA)
    bad = DATA.at[:, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="observed data of site 'x'.*non-finite"):
        svi.update(state, bad)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"num_steps": 2.5}, TypeError, "num_steps"),
        ({"num_chains": 0}, ValueError, "num_chains"),
        ({"num_chains": 64, "buffer_size": 32}, ValueError, "buffer_size"),
        ({"reinit_prob": 1.5}, ValueError, "reinit_prob"),
        ({"reinit_prob": -0.1}, ValueError, "reinit_prob"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"init_dist": "uniform"}, TypeError, "init_dist"),
        ({"init_dist": {"x": 3.0}}, TypeError, "init_dist"),
    ],
)
def test_pcd_options_out_of_range(kwargs, error, match):
    with pytest.raises(error, match=match):
        PersistentContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), **kwargs)


def test_cd_options_out_of_range():
    with pytest.raises(ValueError, match="num_steps"):
        ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), num_steps=0)
    with pytest.raises(ValueError, match="alpha"):
        ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), alpha=float("nan"))


@pytest.mark.parametrize("estimator", [ContrastiveDivergence, PersistentContrastiveDivergence])
def test_kernel_must_be_a_factory(estimator):
    built = blackjax.mala(lambda x: -jnp.sum(x**2), step_size=0.1)  # an algorithm, not a factory
    with pytest.raises(TypeError, match="kernel.*factory"):
        estimator(built)
    with pytest.raises(TypeError, match="kernel.*factory"):
        estimator("mala")


def test_pcd_needs_its_guide():
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1e-2), num_chains=16, init_dist=BOX
    )
    svi = SVI(model, no_guide, optax.adam(1e-2), loss=pcd)
    with pytest.raises(ValueError, match=r"pcd\.guide"):
        svi.run(jax.random.key(0), 2, DATA, progress_bar=False)


def test_pcd_guide_needs_init_dist():
    pcd = PersistentContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), num_chains=16)
    svi = SVI(model, pcd.guide, optax.adam(1e-2), loss=pcd)
    with pytest.raises(ValueError, match=r"init_dist.*make_guide"):
        svi.init(jax.random.key(0), DATA)


def test_pcd_init_dist_with_wrong_event_shape():
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1e-2),
        num_chains=16,
        init_dist=dist.Uniform(-4.0, 4.0).expand([3]).to_event(1),
    )
    svi = SVI(model, pcd.make_guide(model), optax.adam(1e-2), loss=pcd)
    with pytest.raises(ValueError, match=r"init_dist.*event shape is \(2,\)"):
        svi.init(jax.random.key(0), DATA)
