"""A battery of bad inputs over the public API, scored as a demanding user would (issue 15).

Each case feeds one bad input (a NaN, a wrong shape or dtype, an unknown option, a misspelt
parameter, a diverging run, a crafted checkpoint) to one public entry point and records what came
back:

* ``clear``   an error (or, where a result may still be usable, a warning) whose message names the
  argument at fault (one of the case's ``names``);
* ``unclear`` an error or warning that does not name it (raised from deep inside JAX, NumPyro,
  flax or pickle, or naming another argument);
* ``silent``  nothing: a result came back without a word (including code executed from a file);
* ``n/a``     the entry point does not exist in this version.

The same battery runs against any version of the package on ``sys.path`` (0.1's names are
translated where they differ), so before/after counts compare like with like::

    PYTHONPATH=<checkout of 0.1> python benchmarks/bad_inputs.py --out before.md
    python benchmarks/bad_inputs.py --out benchmarks/results/bad_inputs.md

It is a measurement, not a test: ``tests/test_bad_inputs.py`` holds the asserted cases.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI  # noqa: E402

import numpyro_ebm as ebm  # noqa: E402

V2 = not ebm.__version__.startswith("0.1")
NAN, INF = float("nan"), float("inf")
KEY = jax.random.key(0)

CASES: list[tuple[str, str, tuple[str, ...], object]] = []


def case(cls: str, *names: str):
    """Register ``fn`` as a case of class ``cls`` whose clear message names one of ``names``."""

    def register(fn):
        CASES.append((fn.__name__, cls, names, fn))
        return fn

    return register


def nonfinite_keys(params):
    """Names of the parameters holding NaN or inf (any pytree of arrays per name)."""
    bad = []
    for k, v in params.items():
        for leaf in jax.tree.leaves(v):
            arr = np.asarray(leaf) if hasattr(leaf, "dtype") else None
            if arr is not None and np.issubdtype(arr.dtype, np.inexact) and not np.all(
                np.isfinite(arr)
            ):
                bad.append(k)
                break
    return bad


def max_abs(v):
    leaves = [np.asarray(x) for x in jax.tree.leaves(v) if hasattr(x, "dtype")]
    return max((float(np.max(np.abs(x))) for x in leaves if x.size and np.issubdtype(x.dtype, np.inexact)), default=0.0)


def block(x):
    jax.block_until_ready(x)
    jax.effects_barrier()
    return x


# ---------------------------------------------------------------------------- shared pieces


def log_normal(x):
    return -0.5 * jnp.sum(x**2, -1)


def energy(x):
    return 0.5 * jnp.sum(x**2, -1)


def mala(logdensity_fn, step_size=0.1):
    import blackjax

    return blackjax.mala(logdensity_fn, step_size)


def chains(**overrides):
    args = dict(
        rng_key=KEY, logdensity_fn=log_normal, kernel=mala, init_positions=jnp.zeros((8, 2)),
        num_steps=5,
    )
    args.update(overrides)
    return block(ebm.sample_chains(**args))


def quadratic_model(data=None):
    mu = numpyro.param("mu", jnp.zeros(2))
    numpyro.sample("x", ebm.Unnormalized(lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1), (2,)), obs=data)


def scaled_model(data=None):
    """A Gaussian EBM whose scale can blow up: log Z learned for NCE."""
    mu = numpyro.param("mu", jnp.zeros(2))
    log_prec = numpyro.param("log_prec", 0.0)
    log_Z = numpyro.param("log_Z", 0.0)
    energy = lambda x: 0.5 * jnp.exp(log_prec) * jnp.sum((x - mu) ** 2, -1)  # noqa: E731
    numpyro.sample("x", ebm.Unnormalized(energy, (2,), log_Z=log_Z), obs=data)


DATA = jax.random.normal(jax.random.key(1), (64, 2))
NAN_DATA = DATA.at[5, 1].set(NAN)
BOX = dist.Uniform(-3.0 * jnp.ones(2), 3.0 * jnp.ones(2)).to_event(1)


def guide_for(loss, model):
    if hasattr(loss, "make_guide"):
        return loss.make_guide(model)
    if hasattr(loss, "guide"):
        return loss.guide
    return ebm.no_guide


def train(loss, model=quadratic_model, data=DATA, lr=1e-2, num_updates=20, guide=None):
    guide = guide_for(loss, model) if guide is None else guide
    svi = SVI(model, guide, optax.adam(lr), loss=loss)
    result = svi.run(KEY, num_updates, data, progress_bar=False)
    block(result.params)
    bad = nonfinite_keys(result.params)
    if bad:
        return "non-finite params " + str(bad)
    return result


def ising(coupling=1.0, field=0.0, beta=1.0, shape=(4, 4)):
    if V2:
        model = ebm.models.Ising(shape)
        return model, model.init_params(coupling=coupling, field=field, beta=beta)
    return ebm.models.Ising(shape, coupling=coupling, field=field, beta=beta), None


def ais(**overrides):
    args = dict(num_chains=8, num_temperatures=8)
    target = overrides.pop("target", energy)
    base = overrides.pop("base", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    kernel = overrides.pop("kernel", mala)
    args.update(overrides)
    if not V2 and "num_steps" in args:
        args["num_steps_per_temperature"] = args.pop("num_steps")
    return block(ebm.logz_ais(KEY, target, base, kernel, **args))


def heldout(model=quadratic_model, params=None, data=DATA, **kw):
    fn = ebm.heldout_log_likelihood if V2 else ebm.log_likelihood
    params = {"mu": jnp.zeros(2)} if params is None else params
    kw.setdefault("logz", 0.0)
    return block(fn(model, params, data, **kw))


# ---------------------------------------------------------------------------- sample_chains


@case("7", "init_positions")
def chains_init_nan():
    chains(init_positions=jnp.full((8, 2), NAN))


@case("7", "init_positions")
def chains_init_inf():
    chains(init_positions=jnp.full((8, 2), INF))


@case("7", "init_positions")
def chains_init_int():
    chains(init_positions=jnp.zeros((8, 2), int))


@case("7", "init_positions")
def chains_zero_chains():
    chains(init_positions=jnp.zeros((0, 2)))


@case("7", "init_positions", "event_shape")
def chains_init_wrong_event_shape_for_distribution():
    chains(logdensity_fn=ebm.Unnormalized(energy, (2,)), init_positions=jnp.zeros((8, 3)))


@case("7", "num_steps")
def chains_negative_steps():
    chains(num_steps=-1)


@case("7", "num_steps")
def chains_float_steps():
    chains(num_steps=2.5)


@case("7", "num_samples")
def chains_negative_samples():
    chains(num_samples=-2)


@case("7", "num_samples")
def chains_more_samples_than_steps():
    chains(num_samples=50, num_steps=5)


@case("7", "thin")
def chains_thin_zero():
    chains(num_samples=2, thin=0)


@case("7", "thin")
def chains_thin_negative():
    chains(num_samples=2, thin=-1)


@case("7", "rng_key")
def chains_int_seed():
    chains(rng_key=0)


@case("7", "rng_key")
def chains_key_batch():
    chains(rng_key=jax.random.split(KEY, 3))


@case("7", "logdensity_fn")
def chains_logdensity_not_callable():
    chains(logdensity_fn="normal")


@case("7", "kernel")
def chains_kernel_string():
    chains(kernel="mala")


@case("3", "log density", "logdensity", "non-finite", "NaN")
def chains_all_nan_logdensity():
    chains(logdensity_fn=lambda x: jnp.nan * jnp.sum(x, -1))


@case("6", "logdensity_fn", "shape")
def chains_logdensity_wrong_shape():
    chains(logdensity_fn=lambda x: -0.5 * x**2)


@case("3", "diverg", "step_size", "non-finite")
def chains_ula_diverges():
    chains(kernel=lambda f: ebm.ula(f, step_size=50.0), num_steps=50)


@case("3", "diverg", "step_size", "non-finite")
def chains_mala_huge_step_all_rejected():
    r = chains(kernel=lambda f: mala(f, 1e6), num_steps=20)
    if float(np.nanmean(r.acceptance_rate)) == 0.0:
        return "all proposals rejected, no word"


@case("6", "init_positions", "spins", "values")
def chains_ising_invalid_spins():
    model, params = ising()
    if V2:
        dist_ = model.distribution(params)
        block(ebm.sample_chains(KEY, dist_, None, jnp.zeros((4, 4, 4)), 3))
    else:
        block(ebm.sample_chains(KEY, model.logdensity, model.kernel, jnp.zeros((4, 4, 4)), 3))


@case("7", "init_state")
def chains_init_state_wrong():
    chains(init_state={"position": 1})


# ---------------------------------------------------------------------------- ula


@case("7", "step_size")
def ula_zero_step():
    ebm.ula(log_normal, step_size=0.0)


@case("7", "step_size")
def ula_negative_step():
    ebm.ula(log_normal, step_size=-0.1)


@case("7", "step_size")
def ula_nan_step():
    ebm.ula(log_normal, step_size=NAN)


@case("7", "step_size")
def ula_inf_step():
    ebm.ula(log_normal, step_size=INF)


@case("7", "step_size")
def ula_string_step():
    ebm.ula(log_normal, step_size="0.1")


@case("7", "logdensity_fn")
def ula_not_callable():
    ebm.ula(3.0, step_size=0.1)


# ---------------------------------------------------------------------------- Unnormalized / energy_fn


@case("7", "energy_fn")
def unnormalized_energy_not_callable():
    ebm.Unnormalized(3.0)


@case("7", "event_shape")
def unnormalized_negative_event_shape():
    ebm.Unnormalized(energy, (-2,))


@case("6", "log_Z")
def unnormalized_nan_log_Z():
    ebm.Unnormalized(energy, (2,), log_Z=NAN)


@case("6", "log_Z")
def unnormalized_inf_log_Z():
    ebm.Unnormalized(energy, (2,), log_Z=INF)


@case("6", "energy_fn", "shape")
def unnormalized_transposed_energy():
    block(ebm.Unnormalized(lambda x: x.T).log_prob(jnp.ones((2, 3))))


@case("6", "energy_fn", "shape")
def unnormalized_energy_keeps_event_axis():
    block(ebm.Unnormalized(lambda x: x**2, (2,)).log_prob(jnp.ones((5, 2))))


@case("6", "value", "shape", "event_shape")
def unnormalized_validate_args_wrong_value_shape():
    block(ebm.Unnormalized(energy, (2,), validate_args=True).log_prob(jnp.ones((5, 3))))


@case("6", "value", "support")
def unnormalized_validate_args_outside_support():
    d = ebm.Unnormalized(energy, (2,), support=dist.constraints.positive, validate_args=True)
    block(d.log_prob(-jnp.ones((5, 2))))


@case("6", "energy_fn", "NaN", "non-finite")
def unnormalized_validate_args_nan_energy():
    d = ebm.Unnormalized(lambda x: jnp.nan * energy(x), (2,), validate_args=True)
    block(d.log_prob(jnp.ones((5, 2))))


@case("7", "support")
def unnormalized_support_string():
    ebm.Unnormalized(energy, (2,), support="real")


@case("7", "site")
def energy_fn_unknown_site():
    block(ebm.energy_fn(quadratic_model, "y")({"mu": jnp.zeros(2)}, DATA))


@case("1", "params", "mu_")
def energy_fn_misspelt_param():
    block(ebm.energy_fn(quadratic_model, "x")({"mu_": jnp.ones(2)}, DATA))


@case("1", "params", "mu")
def energy_fn_params_not_dict():
    block(ebm.energy_fn(quadratic_model, "x")(jnp.ones(2), DATA))


@case("1", "params", "mu")
def energy_fn_wrong_param_shape():
    block(ebm.energy_fn(quadratic_model, "x")({"mu": jnp.ones(3)}, DATA))


@case("1", "params", "net$params")
def energy_fn_flax_params_missing():
    """Parameters of a run whose dict lacks the network (e.g. the wrong run's)."""
    import flax.linen as nn
    from numpyro.contrib.module import flax_module

    def model(data=None):
        net = flax_module("net", nn.Dense(1), input_shape=(1, 2))
        scale = numpyro.param("scale", 1.0)
        numpyro.sample("x", ebm.Unnormalized(lambda x: scale * net(x)[..., 0], (2,)), obs=data)

    block(ebm.energy_fn(model, "x")({"scale": 2.0}, DATA))


# ---------------------------------------------------------------------------- partition functions


@case("4", "energy_fn", "NaN")
def quadrature_nan_region():
    block(ebm.logz_quadrature(lambda x: jnp.where(x[:, 0] > 0, NAN, x[:, 0] ** 2), -5.0, 5.0, 64))


@case("4", "box", "low", "high")
def quadrature_box_too_small():
    block(ebm.logz_quadrature(lambda x: 0.5 * x[:, 0] ** 2, -1.0, 1.0))


@case("7", "low", "high")
def quadrature_low_above_high():
    block(ebm.logz_quadrature(lambda x: 0.5 * x[:, 0] ** 2, 5.0, -5.0))


@case("7", "num_points")
def quadrature_zero_points():
    block(ebm.logz_quadrature(lambda x: 0.5 * x[:, 0] ** 2, -5.0, 5.0, 0))


@case("7", "low")
def quadrature_nan_low():
    block(ebm.logz_quadrature(lambda x: 0.5 * x[:, 0] ** 2, NAN, 5.0))


@case("7", "low", "high", "dim")
def quadrature_dim_mismatch():
    block(ebm.logz_quadrature(energy, jnp.array([-5.0, -5.0]), jnp.array([5.0, 5.0, 5.0])))


@case("4", "energy_fn", "inf", "non-finite")
def quadrature_energy_inf_everywhere():
    block(ebm.logz_quadrature(lambda x: jnp.inf * jnp.ones(x.shape[0]), -5.0, 5.0, 16))


@case("7", "num_units")
def exact_zero_units():
    block(ebm.logz_exact(lambda s: s.sum(-1), 0))


@case("7", "num_units")
def exact_too_many_units():
    block(ebm.logz_exact(lambda s: s.sum(-1), 60))


@case("7", "values")
def exact_empty_values():
    block(ebm.logz_exact(lambda s: s.sum(-1), 3, values=()))


@case("4", "energy_fn", "NaN")
def exact_nan_energy():
    block(ebm.logz_exact(lambda s: jnp.where(s[:, 0] > 0, NAN, 0.0), 3))


@case("7", "chunk_size", "batch_size")
def exact_zero_chunk():
    kw = {"chunk_size": 0} if V2 else {"batch_size": 0}
    block(ebm.logz_exact(lambda s: s.sum(-1), 3, **kw))


# ---------------------------------------------------------------------------- AIS


@case("7", "base")
def ais_base_without_to_event():
    ais(base=dist.Normal(jnp.zeros(2), 1.0))


@case("7", "betas")
def ais_nonfinite_betas():
    ais(betas=jnp.array([0.0, 0.5, INF, 1.0]))


@case("7", "betas")
def ais_decreasing_betas():
    ais(betas=jnp.array([0.0, 0.7, 0.5, 1.0]))


@case("7", "betas")
def ais_betas_not_from_zero():
    ais(betas=jnp.array([0.2, 0.5, 1.0]))


@case("7", "num_chains")
def ais_zero_chains():
    ais(num_chains=0)


@case("7", "num_temperatures")
def ais_zero_temperatures():
    ais(num_temperatures=0)


@case("7", "num_steps")
def ais_zero_steps():
    ais(num_steps=0)


@case("7", "schedule")
def ais_unknown_schedule():
    ais(schedule="cosine")


@case("5", "kernel")
def ais_kernel_ignores_density():
    import blackjax

    fixed = blackjax.mala(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2, -1), 0.3)
    ais(kernel=lambda logdensity_fn: fixed, num_chains=64, num_temperatures=50)


@case("4", "NaN", "log-weight", "energy")
def ais_nan_energy_region():
    ais(target=lambda x: jnp.where(x[..., 0] > 1.5, NAN, energy(x)), num_chains=64)


@case("7", "kernel")
def ais_kernel_not_callable():
    ais(kernel="mala")


@case("7", "rng_key")
def ais_int_seed():
    block(ebm.logz_ais(0, energy, dist.Normal(jnp.zeros(2), 1.0).to_event(1), mala,
                       num_chains=4, num_temperatures=4))


# ---------------------------------------------------------------------------- likelihoods


@case("4", "logz")
def heldout_nan_logz():
    heldout(logz=NAN)


@case("7", "logz")
def heldout_unknown_logz_method():
    heldout(logz="simpson")


@case("1", "params")
def heldout_misspelt_params():
    heldout(params={"nu": jnp.zeros(2)})


@case("1", "params", "log_prec", "lacks", "missing")
def heldout_missing_param():
    heldout(model=scaled_model, params={"mu": jnp.zeros(2)})


@case("4", "data")
def heldout_nan_data():
    heldout(data=NAN_DATA)


@case("6", "data", "shape")
def heldout_wrong_data_shape():
    heldout(data=jnp.zeros((4, 3)))


@case("7", "site")
def heldout_unknown_site():
    heldout(site="y")


@case("6", "x", "values")
def pll_values_outside():
    block(ebm.pseudo_log_likelihood(lambda s: s.sum(-1), jnp.array([[0.0, 2.0]]), (0, 1)))


@case("6", "x")
def pll_nan_x():
    block(ebm.pseudo_log_likelihood(lambda s: s.sum(-1), jnp.array([[0.0, NAN]]), (0, 1)))


@case("7", "values")
def pll_empty_values():
    block(ebm.pseudo_log_likelihood(lambda s: s.sum(-1), jnp.array([[0.0, 1.0]]), ()))


@case("7", "chunk_size", "site_batch_size")
def pll_zero_chunk():
    kw = {"chunk_size": 0} if V2 else {"site_batch_size": 0}
    block(ebm.pseudo_log_likelihood(lambda s: s.sum(-1), jnp.array([[0.0, 1.0]]), (0, 1), **kw))


# ---------------------------------------------------------------------------- estimator options


def cd(**kw):
    return ebm.ContrastiveDivergence(mala, **kw)


def pcd(**kw):
    kw.setdefault("num_chains", 8)
    kw.setdefault("init_dist", BOX)
    return ebm.PersistentContrastiveDivergence(mala, **kw)


@case("7", "kernel")
def cd_kernel_string():
    train(ebm.ContrastiveDivergence("mala"))


@case("7", "kernel")
def cd_kernel_built_algorithm():
    train(ebm.ContrastiveDivergence(mala(log_normal)))


@case("7", "num_steps")
def cd_zero_steps():
    train(cd(num_steps=0))


@case("7", "num_steps")
def cd_negative_steps():
    train(cd(num_steps=-3))


@case("7", "alpha")
def cd_negative_alpha():
    train(cd(alpha=-1.0))


@case("7", "alpha")
def cd_nan_alpha():
    train(cd(alpha=NAN))


@case("7", "sites")
def cd_unknown_site():
    train(cd(sites=["y"]))


@case("7", "num_chains")
def pcd_zero_chains():
    train(pcd(num_chains=0))


@case("7", "buffer_size")
def pcd_buffer_smaller_than_chains():
    train(pcd(buffer_size=4))


@case("7", "reinit_prob")
def pcd_reinit_above_one():
    train(pcd(reinit_prob=1.5))


@case("7", "init_dist")
def pcd_init_dist_wrong_shape():
    train(pcd(init_dist=dist.Normal(jnp.zeros(3), 1.0).to_event(1)))


@case("7", "init_dist")
def pcd_init_dist_integers():
    train(pcd(init_dist=dist.Bernoulli(0.5 * jnp.ones(2)).to_event(1)))


@case("7", "init_dist")
def pcd_init_dist_not_a_distribution():
    train(pcd(init_dist=jnp.zeros(2)))


@case("7", "chunk_size")
def sm_zero_chunk():
    train(ebm.ScoreMatching(chunk_size=0))


@case("7", "num_projections")
def ssm_zero_projections():
    train(ebm.SlicedScoreMatching(num_projections=0))


@case("7", "projection")
def ssm_unknown_projection():
    train(ebm.SlicedScoreMatching(projection="sphere"))


@case("7", "sigma")
def dsm_zero_sigma():
    train(ebm.DenoisingScoreMatching(0.0))


@case("7", "sigma")
def dsm_negative_sigma():
    train(ebm.DenoisingScoreMatching(-0.1))


@case("7", "sigma")
def dsm_nan_sigma():
    train(ebm.DenoisingScoreMatching(NAN))


@case("7", "noise")
def nce_noise_without_to_event():
    train(ebm.NoiseContrastiveEstimation(dist.Normal(jnp.zeros(2), 1.0)), model=scaled_model)


@case("7", "noise", "shape")
def nce_noise_wrong_shape():
    train(ebm.NoiseContrastiveEstimation(dist.Normal(jnp.zeros(3), 1.0).to_event(1)),
          model=scaled_model)


@case("7", "num_noise")
def nce_zero_noise():
    train(ebm.NoiseContrastiveEstimation(dist.Normal(jnp.zeros(2), 1.0).to_event(1), num_noise=0),
          model=scaled_model)


@case("7", "noise")
def nce_noise_not_a_distribution():
    train(ebm.NoiseContrastiveEstimation("gaussian"), model=scaled_model)


@case("7", "log_Z", "NCE")
def nce_without_learned_log_Z():
    train(ebm.NoiseContrastiveEstimation(dist.Normal(jnp.zeros(2), 1.0).to_event(1)))


@case("7", "num_noise")
def fce_zero_noise():
    ebm.FlowContrastiveEstimation(num_noise=0)


@case("7", "flow_mle_weight")
def fce_negative_anchor():
    ebm.FlowContrastiveEstimation(flow_mle_weight=-1.0)


@case("7", "rng_key", "key")
def flow_guide_int_key():
    if V2:
        ebm.flow_guide("x", 2, 0)
    else:
        ebm.flow_guide("x", 2, "0")


@case("7", "flow")
def flow_guide_unknown_flow():
    ebm.flow_guide("x", 2, jax.random.key(0) if V2 else 0, flow="glow")


@case("7", "event_dim")
def flow_guide_zero_dim():
    ebm.flow_guide("x", 0, jax.random.key(0) if V2 else 0)


# ---------------------------------------------------------------------------- class 2: NaN data


def fce_pair():
    guide = ebm.flow_guide("x", 2, jax.random.key(0) if V2 else 0, flow="coupling-affine")
    return ebm.FlowContrastiveEstimation(), guide


@case("2", "data")
def nan_data_cd():
    return train(cd(), data=NAN_DATA)


@case("2", "data")
def nan_data_pcd():
    return train(pcd(), data=NAN_DATA)


@case("2", "data")
def nan_data_cd_late_rows():
    """NaN rows outside the first minibatch reach a jitted update."""
    return train_minibatches(cd())


@case("2", "data")
def nan_data_pcd_guide_late_rows():
    return train_minibatches(pcd())


@case("2", "data")
def nan_data_sm():
    return train(ebm.ScoreMatching(), data=NAN_DATA)


@case("2", "data")
def nan_data_sm_user_guide():
    def guide(data=None):
        pass

    return train(ebm.ScoreMatching(), data=NAN_DATA, guide=guide)


@case("2", "data")
def nan_data_ssm():
    return train(ebm.SlicedScoreMatching(), data=NAN_DATA)


@case("2", "data")
def nan_data_dsm():
    return train(ebm.DenoisingScoreMatching(0.1), data=NAN_DATA)


@case("2", "data")
def nan_data_nce():
    noise = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    return train(ebm.NoiseContrastiveEstimation(noise), model=scaled_model, data=NAN_DATA)


@case("2", "data")
def nan_data_fce():
    loss, guide = fce_pair()
    return train(loss, model=scaled_model, data=NAN_DATA, guide=guide)


@case("2", "data")
def inf_data_cd():
    return train(cd(), data=DATA.at[3, 0].set(INF))


def train_minibatches(loss, model=quadratic_model):
    data = DATA.at[40:].set(NAN)
    guide = guide_for(loss, model)
    svi = SVI(model, guide, optax.adam(1e-2), loss=loss)
    state = svi.init(KEY, data[:16])
    update = jax.jit(svi.update)
    for start in range(0, 64, 16):
        state, _ = update(state, data[start : start + 16])
    params = block(svi.get_params(state))
    bad = nonfinite_keys(params)
    if bad:
        return "non-finite params " + str(bad)


# ---------------------------------------------------------------------------- class 3: divergence


def linear_model(data=None):
    """A Gaussian EBM with its precision as a raw parameter: a large step makes it negative and
    the energy unbounded below, so the losses overflow."""
    mu = numpyro.param("mu", jnp.zeros(2))
    prec = numpyro.param("prec", 1.0)
    log_Z = numpyro.param("log_Z", 0.0)
    energy = lambda x: 0.5 * prec * jnp.sum((x - mu) ** 2, -1)  # noqa: E731
    numpyro.sample("x", ebm.Unnormalized(energy, (2,), log_Z=log_Z), obs=data)


def diverging(loss, model=linear_model, stable=False, lr=10.0, guide=None):
    guide = guide_for(loss, model) if guide is None else guide
    svi = SVI(model, guide, optax.sgd(lr), loss=loss)
    kwargs = {"stable_update": True} if stable else {}
    result = svi.run(KEY, 30, 3.0 * DATA, progress_bar=False, **kwargs)
    block(result.params)
    bad = nonfinite_keys(result.params)
    if bad:
        return "non-finite params " + str(bad)
    big = [k for k, v in result.params.items() if max_abs(v) > 1e6]
    if big:
        return "params grew past 1e6 " + str(big)
    if V2:
        ebm.check_svi_result(result)
    if "prec" in result.params and float(result.params["prec"]) <= 0:
        return "negative precision (energy unbounded below), no word"


DIVERGING = {
    "sm": lambda: ebm.ScoreMatching(),
    "ssm": lambda: ebm.SlicedScoreMatching(),
    "dsm": lambda: ebm.DenoisingScoreMatching(0.1),
    "nce": lambda: ebm.NoiseContrastiveEstimation(dist.Normal(jnp.zeros(2), 1.0).to_event(1)),
    "cd": lambda: cd(),
}
for _name, _make in DIVERGING.items():
    for _stable in (False, True):
        CASES.append((
            f"diverge_{_name}{'_stable' if _stable else ''}", "3",
            ("diverg", "learning rate", "non-finite", "NaN", "skipped"),
            (lambda make=_make, stable=_stable: diverging(make(), stable=stable)),
        ))


@case("3", "diverg", "learning rate", "non-finite", "NaN", "skipped")
def diverge_fce():
    loss, guide = fce_pair()
    return diverging(loss, guide=guide, lr=50.0)


@case("3", "collapse", "flat", "vanish", "learning rate")
def collapse_sm_exp_precision():
    """Too large a step sends log-precision to -137: a flat energy, a loss of 0, no NaN."""
    return diverging(ebm.ScoreMatching(), model=scaled_model, lr=10.0) or collapsed()


def collapsed():
    return "collapsed to a flat energy (log-precision << 0), no word"


def frozen_model(data=None):
    mu = numpyro.param("mu", jnp.zeros(2))
    log_Z = numpyro.param("log_Z", 0.0)
    energy = lambda x: 1e30 * (1.0 + 0.5 * jnp.sum((x - mu) ** 2, -1))  # noqa: E731
    numpyro.sample("x", ebm.Unnormalized(energy, (2,), log_Z=log_Z), obs=data)


def frozen(loss):
    svi = SVI(frozen_model, guide_for(loss, frozen_model), optax.adam(1e-2), loss=loss)
    result = svi.run(KEY, 20, DATA + 1.0, progress_bar=False)
    block(result.params)
    if np.allclose(np.asarray(result.params["mu"]), 0.0):
        if V2:
            ebm.check_svi_result(result)
        return "parameters never moved"


for _name, _make in {"cd": lambda: cd(), "pcd": lambda: pcd(),
                     "nce": DIVERGING["nce"]}.items():
    CASES.append((f"frozen_huge_energy_{_name}", "3",
                  ("energy", "1e", "overflow", "frozen", "huge", "non-finite"),
                  (lambda make=_make: frozen(make()))))


# ---------------------------------------------------------------------------- models


@case("6", "coupling")
def ising_nan_coupling():
    ising(coupling=NAN)


@case("6", "beta")
def ising_inf_beta():
    ising(beta=INF)


@case("6", "field")
def ising_nan_field():
    ising(field=NAN)


@case("7", "shape")
def ising_negative_shape():
    ising(shape=(-4, 4))


@case("7", "shape")
def ising_zero_shape():
    ising(shape=(0, 4))


@case("7", "num_chains")
def ising_init_spins_zero_chains():
    model, _ = ising()
    block(model.init_spins(KEY, 0))


@case("7", "kind")
def ising_init_spins_unknown_kind():
    model, _ = ising()
    block(model.init_spins(KEY, 2, kind="checker"))


@case("6", "s", "spins", "x")
def ising_energy_non_spin_values():
    model, params = ising()
    s = jnp.zeros((4, 4))
    block(model.energy(params, s) if V2 else model.energy(s))


@case("6", "s", "spins", "shape", "x")
def ising_energy_wrong_shape():
    model, params = ising()
    s = jnp.ones((5, 5))
    block(model.energy(params, s) if V2 else model.energy(s))


@case("7", "num_visible")
def rbm_zero_visible():
    ebm.models.RBM(0, 3)


@case("7", "num_hidden")
def rbm_negative_hidden():
    ebm.models.RBM(4, -1)


@case("6", "data")
def rbm_non_binary_data():
    rbm_train(jnp.zeros((8, 3)).at[0, 0].set(0.3))


@case("6", "data")
def rbm_nan_data():
    rbm_train(jnp.zeros((8, 3)).at[0, 0].set(NAN))


@case("6", "data", "shape", "num_visible")
def rbm_wrong_width_data():
    rbm_train(jnp.zeros((8, 5)))


def rbm_train(data):
    rbm = ebm.models.RBM(3, 2)
    loss = ebm.ContrastiveDivergence(None if V2 else rbm.kernel(), num_steps=1)
    svi = SVI(rbm.model, ebm.no_guide, optax.adam(1e-2), loss=loss)
    result = svi.run(KEY, 3, data, progress_bar=False)
    block(result.params)


@case("7", "sigma")
def gbrbm_negative_sigma():
    ebm.models.GaussianBernoulliRBM(3, 2, sigma=-1.0)


@case("6", "data")
def dbm_non_binary_data():
    dbm = ebm.models.DBM(3, 2, 2)
    if V2:
        loss = ebm.PersistentContrastiveDivergence(
            None, num_chains=4, num_steps=1, init_dist=ebm.models.bernoulli_base(dbm.num_units))
        svi = SVI(dbm.model, loss.guide, optax.adam(1e-2), loss=loss)
        block(svi.run(KEY, 2, jnp.full((8, 3), 0.5), progress_bar=False).params)
    else:
        block(dbm.fit(KEY, jnp.full((8, 3), 0.5), num_steps=2))


@case("7", "theta", "params")
def expfam_wrong_theta_shape():
    family = ebm.models.ExponentialFamily(lambda x: jnp.stack([x, x**2], -1))
    if V2:
        block(family.energy({"theta": jnp.ones(3)}, jnp.ones(4)))
    else:
        block(family.energy(jnp.ones(4), jnp.ones(3)))


# ---------------------------------------------------------------------------- checkpoints


def svi_state():
    svi = SVI(quadratic_model, ebm.no_guide, optax.adam(1e-2), loss=cd())
    return svi.init(KEY, DATA)


@case("ckpt", "path", "/nonexistent/ckpt")
def ckpt_load_missing_file():
    if V2:
        ebm.load_checkpoint("/nonexistent/ckpt.msgpack", like=svi_state())
    else:
        ebm.load_checkpoint("/nonexistent/ckpt.pkl")


@case("ckpt", "path", "checkpoint", "msgpack")
def ckpt_crafted_pickle_runs_no_code():
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "pwned"

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        path = Path(tmp) / "ckpt"
        path.write_bytes(pickle.dumps(Exploit()))
        error = None
        try:
            if V2:
                ebm.load_checkpoint(path, like=svi_state())
            else:
                ebm.load_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - scored below, after the marker check
            error = err
        if marker.exists():
            return "the file executed code"
        if error is not None:
            raise error


@case("ckpt", "like")
def ckpt_other_model():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        ebm.save_checkpoint(path, {"mu": jnp.zeros(2)})
        if V2:
            ebm.load_checkpoint(path, like={"nu": jnp.zeros(2)})
        else:
            state = ebm.load_checkpoint(path)
            if "nu" not in state:
                return "loaded another model's checkpoint without a check"


@case("ckpt", "like", "num_chains", "shape")
def ckpt_other_chain_count():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        make = lambda n: SVI(quadratic_model, pcd(num_chains=n).make_guide(quadratic_model),  # noqa: E731
                             optax.adam(1e-2), loss=pcd(num_chains=n))
        ebm.save_checkpoint(path, make(8).init(KEY, DATA))
        svi = make(16)
        state = (ebm.load_checkpoint(path, like=svi.init(KEY, DATA)) if V2
                 else ebm.load_checkpoint(path))
        block(svi.update(state, DATA))
        return "resumed a checkpoint of 8 chains into 16"


@case("ckpt", "path", "/nonexistent-dir/sub")
def ckpt_save_into_missing_dir():
    ebm.save_checkpoint("/nonexistent-dir/sub/ckpt", {"mu": jnp.zeros(2)})


@case("ckpt", "path", "checkpoint", "truncated", "msgpack")
def ckpt_truncated_file():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        ebm.save_checkpoint(path, {"mu": jnp.zeros(2)})
        path.write_bytes(path.read_bytes()[:7])
        if V2:
            ebm.load_checkpoint(path, like={"mu": jnp.zeros(2)})
        else:
            ebm.load_checkpoint(path)


# ---------------------------------------------------------------------------- BlackJAXKernel


def normal_model():
    z = numpyro.sample("z", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    numpyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=jnp.ones(2))


def run_mcmc(kernel, **run_kw):
    from numpyro.infer import MCMC

    mcmc = MCMC(kernel, num_warmup=5, num_samples=5, progress_bar=False)
    mcmc.run(KEY, **run_kw)
    block(mcmc.get_samples())
    samples = mcmc.get_samples()
    if any(not np.all(np.isfinite(np.asarray(v))) for v in samples.values()):
        return "non-finite samples"


@case("4", "init_params")
def bjk_nan_init_params():
    return run_mcmc(ebm.BlackJAXKernel(mala, model=normal_model),
                    init_params={"z": jnp.full(2, NAN)})


@case("7", "latent site", "['z']")
def bjk_discrete_latent():
    def model():
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=1.0)

    return run_mcmc(ebm.BlackJAXKernel(mala, model=model))


@case("7", "kernel")
def bjk_kernel_string():
    return run_mcmc(ebm.BlackJAXKernel("nuts", model=normal_model))


@case("7", "model", "potential_fn")
def bjk_no_model():
    return run_mcmc(ebm.BlackJAXKernel(mala))


@case("7", "adapt")
def bjk_adapt_unknown_option():
    import blackjax

    return run_mcmc(ebm.BlackJAXKernel(blackjax.nuts, model=normal_model, adapt={"targt": 0.8}))


# ---------------------------------------------------------------------------- datasets, metrics


@case("7", "sample_shape")
def dataset_negative_sample_shape():
    ebm.datasets.eight_gaussians().sample(KEY, (-5,))


@case("7", "key", "rng_key")
def dataset_int_key():
    ebm.datasets.two_moons().sample(0, (5,))


@case("7", "std")
def dataset_negative_std():
    ebm.datasets.two_moons(std=-0.2)


@case("7", "std")
def dataset_nan_std():
    ebm.datasets.eight_gaussians(std=NAN)


@case("7", "x", "value")
def dataset_log_prob_wrong_dim():
    block(ebm.datasets.eight_gaussians().log_prob(jnp.zeros((5, 3))))


@case("7", "num_cells")
def dataset_checkerboard_zero_cells():
    ebm.datasets.checkerboard(num_cells=0)


def diag(name):
    return getattr(ebm.diagnostics, name, None) or getattr(ebm.evaluation, name)


@case("7", "x", "y", "dim", "shape")
def mmd_dim_mismatch():
    block(diag("mmd")(jnp.zeros((10, 2)), jnp.zeros((10, 3))))


@case("4", "x", "y", "NaN")
def mmd_nan():
    block(diag("mmd")(jnp.zeros((10, 2)).at[0, 0].set(NAN), jnp.zeros((10, 2))))


@case("7", "bandwidth")
def mmd_negative_bandwidth():
    block(diag("mmd")(jnp.zeros((10, 2)), jnp.ones((10, 2)), bandwidth=-1.0))


def metric(name):
    for module in (getattr(ebm, "evaluation", None), getattr(ebm, "applications", None)):
        if module is not None and hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(name)


@case("7", "estimate", "reference", "shape")
def psnr_shape_mismatch():
    block(metric("psnr")(jnp.zeros((4, 8)), jnp.zeros((4, 9))))


@case("7", "scores_normal", "scores_anomalous")
def auroc_empty():
    block(metric("auroc")(jnp.zeros((0,)), jnp.ones((5,))))


@case("4", "scores_normal", "scores_anomalous", "NaN")
def auroc_nan():
    block(metric("auroc")(jnp.array([0.0, NAN]), jnp.ones((5,))))


@case("4", "x", "NaN")
def anomaly_scores_nan():
    block(metric("anomaly_scores")(energy, jnp.zeros((4, 2)).at[0, 0].set(NAN)))


@case("7", "noise_scale")
def denoise_negative_noise():
    block(metric("denoise")(KEY, energy, jnp.zeros((2, 2)), -0.5, mala, num_steps=5,
                            num_samples=2, num_chains=2))


@case("4", "y")
def denoise_nan_image():
    block(metric("denoise")(KEY, energy, jnp.zeros((2, 2)).at[0, 0].set(NAN), 0.5, mala,
                            num_steps=5, num_samples=2, num_chains=2))


# ---------------------------------------------------------------------------- runner


def classify(fn, names):
    """Run ``fn`` and return ``(outcome, message)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            returned = fn()
        except (AttributeError, ImportError) as err:
            text = str(err)
            if "numpyro_ebm" in text and ("has no attribute" in text or "cannot import" in text):
                return "n/a", text.splitlines()[0][:160]
            return judge(err, names)
        except Exception as err:  # noqa: BLE001 - any exception is an outcome to score
            return judge(err, names)
    ours = [w for w in caught if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    for w in ours:
        text = str(w.message)
        if any(n.lower() in text.lower() for n in names):
            return "clear", f"{w.category.__name__}: {text.splitlines()[0][:160]}"
    if ours:
        text = str(ours[0].message)
        return "unclear", f"{ours[0].category.__name__}: {text.splitlines()[0][:160]}"
    return "silent", (returned if isinstance(returned, str) else "returned without a word")


def judge(err, names):
    text = f"{type(err).__name__}: {err}"
    first = " ".join(text.split())[:160]
    if any(n.lower() in str(err).lower() for n in names):
        return "clear", first
    return "unclear", first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the table here (markdown)")
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    rows, counts = [], Counter()
    start = time.perf_counter()
    for name, cls, names, fn in CASES:
        if args.k and args.k not in name:
            continue
        try:
            outcome, message = classify(fn, names)
        except BaseException:  # noqa: BLE001
            outcome, message = "unclear", traceback.format_exc().splitlines()[-1][:160]
        counts[outcome] += 1
        rows.append((name, cls, outcome, message.replace("|", "/")))
        print(f"{outcome:8s} {cls:5s} {name:48s} {message[:100]}", flush=True)
    total = sum(counts.values())
    summary = ", ".join(f"{k} {counts[k]}" for k in ("clear", "unclear", "silent", "n/a"))
    print(f"\nnumpyro_ebm {ebm.__version__}: {total} cases: {summary} "
          f"({time.perf_counter() - start:.0f} s)")
    by_class = {}
    for _, cls, outcome, _ in rows:
        by_class.setdefault(cls, Counter())[outcome] += 1
    table = ["| class | cases | clear | unclear | silent | n/a |", "|---|---|---|---|---|---|"]
    for cls in sorted(by_class):
        c = by_class[cls]
        table.append(f"| {cls} | {sum(c.values())} | {c['clear']} | {c['unclear']} | "
                     f"{c['silent']} | {c['n/a']} |")
    print("\n".join(table))
    if args.out:
        lines = [f"# Bad-input battery: numpyro_ebm {ebm.__version__}", "",
                 f"`python benchmarks/bad_inputs.py` ({time.strftime('%Y-%m-%d', time.gmtime())})",
                 "", f"{total} cases: {summary}.", "", *table, "",
                 "| case | class | outcome | message |", "|---|---|---|---|"]
        lines += [f"| {n} | {c} | {o} | {m} |" for n, c, o, m in rows]
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
