"""Ising model: energy by definition, colour-block Gibbs against exact enumeration (3x3, 4x4),
Onsager/Yang references, the NumPyro site and model, and image restoration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.special

import numpyro_ebm
from numpyro_ebm import logz_exact
from numpyro_ebm.applications import (
    flip_noise,
    flip_noise_strength,
    posterior,
    restoration_model,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
)
from numpyro_ebm.datasets import binary_test_image
from numpyro_ebm.models import (
    Ising,
    critical_beta,
    onsager_energy_per_site,
    onsager_magnetization,
    spin,
)


def _energy_by_loops(s, shape, coupling, field, periodic):
    """E(s) straight from the definition: a Python loop over the bonds of the lattice."""
    s = np.asarray(s).reshape(shape)
    field = np.broadcast_to(field, shape)
    e = -np.sum(field * s)
    for idx in itertools.product(*[range(d) for d in shape]):
        for axis, d in enumerate(shape):
            nxt = list(idx)
            nxt[axis] += 1
            if nxt[axis] == d:
                if not periodic:
                    continue
                nxt[axis] = 0
            e -= coupling * s[idx] * s[tuple(nxt)]
    return e


@pytest.mark.parametrize(
    "shape,periodic", [((4, 4), True), ((3, 5), False), ((6,), True), ((5,), False), ((2, 4), True)]
)
def test_energy_matches_definition(shape, periodic):
    rng = np.random.default_rng(0)
    field = rng.normal(size=shape)
    ising = Ising(shape, periodic=periodic)
    params = ising.init_params(coupling=0.7, field=field, beta=0.3)
    s = np.where(rng.random((5,) + shape) < 0.5, 1.0, -1.0)
    expected = [_energy_by_loops(x, shape, 0.7, field, periodic) for x in s]
    # beta is absorbed in the parameters: E_params = beta * E_physical
    np.testing.assert_allclose(ising.energy(params, s), 0.3 * np.asarray(expected), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(ising.logdensity(params, s), -0.3 * np.asarray(expected), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(ising.magnetization(s), s.reshape(5, -1).mean(1), rtol=1e-6)
    bonds = [_energy_by_loops(x, shape, 1.0, 0.0, periodic) for x in s]
    np.testing.assert_allclose(ising.bond_sum(s), -np.asarray(bonds), rtol=1e-6)


def _configs(shape):
    n = int(np.prod(shape))
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return jnp.asarray(2.0 * bits - 1.0, jnp.float32).reshape((-1,) + tuple(shape))


def _exact(ising, params):
    configs = _configs(ising.shape)
    logp = ising.logdensity(params, configs)
    probs = jax.nn.softmax(logp)
    return (
        jax.nn.logsumexp(logp),
        probs @ ising.energy(params, configs),
        probs @ jnp.abs(ising.magnetization(configs)),
    )


@pytest.mark.parametrize(
    "shape,periodic,beta,field",
    [((4, 4), True, 0.35, 0.0), ((3, 4), False, 0.5, 0.1),
     pytest.param((4, 4), True, 0.6, 0.0, marks=pytest.mark.slow),
     pytest.param((4, 4), False, 0.4, 0.1, marks=pytest.mark.slow)],
)
def test_gibbs_matches_enumeration(shape, periodic, beta, field):
    ising = Ising(shape, periodic=periodic)
    params = ising.init_params(beta=beta, field=field)
    log_z, mean_energy, mean_abs_m = _exact(ising, params)
    # log Z against the shared enumerator (a different code path), and the model's own
    energy = lambda s: -ising.logdensity(params, s.reshape((-1,) + shape))
    np.testing.assert_allclose(logz_exact(energy, ising.num_sites, (-1, 1)), log_z, rtol=1e-5)
    np.testing.assert_allclose(ising.log_partition(params), log_z, rtol=1e-5)

    num_chains = 800
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), ising.distribution(params), ising.kernel(params),
        ising.init_spins(jax.random.key(1), num_chains), num_steps=100, num_samples=80,
    )
    energies = ising.energy(params, result.samples).mean(0)
    for per_chain, exact in [(energies, mean_energy),
                             (jnp.abs(ising.magnetization(result.samples)).mean(0), mean_abs_m)]:
        se = per_chain.std() / np.sqrt(num_chains)
        assert abs(float(per_chain.mean() - exact)) < 4 * float(se), exact
    # the check has power: the exact value at a 25% higher beta is many standard errors away
    _, wrong_energy, _ = _exact(ising, ising.init_params(beta=1.25 * beta, field=field))
    wrong_energy = wrong_energy / 1.25  # the energy at the 25% higher beta, in our units
    se = energies.std() / np.sqrt(num_chains)
    assert abs(float(energies.mean() - wrong_energy)) > 8 * float(se)
    # the tracked log density is the log density of the final spins
    np.testing.assert_allclose(result.logdensity, ising.logdensity(params, result.positions),
                               atol=1e-4)
    assert 0.0 < float(result.acceptance_rate.mean()) < 1.0


def test_mean_energy_is_minus_dlogz_dbeta():
    """d log Z / dJ = E[B(s)] (so -d log Z / d beta = mean physical energy), through the
    differentiable exact log_partition."""
    ising = Ising((3, 3))
    dlogz = jax.grad(lambda b: ising.log_partition(ising.init_params(beta=b)))(0.4)
    params = ising.init_params(beta=0.4)
    np.testing.assert_allclose(-dlogz, _exact(ising, params)[1] / 0.4, rtol=1e-4)
    dlogz_dj = jax.grad(lambda p: ising.log_partition(p))(params)["J"]
    configs = _configs((3, 3))
    probs = jax.nn.softmax(ising.logdensity(params, configs))
    np.testing.assert_allclose(dlogz_dj, probs @ ising.bond_sum(configs), rtol=1e-4)


@pytest.mark.parametrize("shape,periodic", [((6, 8), True), ((5, 3), True), ((4, 3), False)])
def test_kernel_keeps_dtype_and_works_batched_and_with_several_steps(shape, periodic):
    """Split layout, greedy colouring (odd periodic sides) and checkerboard masks."""
    ising = Ising(shape, periodic)
    params = ising.init_params(beta=0.4, field=0.1)
    algo = ising.kernel(params)
    s = ising.init_spins(jax.random.key(0), 4, dtype=jnp.int8)
    state = algo.init(s)  # batched lattices work without vmap
    step3 = jax.jit(lambda key, st: jax.lax.scan(
        lambda st, k: algo.step(k, st), st, jax.random.split(key, 3)))
    state, info = step3(jax.random.key(1), state)
    assert state.position.dtype == jnp.int8 and state.position.shape == (4, *shape)
    assert info.flip_rate.shape == (3, 4)
    np.testing.assert_allclose(state.logdensity, ising.logdensity(params, state.position),
                               atol=1e-4)
    assert set(np.unique(np.asarray(state.position))) <= {-1, 1}
    assert bool(jnp.any(state.position != s))


def test_open_odd_width_uses_masked_path():
    """Odd widths (no two-colour layout) with open boundaries: same chain, masked updates."""
    ising = Ising((3, 3), periodic=False)
    params = ising.init_params(beta=0.5, field=0.2)
    _, mean_energy, _ = _exact(ising, params)
    samples = ising.sample(jax.random.key(4), params, num_chains=4000, num_steps=30).positions
    e = ising.energy(params, samples)
    assert abs(float(e.mean() - mean_energy)) < 4 * float(e.std() / np.sqrt(4000))


def test_vmap_over_temperatures():
    betas = jnp.array([0.2, 0.8])
    ising = Ising((8, 8))
    up = ising.init_spins(jax.random.key(1), 64, kind="up")
    run = jax.jit(jax.vmap(lambda b: ising.sample(
        jax.random.key(0), ising.init_params(beta=b), 64, 60, init_positions=up).positions))
    m = jnp.abs(ising.magnetization(run(betas))).mean(-1)
    assert float(m[0]) < 0.5 < 0.9 < float(m[1])


def test_onsager_references():
    np.testing.assert_allclose(critical_beta, 0.4406867935, rtol=1e-9)
    np.testing.assert_allclose(onsager_magnetization(0.5), 0.911319, rtol=1e-5)
    assert float(onsager_magnetization(0.4)) == 0.0
    for beta in [0.2, 0.35, 0.5, 0.7]:
        t = 2 * beta
        k = 2 * np.sinh(t) / np.cosh(t) ** 2
        u = -1 / np.tanh(t) * (1 + 2 / np.pi * (2 * np.tanh(t) ** 2 - 1) * scipy.special.ellipk(k * k))
        np.testing.assert_allclose(onsager_energy_per_site(beta), u, rtol=1e-5)
    np.testing.assert_allclose(onsager_energy_per_site(critical_beta), -np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(onsager_energy_per_site(5.0), -2.0, rtol=1e-5)


def test_errors():
    ising = Ising((4, 4))
    with pytest.raises(ValueError, match="beta"):
        ising.init_params(beta=0.0)
    with pytest.raises(ValueError, match="field"):
        ising.init_params(field=jnp.zeros(3))
    with pytest.raises(ValueError, match="`coupling` contains 1 non-finite"):
        ising.init_params(coupling=jnp.nan)
    with pytest.raises(ValueError, match="`field` contains 2 non-finite"):
        ising.init_params(field=jnp.zeros((4, 4)).at[0, :2].set(jnp.inf))
    with pytest.raises(ValueError, match="shape"):
        Ising((1, 4))
    with pytest.raises(ValueError, match="lattice shape"):
        ising.energy(ising.init_params(), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="flip_prob"):
        flip_noise_strength(0.7)
    with pytest.raises(ValueError, match=r"params\['h'\]"):
        ising.kernel({"J": 1.0, "h": jnp.zeros((4, 5))})
    with pytest.raises(ValueError, match="lacks"):
        ising.kernel({"J": 1.0})
    with pytest.raises(TypeError, match="dict"):
        ising.kernel(0.4)
    with pytest.raises(NotImplementedError, match="logz_ais"):
        Ising((5, 5)).log_partition(ising.init_params())
    # the kernel is no factory: a driver that builds one from a density refuses it
    with pytest.raises(TypeError, match="factory"):
        numpyro_ebm.sample_chains(jax.random.key(0), ising.distribution(ising.init_params()),
                                  ising.kernel, ising.init_spins(jax.random.key(1), 2), 1)


def test_distribution_is_an_unnormalized_spin_site_with_its_sampler():
    ising = Ising((4, 4))
    params = ising.init_params(beta=0.4, field=0.2)
    d = ising.distribution(params)
    s = ising.init_spins(jax.random.key(0), 3)
    np.testing.assert_allclose(d.log_prob(s), ising.logdensity(params, s), rtol=1e-6)
    assert d.event_shape == (4, 4) and d.support.is_discrete
    assert bool(spin(jnp.array(-1.0))) and not bool(spin(jnp.array(0.0)))
    # the distribution carries its exact sampler: sample_chains with kernel=None runs it
    result = numpyro_ebm.sample_chains(jax.random.key(1), d, None, s, num_steps=5)
    np.testing.assert_allclose(result.logdensity, d.log_prob(result.positions), atol=1e-4)


def test_model_sites_and_get_params():
    ising = Ising((3, 4), periodic=False, name="lattice")
    data = ising.init_spins(jax.random.key(0), 10)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(ising.model, 0)).get_trace(
        data, subsample_size=4)
    assert trace["lattice_J"]["type"] == "param" and trace["lattice_h"]["type"] == "param"
    site = trace[ising.site]
    assert ising.site == "lattice_s" and site["is_observed"] and site["value"].shape == (4, 3, 4)
    assert site["fn"].support.is_discrete
    svi_params = {"lattice_J": jnp.asarray(0.3), "lattice_h": jnp.asarray(-0.1)}
    params = ising.get_params(svi_params)
    np.testing.assert_allclose(ising.energy(params, data),
                               -0.3 * ising.bond_sum(data) + 0.1 * data.sum((-2, -1)), rtol=1e-5)
    with pytest.raises(ValueError, match="data"):
        ising.model(jnp.ones((2, 4, 3)))


def test_model_trains_by_contrastive_divergence_with_its_own_sampler():
    """SVI on ``ising.model`` with CD-2 and ``kernel=None`` (the site's colour-block Gibbs
    kernel) recovers (J, h) of a 3x3 open lattice from 2000 exact draws (standard error of the
    maximum-likelihood J about 0.01; the start, J = h = 0, is 0.4 away)."""
    import optax
    from numpyro.infer import SVI

    ising = Ising((3, 3), periodic=False)
    true = ising.init_params(beta=0.4, field=0.15)  # {"J": 0.4, "h": 0.06}
    configs = _configs((3, 3))
    data = configs[jax.random.categorical(jax.random.key(0), -ising.energy(true, configs),
                                          shape=(2000,))]
    loss = numpyro_ebm.ContrastiveDivergence(None, num_steps=2)
    svi = SVI(ising.model, numpyro_ebm.no_guide, optax.adam(0.02), loss=loss)
    result = svi.run(jax.random.key(1), 1500, data, subsample_size=500, progress_bar=False)
    params = ising.get_params(result.params)
    assert abs(float(params["J"]) - 0.4) < 0.05 and abs(float(params["h"]) - 0.06) < 0.05, params


def test_ising_is_a_pytree_without_leaves():
    ising = Ising((3, 5), periodic=False, name="x", site="y")
    leaves, treedef = jax.tree.flatten(ising)
    again = jax.tree.unflatten(treedef, leaves)
    assert leaves == [] and again.shape == (3, 5) and not again.periodic and again.site == "y"
    params = ising.init_params(beta=0.5)
    energy = jax.jit(lambda model, p, s: model.energy(p, s))(ising, params, jnp.ones((3, 5)))
    np.testing.assert_allclose(energy, -0.5 * (2 * 5 + 3 * 4), rtol=1e-6)
    # no state written by tracing
    assert set(vars(ising)) == {"shape", "event_shape", "periodic", "name", "site"}


def test_restoration_model_posterior_is_the_ising_posterior():
    """log p(y, x) from the NumPyro model differs from -beta E_post(y) by a constant in y."""
    ising = Ising((8, 8), periodic=False)
    prior = ising.init_params(beta=0.8)
    noisy = flip_noise(jax.random.key(0), binary_test_image(8), 0.2)
    post = posterior(noisy, ising, prior, 0.2)
    ys = ising.init_spins(jax.random.key(1), 5)
    log_joint = lambda y: numpyro.infer.util.log_density(
        restoration_model, (noisy, ising, prior, 0.2), {}, {"y": y})[0]
    joint = jax.jit(jax.vmap(log_joint))(ys)
    diff = joint - ising.logdensity(post, ys)
    np.testing.assert_allclose(diff - diff[0], 0.0, atol=1e-3)


def test_restoration_beats_the_noise():
    image = binary_test_image(64)
    noisy = flip_noise(jax.random.key(0), image, 0.15)
    ising = Ising((64, 64), periodic=False)
    prior = ising.init_params(beta=1.0)
    noisy_error = float(jnp.mean(noisy != image))
    assert 0.13 < noisy_error < 0.17
    restored, mean = restore_gibbs(jax.random.key(1), noisy, ising, prior, 0.15, num_steps=100,
                                   num_burn=20, num_chains=4)
    assert mean.shape == image.shape and float(jnp.abs(mean).max()) <= 1.0
    icm, num_iters = restore_icm(noisy, ising, prior, 0.15)
    mf, mu = restore_mean_field(noisy, ising, prior, 0.15)
    for name, y in [("gibbs", restored), ("icm", icm), ("mean field", mf)]:
        error = float(jnp.mean(y != image))
        assert error < noisy_error / 3, (name, error, noisy_error)
    assert 1 <= int(num_iters) < 50


def test_restoration_on_a_torus_of_odd_side():
    """A periodic 33x33 image (greedy colouring): ICM still decreases the posterior energy and
    stops at a fixed point; all three restorations halve the noise."""
    image = binary_test_image(33)
    noisy = flip_noise(jax.random.key(2), image, 0.1)
    ising = Ising((33, 33))
    assert int(ising.colouring.max()) >= 2
    prior = ising.init_params(beta=0.6)
    post = posterior(noisy, ising, prior, 0.1)
    icm, n = restore_icm(noisy, ising, prior, 0.1)
    assert float(ising.energy(post, icm)) < float(ising.energy(post, noisy)) and int(n) < 50
    m = ising.local_field(post, icm)
    assert bool(jnp.all(icm * m >= 0))  # every spin at its conditional mode
    restored, _ = restore_gibbs(jax.random.key(3), noisy, ising, prior, 0.1, num_steps=50)
    mf, _ = restore_mean_field(noisy, ising, prior, 0.1)
    for y in (restored, mf, icm):
        assert float(jnp.mean(y != image)) < float(jnp.mean(noisy != image)) / 2


@pytest.mark.slow
def test_64x64_below_critical_matches_onsager():
    """64x64 periodic, beta = 0.5 (ordered phase): |M| within 0.01 of Yang's value and the energy
    per site within 0.005 of Onsager's (finite-size corrections are far below both here)."""
    beta = 0.5
    ising = Ising((64, 64))
    params = ising.init_params(beta=beta)
    num_chains = 32
    result = ising.sample(
        jax.random.key(0), params, num_chains, num_steps=2000, num_samples=150, thin=10,
        init_positions=ising.init_spins(jax.random.key(1), num_chains, kind="up"),
    )
    m = jnp.abs(ising.magnetization(result.samples)).mean(0)
    u = ising.energy_per_site(params, result.samples).mean(0) / beta  # physical units (J = 1)
    m_se, u_se = m.std() / np.sqrt(num_chains), u.std() / np.sqrt(num_chains)
    assert abs(float(m.mean() - onsager_magnetization(beta))) < 0.01
    assert abs(float(u.mean() - onsager_energy_per_site(beta))) < 0.005
    assert float(m_se) < 0.003 and float(u_se) < 0.0015  # the check has the power to fail
