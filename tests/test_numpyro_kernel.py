"""BlackJAXKernel: BlackJAX algorithms inside numpyro.infer.MCMC.

References are exact where possible (quadrature for a 2-D posterior, closed forms for Gaussian and
Gamma energies); tolerances are 4 Monte Carlo standard errors from the effective sample size.
"""

import functools
import os
import subprocess
import sys
import textwrap

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS, Predictive, init_to_median

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel, BlackJAXKernelState

Y = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, size=50), jnp.float32)


def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(3.0))
    numpyro.deterministic("sigma2", sigma**2)
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@functools.cache
def quadrature_moments():
    """Exact posterior mean and std of (mu, sigma) of `model` on a fine grid (float64)."""
    y = np.asarray(Y, np.float64)
    mu = np.linspace(y.mean() - 1.5, y.mean() + 1.5, 1201)[:, None]
    sigma = np.linspace(0.3, 2.5, 1201)[None, :]
    ss = ((y[None, None, :] - mu[..., None]) ** 2).sum(-1)
    logp = (
        -0.5 * (mu / 5.0) ** 2
        - 0.5 * (sigma / 3.0) ** 2
        - y.size * np.log(sigma)
        - 0.5 * ss / sigma**2
    )
    w = np.exp(logp - logp.max())
    w /= w.sum()
    out = {}
    for name, grid in (("mu", mu), ("sigma", sigma)):
        mean = (w * grid).sum()
        out[name] = (mean, np.sqrt((w * (grid - mean) ** 2).sum()))
    return out


def assert_moments(samples_by_chain, truth, min_ess=150):
    """Mean and std within 4 MC standard errors (ESS-based); chains must mix (ESS, R-hat)."""
    x = np.asarray(samples_by_chain, np.float64)
    ess = float(effective_sample_size(x))
    rhat = float(split_gelman_rubin(x))
    assert ess > min_ess and rhat < 1.05, f"chains do not mix: ess={ess:.0f}, r_hat={rhat:.3f}"
    mean, sd = truth
    flat = x.reshape(-1)
    se_mean = sd / np.sqrt(ess)
    se_sd = sd / np.sqrt(2 * ess)
    assert abs(flat.mean() - mean) < 4 * se_mean, (flat.mean(), mean, se_mean)
    assert abs(flat.std() - sd) < 4 * se_sd, (flat.std(), sd, se_sd)


KERNELS = {
    "mala": lambda: BlackJAXKernel(
        functools.partial(blackjax.mala, step_size=0.01), model=model, init_strategy=init_to_median
    ),
    "hmc": lambda: BlackJAXKernel(
        blackjax.hmc,
        model=model,
        step_size=0.04,
        inverse_mass_matrix=jnp.ones(2),
        num_integration_steps=8,
        init_strategy=init_to_median,
    ),
    "nuts_adapted": lambda: BlackJAXKernel(blackjax.nuts, model=model, adapt=True),
}
_RUNS = {}


def run(name, num_warmup=300, num_samples=1000):
    if name not in _RUNS:
        mcmc = MCMC(
            KERNELS[name](),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(
            jax.random.key(1), Y, extra_fields=("accept_prob", "diverging", "potential_energy")
        )
        _RUNS[name] = mcmc
    return _RUNS[name]


@pytest.mark.parametrize(  # nuts_adapted: 16 s, test_adapted_nuts_acceptance_and_step_size below
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "nuts_adapted" else n for n in KERNELS]
)
def test_posterior_moments_match_quadrature(name):
    mcmc = run(name)
    samples = mcmc.get_samples(group_by_chain=True)
    assert float(samples["sigma"].min()) > 0  # constrained values, not log(sigma)
    truth = quadrature_moments()
    for site in ("mu", "sigma"):
        assert_moments(samples[site], truth[site])


def test_adapted_nuts_acceptance_and_step_size():
    mcmc = run("nuts_adapted")
    extra = mcmc.get_extra_fields(group_by_chain=True)
    rate = np.asarray(extra["accept_prob"]).mean(1)
    # Target 0.8; the averaged step size of dual averaging ends slightly more conservative.
    assert np.all((rate > 0.65) & (rate < 0.99)), rate
    assert not np.any(extra["diverging"])
    step_size = np.asarray(mcmc.last_state.parameters["step_size"])
    imm = np.asarray(mcmc.last_state.parameters["inverse_mass_matrix"])
    assert step_size.shape == (4,) and imm.shape == (4, 2)  # one tuned set per chain
    # The tuned diagonal inverse mass matrix estimates the unconstrained posterior variances:
    # Var(mu) and Var(log sigma) ~ 1 / (2 n) = 0.01.
    truth = quadrature_moments()
    assert np.allclose(imm[:, 0], truth["mu"][1] ** 2, rtol=0.5)
    assert np.allclose(imm[:, 1], 1 / (2 * Y.size), rtol=0.5)


def test_mcmc_api_shapes_summary_predictive(capsys):
    mcmc = run("mala")
    by_chain = mcmc.get_samples(group_by_chain=True)
    assert {k: v.shape for k, v in by_chain.items()} == {
        "mu": (4, 1000),
        "sigma": (4, 1000),
        "sigma2": (4, 1000),
    }
    flat = mcmc.get_samples()
    assert flat["mu"].shape == (4000,)
    np.testing.assert_allclose(flat["sigma2"], flat["sigma"] ** 2, rtol=1e-5)  # deterministic site
    extra = mcmc.get_extra_fields()
    assert set(extra) == {"accept_prob", "diverging", "potential_energy"}
    assert extra["accept_prob"].shape == (4000,) and 0.3 < float(extra["accept_prob"].mean()) < 1
    assert np.all(np.isfinite(extra["potential_energy"]))
    mcmc.print_summary()
    out = capsys.readouterr().out
    assert "mu" in out and "sigma" in out and "sigma2" not in out and "r_hat" in out
    pred = Predictive(model, posterior_samples=flat)(jax.random.key(2))
    assert pred["y"].shape == (4000,)  # posterior predictive of one new observation
    y_new = np.asarray(pred["y"])
    assert abs(y_new.mean() - float(flat["mu"].mean())) < 0.15
    assert isinstance(mcmc.last_state, BlackJAXKernelState)


def test_chain_methods_agree():
    """Same key per chain: the default chain_method ("parallel", which falls back to sequential on
    one device) and "vectorized" give the same chains."""
    samples = {}
    for method in ("parallel", "vectorized"):
        kernel = BlackJAXKernel(
            functools.partial(blackjax.mala, step_size=0.01),
            model=model,
            init_strategy=init_to_median,
        )
        options = dict(num_warmup=20, num_samples=30, num_chains=2, progress_bar=False)
        if method == "parallel" and jax.local_device_count() < 2:
            with pytest.warns(UserWarning, match="sequentially"):
                mcmc = MCMC(kernel, **options)
        else:
            mcmc = MCMC(kernel, chain_method=method, **options)
        mcmc.run(jax.random.key(3), Y, extra_fields=("info.is_accepted",))
        samples[method] = mcmc.get_samples(group_by_chain=True)
        assert samples[method]["mu"].shape == (2, 30)
        assert mcmc.get_extra_fields(group_by_chain=True)["info.is_accepted"].shape == (2, 30)
    for site in ("mu", "sigma"):
        np.testing.assert_allclose(
            samples["parallel"][site], samples["vectorized"][site], rtol=1e-4
        )
    assert not np.allclose(samples["vectorized"]["mu"][0], samples["vectorized"]["mu"][1])


def test_warmup_then_run_continues_the_chain():
    kernel = BlackJAXKernel(
        blackjax.mala, model=model, step_size=0.01, init_strategy=init_to_median
    )
    mcmc = MCMC(kernel, num_warmup=50, num_samples=20, progress_bar=False)
    mcmc.warmup(jax.random.key(4), Y)
    assert int(mcmc.post_warmup_state.i) == 50
    mcmc.run(jax.random.key(5), Y)
    assert mcmc.get_samples()["mu"].shape == (20,)
    assert int(mcmc.last_state.i) == 70


def test_potential_fn_with_init_params():
    mean = jnp.array([3.0, -1.0, 0.5])

    def potential_fn(z):  # U(z) = -log N(z | mean, I), up to a constant
        return 0.5 * jnp.sum((z["a"] - mean) ** 2)

    kernel = BlackJAXKernel(
        functools.partial(blackjax.mala, step_size=0.5), potential_fn=potential_fn
    )
    mcmc = MCMC(
        kernel,
        num_warmup=200,
        num_samples=1500,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(6), init_params={"a": jnp.zeros((2, 3))})
    a = mcmc.get_samples(group_by_chain=True)["a"]
    assert a.shape == (2, 1500, 3)
    for d in range(3):
        assert_moments(a[..., d], (float(mean[d]), 1.0))
    with pytest.raises(ValueError, match="init_params"):
        MCMC(kernel, num_warmup=5, num_samples=5, progress_bar=False).run(jax.random.key(0))


def test_unnormalized_latent_sites_with_adapted_mala(monkeypatch):
    """A 2-D Gaussian energy and a positive Gamma(3, 1) energy as latent sites; their `sample`
    must never be called (initialization through init_to_uniform in the unconstrained space)."""

    def no_sample(self, key, sample_shape=()):
        raise AssertionError("Unnormalized.sample was called")

    monkeypatch.setattr(Unnormalized, "sample", no_sample)
    m0 = jnp.array([1.0, -1.0])
    precision = jnp.array([[2.0, 0.6], [0.6, 1.0]])

    def gaussian_energy(x):
        d = x - m0
        return 0.5 * jnp.einsum("...i,ij,...j->...", d, precision, d)

    def ebm_model():
        numpyro.sample("x", Unnormalized(gaussian_energy, (2,)))
        # E(g) = g - 2 log g on g > 0: Gamma(shape 3, rate 1), mean 3, variance 3.
        numpyro.sample(
            "g", Unnormalized(lambda g: g - 2.0 * jnp.log(g), support=constraints.positive)
        )

    kernel = BlackJAXKernel(blackjax.mala, model=ebm_model, adapt={"num_steps": 500})
    mcmc = MCMC(
        kernel,
        num_warmup=600,
        num_samples=2000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(7), extra_fields=("accept_prob",))
    s = mcmc.get_samples(group_by_chain=True)
    cov = np.linalg.inv(np.asarray(precision))
    for d in range(2):
        assert_moments(s["x"][..., d], (float(m0[d]), float(np.sqrt(cov[d, d]))), min_ess=300)
    assert float(s["g"].min()) > 0
    assert_moments(s["g"], (3.0, float(np.sqrt(3.0))), min_ess=300)
    # step-size-only dual averaging towards MALA's optimal 0.574
    rate = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["accept_prob"]).mean(1)
    assert np.all(np.abs(rate - 0.574) < 0.12), rate
    assert set(mcmc.last_state.parameters) == {"step_size"}


def test_errors():
    def logdensity(x):
        return -0.5 * jnp.sum(x**2)

    with pytest.raises(TypeError, match="factory"):
        BlackJAXKernel(42, model=model)
    with pytest.raises(TypeError, match="factory"):
        BlackJAXKernel(lambda: None, model=model)  # takes no log density
    with pytest.raises(TypeError, match="factory"):  # an algorithm already built
        BlackJAXKernel(blackjax.mala(logdensity, 0.1), model=model)
    with pytest.raises(TypeError, match="factory"):  # the factory fails to build (no step_size)
        BlackJAXKernel(blackjax.mala, model=model)
    with pytest.raises(ValueError, match="exactly one of `model`"):
        BlackJAXKernel(blackjax.mala, step_size=0.1)
    with pytest.raises(ValueError, match="exactly one of `model`"):
        BlackJAXKernel(blackjax.mala, model=model, potential_fn=logdensity, step_size=0.1)
    with pytest.raises(TypeError, match="stepsize"):
        BlackJAXKernel(blackjax.mala, model=model, stepsize=0.1)
    with pytest.raises(ValueError, match="num_stepz"):
        BlackJAXKernel(blackjax.nuts, model=model, adapt={"num_stepz": 10})
    with pytest.raises(TypeError, match="`adapt`"):
        BlackJAXKernel(blackjax.nuts, model=model, adapt="yes")
    with pytest.raises(TypeError, match="algorithm itself"):
        BlackJAXKernel(lambda ld: blackjax.mala(ld, 0.1), model=model, adapt=True)
    with pytest.raises(ValueError, match="step_size"):
        BlackJAXKernel(blackjax.rmh, model=model, adapt=True)
    with pytest.raises(ValueError, match="is_mass_matrix_diagonal"):
        BlackJAXKernel(blackjax.mala, model=model, adapt={"is_mass_matrix_diagonal": False})
    with pytest.raises(ValueError, match="num_warmup"):
        kernel = BlackJAXKernel(blackjax.nuts, model=model, adapt=True)
        MCMC(kernel, num_warmup=0, num_samples=5, progress_bar=False).run(jax.random.key(0), Y)


@pytest.mark.slow
def test_matches_numpyro_nuts():
    """BlackJAX MALA / HMC / NUTS against NumPyro's NUTS on the same model, both with MC error."""
    ref = MCMC(
        NUTS(model),
        num_warmup=1000,
        num_samples=5000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    ref.run(jax.random.key(10), Y)
    ref_samples = ref.get_samples(group_by_chain=True)
    for name in KERNELS:
        ours = run(name).get_samples(group_by_chain=True)
        for site in ("mu", "sigma"):
            a, b = np.asarray(ours[site], np.float64), np.asarray(ref_samples[site], np.float64)
            ess_a, ess_b = float(effective_sample_size(a)), float(effective_sample_size(b))
            se_mean = np.sqrt(a.var() / ess_a + b.var() / ess_b)
            se_sd = np.sqrt(a.var() / (2 * ess_a) + b.var() / (2 * ess_b))
            assert abs(a.mean() - b.mean()) < 4 * se_mean, (name, site)
            assert abs(a.std() - b.std()) < 4 * se_sd, (name, site)


@pytest.mark.slow
def test_parallel_chains_on_two_host_devices():
    """chain_method="parallel" with real pmap over two CPU devices equals vectorized."""
    script = textwrap.dedent(
        """
        import functools, jax, numpy as np, blackjax, numpyro, numpyro.distributions as dist
        from numpyro.infer import MCMC, init_to_median
        from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel
        assert jax.local_device_count() == 2
        y = np.random.default_rng(0).normal(1.0, 1.0, size=50).astype("float32")
        def model(y):
            mu = numpyro.sample("mu", dist.Normal(0, 5))
            sigma = numpyro.sample("sigma", dist.HalfNormal(3))
            numpyro.sample("y", dist.Normal(mu, sigma), obs=y)
        out = {}
        for method in ("parallel", "vectorized"):
            k = BlackJAXKernel(functools.partial(blackjax.mala, step_size=0.01), model=model,
                               init_strategy=init_to_median)
            m = MCMC(k, num_warmup=20, num_samples=30, num_chains=2, chain_method=method,
                     progress_bar=False)
            m.run(jax.random.key(3), y)
            out[method] = np.asarray(m.get_samples(group_by_chain=True)["mu"])
        np.testing.assert_allclose(out["parallel"], out["vectorized"], rtol=1e-4)
        k = BlackJAXKernel(blackjax.nuts, model=model, adapt={"num_steps": 100})
        m = MCMC(k, num_warmup=110, num_samples=50, num_chains=2, progress_bar=False)
        m.run(jax.random.key(0), y)
        assert m.get_samples(group_by_chain=True)["sigma"].shape == (2, 50)
        print("OK")
        """
    )
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_adaptation_runs_within_num_warmup(chain_method):
    """Warmup = adaptation + burn-in (NumPyro's convention): with adaptation, MALA evaluates the
    log density once per transition, num_warmup + num_samples times (plus the initial ones)."""
    calls = []

    def potential_fn(z):
        jax.debug.callback(lambda: calls.append(1))
        return 0.5 * jnp.sum(z**2)

    def count(num_warmup, num_samples, adapt):
        calls.clear()
        kernel = BlackJAXKernel(blackjax.mala, potential_fn=potential_fn, adapt=adapt,
                                **({} if adapt else {"step_size": 0.5}))
        mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=1,
                    chain_method=chain_method, progress_bar=False)
        mcmc.run(jax.random.key(0), init_params=jnp.zeros((1, 2)) if chain_method ==
                 "vectorized" else jnp.zeros(2))
        jax.effects_barrier()
        return len(calls)

    base = count(0, 30, False)  # the initial evaluations and 30 transitions
    assert count(40, 30, True) - base == 40  # before: 80 (40 adaptation + 40 more warmup)
    assert count(40, 30, {"num_steps": 25}) - base == 40  # 25 adaptation + 15 burn-in
    with pytest.raises(ValueError, match=r"`adapt\['num_steps'\]` = 50 exceeds"):
        count(40, 30, {"num_steps": 50})
