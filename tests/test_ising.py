"""Ising model: energy by definition, checkerboard Gibbs against exact enumeration (3x3, 4x4),
Onsager/Yang references, the NumPyro site, and image restoration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.special

import numpyro_ebm
from numpyro_ebm.evaluation.partition import logz_exact
from numpyro_ebm.models import (
    Ising,
    binary_test_image,
    critical_beta,
    flip_noise,
    flip_noise_strength,
    onsager_energy_per_site,
    onsager_magnetization,
    posterior,
    restoration_model,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
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
    ising = Ising(shape, coupling=0.7, field=field, beta=0.3, periodic=periodic)
    s = np.where(rng.random((5,) + shape) < 0.5, 1.0, -1.0)
    expected = [_energy_by_loops(x, shape, 0.7, field, periodic) for x in s]
    np.testing.assert_allclose(ising.energy(s), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ising.logdensity(s), -0.3 * np.asarray(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ising.magnetization(s), s.reshape(5, -1).mean(1), rtol=1e-6)


def _configs(shape):
    n = int(np.prod(shape))
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return jnp.asarray(2.0 * bits - 1.0, jnp.float32).reshape((-1,) + tuple(shape))


def _exact(ising):
    configs = _configs(ising.shape)
    logp = ising.logdensity(configs)
    probs = jax.nn.softmax(logp)
    return (
        jax.nn.logsumexp(logp),
        probs @ ising.energy(configs),
        probs @ jnp.abs(ising.magnetization(configs)),
    )


@pytest.mark.parametrize(
    "shape,periodic,beta,field",
    [((4, 4), True, 0.35, 0.0), ((3, 4), False, 0.5, 0.1),
     pytest.param((4, 4), True, 0.6, 0.0, marks=pytest.mark.slow),
     pytest.param((4, 4), False, 0.4, 0.1, marks=pytest.mark.slow)],
)
def test_gibbs_matches_enumeration(shape, periodic, beta, field):
    ising = Ising(shape, beta=beta, field=field, periodic=periodic)
    log_z, mean_energy, mean_abs_m = _exact(ising)
    # log Z against the shared enumerator (a different code path)
    energy = lambda s: -ising.logdensity(s.reshape((-1,) + shape))
    np.testing.assert_allclose(logz_exact(energy, ising.num_sites, (-1, 1)), log_z, rtol=1e-5)

    num_chains = 800
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), ising.logdensity, ising.kernel,
        ising.init_spins(jax.random.key(1), num_chains), num_steps=100, num_samples=80,
    )
    energies = ising.energy(result.samples).mean(0)
    for per_chain, exact in [(energies, mean_energy),
                             (jnp.abs(ising.magnetization(result.samples)).mean(0), mean_abs_m)]:
        se = per_chain.std() / np.sqrt(num_chains)
        assert abs(float(per_chain.mean() - exact)) < 4 * float(se), exact
    # the check has power: the exact value at a 25% higher beta is many standard errors away
    _, wrong_energy, _ = _exact(Ising(shape, beta=1.25 * beta, field=field, periodic=periodic))
    se = energies.std() / np.sqrt(num_chains)
    assert abs(float(energies.mean() - wrong_energy)) > 8 * float(se)
    # the tracked log density is the log density of the final spins
    np.testing.assert_allclose(result.logdensity, ising.logdensity(result.positions), atol=1e-4)
    assert 0.0 < float(result.acceptance_rate.mean()) < 1.0


def test_mean_energy_is_minus_dlogz_dbeta():
    shape = (3, 3)
    dlogz = jax.grad(
        lambda b: logz_exact(lambda s: -Ising(shape, beta=b).logdensity(s.reshape(-1, 3, 3)), 9,
                             (-1, 1))
    )(0.4)
    np.testing.assert_allclose(-dlogz, _exact(Ising(shape, beta=0.4))[1], rtol=1e-4)


def test_kernel_keeps_dtype_and_works_batched_and_with_several_sweeps():
    ising = Ising((6, 8), beta=0.4)
    algo = ising.kernel(num_sweeps=3)
    s = ising.init_spins(jax.random.key(0), 4, dtype=jnp.int8)
    state = algo.init(s)  # batched lattices work without vmap
    state, info = jax.jit(algo.step)(jax.random.key(1), state)
    assert state.position.dtype == jnp.int8 and state.position.shape == (4, 6, 8)
    assert info.flip_rate.shape == (4,)
    np.testing.assert_allclose(state.logdensity, ising.logdensity(state.position), atol=1e-4)
    assert set(np.unique(np.asarray(state.position))) <= {-1, 1}


def test_open_odd_width_uses_masked_path():
    """Odd widths (no two-colour layout) with open boundaries: same chain, masked updates."""
    ising = Ising((3, 3), beta=0.5, field=0.2, periodic=False)
    _, mean_energy, _ = _exact(ising)
    samples = ising.sample(jax.random.key(4), num_chains=4000, num_sweeps=30)
    e = ising.energy(samples)
    assert abs(float(e.mean() - mean_energy)) < 4 * float(e.std() / np.sqrt(4000))


def test_vmap_over_temperatures():
    betas = jnp.array([0.2, 0.8])
    run = jax.vmap(lambda b: Ising((8, 8), beta=b).sample(jax.random.key(0), 64, 60, init="up"))
    m = jnp.abs(Ising((8, 8)).magnetization(run(betas))).mean(-1)
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
    with pytest.raises(ValueError, match="odd side"):
        Ising((3, 3)).kernel()
    with pytest.raises(ValueError, match="beta"):
        Ising((4, 4), beta=0.0)
    with pytest.raises(ValueError, match="field"):
        Ising((4, 4), field=jnp.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        Ising((1, 4))
    with pytest.raises(ValueError, match="lattice shape"):
        Ising((4, 4)).energy(jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="flip_prob"):
        flip_noise_strength(0.7)


def test_as_distribution_is_an_unnormalized_spin_site():
    ising = Ising((4, 4), beta=0.4, field=0.2)
    d = ising.as_distribution()
    s = ising.init_spins(jax.random.key(0), 3)
    np.testing.assert_allclose(d.log_prob(s), ising.logdensity(s), rtol=1e-6)
    assert d.event_shape == (4, 4) and d.support.is_discrete
    assert bool(spin(jnp.array(-1.0))) and not bool(spin(jnp.array(0.0)))


def test_restoration_model_posterior_is_the_ising_posterior():
    """log p(y, x) from the NumPyro model differs from -beta E_post(y) by a constant in y."""
    prior = Ising((8, 8), beta=0.8, periodic=False)
    noisy = flip_noise(jax.random.key(0), binary_test_image(8), 0.2)
    post = posterior(noisy, prior, 0.2)
    ys = prior.init_spins(jax.random.key(1), 5)
    log_joint = lambda y: numpyro.infer.util.log_density(
        restoration_model, (noisy, prior, 0.2), {}, {"y": y})[0]
    joint = jax.jit(jax.vmap(log_joint))(ys)
    diff = joint - post.logdensity(ys)
    np.testing.assert_allclose(diff - diff[0], 0.0, atol=1e-3)


def test_restoration_beats_the_noise():
    image = binary_test_image(64)
    noisy = flip_noise(jax.random.key(0), image, 0.15)
    prior = Ising((64, 64), beta=1.0, periodic=False)
    noisy_error = float(jnp.mean(noisy != image))
    assert 0.13 < noisy_error < 0.17
    restored, mean = restore_gibbs(jax.random.key(1), noisy, prior, 0.15, num_sweeps=100,
                                   num_burn=20, num_chains=4)
    assert mean.shape == image.shape and float(jnp.abs(mean).max()) <= 1.0
    icm, num_sweeps = restore_icm(noisy, prior, 0.15)
    mf, mu = restore_mean_field(noisy, prior, 0.15)
    for name, y in [("gibbs", restored), ("icm", icm), ("mean field", mf)]:
        error = float(jnp.mean(y != image))
        assert error < noisy_error / 3, (name, error, noisy_error)
    assert 1 <= int(num_sweeps) < 50


@pytest.mark.slow
def test_64x64_below_critical_matches_onsager():
    """64x64 periodic, beta = 0.5 (ordered phase): |M| within 0.01 of Yang's value and the energy
    per site within 0.005 of Onsager's (finite-size corrections are far below both here)."""
    beta = 0.5
    ising = Ising((64, 64), beta=beta)
    num_chains = 32
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), ising.logdensity, ising.kernel,
        ising.init_spins(jax.random.key(1), num_chains, kind="up"),
        num_steps=2000, num_samples=150, thin=10,
    )
    m = jnp.abs(ising.magnetization(result.samples)).mean(0)
    u = ising.energy_per_site(result.samples).mean(0)
    m_se, u_se = m.std() / np.sqrt(num_chains), u.std() / np.sqrt(num_chains)
    assert abs(float(m.mean() - onsager_magnetization(beta))) < 0.01
    assert abs(float(u.mean() - onsager_energy_per_site(beta))) < 0.005
    assert float(m_se) < 0.003 and float(u_se) < 0.0015  # the check has the power to fail
