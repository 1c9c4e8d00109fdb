"""One bad input per class of silent failure handled (issue 15): each raises (or warns) with the
error type asserted and a message that names the argument.

Class 1: parameters matched against the model. Class 4: non-finite numbers out of evaluators.
Class 6: values outside a model's domain. Checkpoints: a template of another model.
"""

import jax
import jax.numpy as jnp
import numpyro
import pytest

import numpyro_ebm
from numpyro_ebm import (
    Unnormalized,
    energy_fn,
    heldout_log_likelihood,
    load_checkpoint,
    logz_quadrature,
    save_checkpoint,
)
from numpyro_ebm.models import RBM, Ising


def quadratic_model(data=None):
    mu = numpyro.param("mu", jnp.zeros(2))
    energy = lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1)  # noqa: E731
    numpyro.sample("x", Unnormalized(energy, (2,)), obs=data)


X = jnp.zeros((4, 2))


# class 1: parameters never matched against the model


def test_class1_misspelt_param_key_names_it_and_the_model_sites():
    with pytest.raises(ValueError, match=r"`params` has key\(s\) \['mu_'\].*sites are \['mu'\]"):
        energy_fn(quadratic_model, "x")({"mu_": jnp.ones(2)}, X)


def test_class1_heldout_log_likelihood_with_a_missing_param():
    def model(data=None):
        mu = numpyro.param("mu", jnp.zeros(2))
        s = numpyro.param("s", 1.0)
        numpyro.sample("x", Unnormalized(lambda x: jnp.sum((x - mu) ** 2, -1) / s, (2,)), obs=data)

    with pytest.raises(ValueError, match=r"`params` lacks .*\['s'\]"):
        heldout_log_likelihood(model, {"mu": jnp.ones(2)}, X, logz=0.0)


# class 4: non-finite numbers out of evaluators


def test_class4_quadrature_of_a_nan_energy_names_energy_fn():
    with pytest.raises(ValueError, match=r"`energy_fn` returned NaN at \d+ of 64"):
        logz_quadrature(lambda x: jnp.where(x[:, 0] > 0, jnp.nan, x[:, 0] ** 2), -5.0, 5.0, 64)


def test_class4_box_too_small_warns():
    with pytest.warns(RuntimeWarning, match=r"box \[low, high\].*Enlarge the box"):
        logz_quadrature(lambda x: 0.5 * x[:, 0] ** 2, -1.0, 1.0)


def test_class4_nan_logz_names_logz():
    with pytest.raises(ValueError, match="`logz`"):
        heldout_log_likelihood(quadratic_model, {"mu": jnp.zeros(2)}, X, logz=float("nan"))


# class 6: values outside a model's domain


def test_class6_unnormalized_nan_log_Z_names_log_Z():
    with pytest.raises(ValueError, match="`log_Z`"):
        Unnormalized(lambda x: x**2, log_Z=float("nan"))


def test_class6_transposed_energy_is_not_reshaped():
    with pytest.raises(ValueError, match=r"`energy_fn` returned shape \(3, 2\)"):
        Unnormalized(lambda x: x.T).log_prob(jnp.ones((2, 3)))


def test_class6_ising_nan_coupling_names_coupling():
    with pytest.raises(ValueError, match="`coupling`"):
        Ising((4, 4)).init_params(coupling=float("nan"))


def test_class6_rbm_non_binary_data_names_data():
    with pytest.raises(ValueError, match=r"RBM.*`data` holds 1 value"):
        RBM(3, 2).model(jnp.zeros((4, 3)).at[0, 0].set(0.3))


def test_class6_pseudo_log_likelihood_outside_values_names_x():
    with pytest.raises(ValueError, match=r"`x` holds 1 value\(s\) outside"):
        numpyro_ebm.pseudo_log_likelihood(lambda s: s.sum(-1), jnp.array([[0.0, 2.0]]), (0, 1))


# checkpoints: checked against the model


def test_checkpoint_of_another_model_names_the_leaves(tmp_path):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, {"mu": jnp.zeros(2), "rng_key": jax.random.key(0)})
    with pytest.raises(ValueError, match=r"`like` does not have the structure.*\['mu'\].*\['nu'\]"):
        load_checkpoint(path, like={"nu": jnp.zeros(2), "rng_key": jax.random.key(0)})


# class 2: NaN data past every guide


def test_class2_nan_rows_past_the_first_minibatch_blame_the_data():
    import blackjax
    import optax
    from numpyro.infer import SVI

    data = jnp.zeros((64, 2)).at[40:].set(jnp.nan)  # minibatches after the first hold NaN rows

    def model(batch):
        mu = numpyro.param("mu", jnp.zeros(2))
        energy = lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1)  # noqa: E731
        numpyro.sample("x", Unnormalized(energy, (2,)), obs=batch)

    box = numpyro.distributions.Uniform(-3.0 * jnp.ones(2), 3.0 * jnp.ones(2)).to_event(1)
    kernel = lambda logdensity_fn: blackjax.mala(logdensity_fn, 0.05)  # noqa: E731
    pcd = numpyro_ebm.PersistentContrastiveDivergence(kernel, num_chains=8, init_dist=box)
    svi = SVI(model, pcd.make_guide(model), optax.adam(1e-2), loss=pcd)
    state = svi.init(jax.random.key(0), data[:16])  # the guide checks this minibatch: clean
    update = jax.jit(svi.update)  # as in svi.run: the data is traced, the eager checks skipped
    with pytest.warns(RuntimeWarning, match=r"observed data itself holds NaN.*not the cause"):
        for start in range(0, 64, 16):
            state, _ = update(state, data[start : start + 16])
        jax.effects_barrier()


def test_class2_flow_guide_checks_the_data_at_init():
    import optax
    from numpyro.infer import SVI

    def model(data):
        log_Z = numpyro.param("log_Z", 0.0)
        energy = lambda x: 0.5 * jnp.sum(x**2, -1)  # noqa: E731
        numpyro.sample("x", Unnormalized(energy, (2,), log_Z=log_Z), obs=data)

    guide = numpyro_ebm.flow_guide("x", 2, jax.random.key(0), flow="coupling-affine")
    fce = numpyro_ebm.FlowContrastiveEstimation()
    svi = SVI(model, guide, optax.adam(1e-3), loss=fce)
    with pytest.raises(ValueError, match=r"model argument 0 \(data\)"):
        svi.init(jax.random.key(0), jnp.zeros((8, 2)).at[5, 1].set(jnp.nan))


# class 7: unclear errors, now naming the argument and what was expected


def _mala(logdensity_fn):
    import blackjax

    return blackjax.mala(logdensity_fn, 0.1)


def _log_normal(x):
    return -0.5 * jnp.sum(x**2, -1)


def _energy(x):
    return 0.5 * jnp.sum(x**2, -1)


def _int_init_positions():
    numpyro_ebm.sample_chains(jax.random.key(0), _log_normal, _mala, jnp.zeros((4, 2), int), 2)


def _zero_chains():
    numpyro_ebm.sample_chains(jax.random.key(0), _log_normal, _mala, jnp.zeros((0, 2)), 2)


def _ula_inf_step():
    numpyro_ebm.ula(_log_normal, step_size=float("inf"))


def _ais_base_without_to_event():
    base = numpyro.distributions.Normal(jnp.zeros(2), 1.0)
    numpyro_ebm.logz_ais(jax.random.key(0), _energy, base, _mala, num_chains=4, num_temperatures=4)


def _geometric_path_base_without_to_event():
    numpyro_ebm.geometric_path(_log_normal, numpyro.distributions.Normal(jnp.zeros(2), 1.0), _mala)


def _ais_nonfinite_betas():
    base = numpyro.distributions.Normal(jnp.zeros(2), 1.0).to_event(1)
    betas = jnp.array([0.0, 0.5, jnp.inf, 1.0])
    numpyro_ebm.logz_ais(jax.random.key(0), _energy, base, _mala, num_chains=4, betas=betas)


def _pcd(init_dist):
    import optax
    from numpyro.infer import SVI

    pcd = numpyro_ebm.PersistentContrastiveDivergence(_mala, num_chains=4, init_dist=init_dist)
    svi = SVI(quadratic_model, pcd.guide, optax.adam(1e-2), loss=pcd)
    svi.update(svi.init(jax.random.key(0), X), X)


def _pcd_init_dist_wrong_shape():
    _pcd(numpyro.distributions.Normal(jnp.zeros(3), 1.0).to_event(1))


def _pcd_init_dist_integers():
    _pcd(numpyro.distributions.Bernoulli(0.5 * jnp.ones(2)).to_event(1))


def _blackjax_kernel_discrete_latent():
    from numpyro.infer import MCMC

    def model():
        z = numpyro.sample("z", numpyro.distributions.Bernoulli(0.5))
        numpyro.sample("y", numpyro.distributions.Normal(z, 1.0), obs=1.0)

    kernel = numpyro_ebm.BlackJAXKernel(_mala, model=model)
    MCMC(kernel, num_warmup=1, num_samples=1, progress_bar=False).run(jax.random.key(0))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (_int_init_positions, TypeError, r"`init_positions` has dtype int32.*gradients"),
        (_zero_chains, ValueError, r"`init_positions` has 0 chains"),
        (_ula_inf_step, ValueError, r"`step_size` contains 1 non-finite"),
        (_ais_base_without_to_event, ValueError, r"`base` must describe one position.*to_event"),
        (_geometric_path_base_without_to_event, ValueError, r"`base`.*batch_shape \(2,\)"),
        (_ais_nonfinite_betas, ValueError, r"`betas` must be finite"),
        (_pcd_init_dist_wrong_shape, ValueError, r"`init_dist` draws shape \(3,\).*event shape"),
        (_pcd_init_dist_integers, TypeError, r"`init_dist` draws int32 values"),
        (_blackjax_kernel_discrete_latent, ValueError, r"latent site\(s\) \['z'\] are discrete"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else None,
)
def test_class7_error_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# the battery's remaining cases (benchmarks/bad_inputs.py), each now an error naming its argument


def _ising_zero_spins():
    ising = Ising((4, 4))
    dist_ = ising.distribution(ising.init_params())
    numpyro_ebm.sample_chains(jax.random.key(0), dist_, None, jnp.zeros((2, 4, 4)), 3)


def _flax_params_of_another_run():
    import flax.linen as nn
    from numpyro.contrib.module import flax_module

    def model(data=None):
        net = flax_module("net", nn.Dense(1), input_shape=(1, 2))
        scale = numpyro.param("scale", 1.0)
        numpyro.sample("x", Unnormalized(lambda x: scale * net(x)[..., 0], (2,)), obs=data)

    energy_fn(model, "x")({"scale": 2.0}, X)


def _blackjax_kernel_nan_init_params():
    from numpyro.infer import MCMC

    def model():
        numpyro.sample("z", numpyro.distributions.Normal(jnp.zeros(2), 1.0).to_event(1))

    mcmc = MCMC(numpyro_ebm.BlackJAXKernel(_mala, model=model), num_warmup=2, num_samples=2,
                progress_bar=False)
    mcmc.run(jax.random.key(0), init_params={"z": jnp.full(2, jnp.nan)})


def _expfam_theta_shape():
    family = numpyro_ebm.models.ExponentialFamily(lambda x: jnp.stack([x, x**2], -1))
    family.energy({"theta": jnp.ones(3)}, jnp.ones(4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: numpyro_ebm.sample_chains(0, _log_normal, _mala, X, 2), TypeError,
         r"`rng_key` must be a JAX key.*not an int seed"),
        (lambda: numpyro_ebm.sample_chains(jax.random.split(jax.random.key(0), 3), _log_normal,
                                           _mala, X, 2), TypeError, r"`rng_key` must be one JAX key"),
        (lambda: numpyro_ebm.logz_ais(0, _energy, None, _mala), TypeError, r"`rng_key`"),
        (lambda: numpyro_ebm.sample_chains(jax.random.key(0), _log_normal, _mala, X, 2,
                                           init_state={"position": 1}), TypeError, r"`init_state`"),
        (_ising_zero_spins, ValueError, r"Ising: `init_positions` holds 32 value\(s\) outside"),
        (lambda: numpyro_ebm.ula(3.0, step_size=0.1), TypeError, r"`logdensity_fn` must be"),
        (lambda: numpyro_ebm.ula(_log_normal, step_size="0.1"), TypeError, r"`step_size` must be"),
        (lambda: Unnormalized(_energy, (-2,)), ValueError, r"`event_shape` must hold sizes >= 0"),
        (lambda: Unnormalized(lambda x: jnp.nan * _energy(x), (2,), validate_args=True).log_prob(X),
         ValueError, r"`energy_fn` returned 4 non-finite"),
        (lambda: energy_fn(quadratic_model, "x")({"mu": jnp.ones(3)}, X), ValueError,
         r"`params\['mu'\]` has shape \(3,\).*site 'mu' has shape \(2,\)"),
        (_flax_params_of_another_run, ValueError, r"lacks the model's numpyro.param.*net\$params"),
        (lambda: logz_quadrature(lambda x: jnp.inf * jnp.ones(x.shape[0]), -5.0, 5.0, 16),
         ValueError, r"log Z = -inf: `energy_fn` is \+inf"),
        (lambda: numpyro_ebm.diagnostics.mmd(X.at[0, 0].set(jnp.nan), X), ValueError, r"`x`"),
        (lambda: numpyro_ebm.diagnostics.mmd(X, X, bandwidth=-1.0), ValueError, r"`bandwidth`"),
        (lambda: numpyro_ebm.evaluation.auroc(jnp.array([0.0, jnp.nan]), jnp.ones(3)), ValueError,
         r"`scores_normal`"),
        (lambda: numpyro_ebm.applications.anomaly_scores(_energy, X.at[0, 0].set(jnp.nan)),
         ValueError, r"`x`"),
        (lambda: numpyro_ebm.applications.denoise(jax.random.key(0), _energy,
                                                  X.at[0, 0].set(jnp.nan), 0.5, _mala),
         ValueError, r"`y`"),
        (_blackjax_kernel_nan_init_params, ValueError, r"`init_params`"),
        (_expfam_theta_shape, ValueError, r"`params\['theta'\]` has shape \(3,\)"),
    ],
)
def test_battery_cases_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_validate_args_warns_outside_the_support():
    d = Unnormalized(_energy, (2,), support=numpyro.distributions.constraints.positive,
                     validate_args=True)
    with pytest.warns(UserWarning, match="Out-of-support"):
        d.log_prob(-jnp.ones((3, 2)))


def test_all_rejected_chains_warn():
    with pytest.warns(RuntimeWarning, match="no proposal was accepted"):
        numpyro_ebm.sample_chains(jax.random.key(0), _log_normal,
                                  lambda f: __import__("blackjax").mala(f, 1e6), X, 20)


def test_resume_from_a_chain_result_alone_continues_the_chains():
    first = numpyro_ebm.sample_chains(jax.random.key(0), _log_normal, _mala, X, 5)
    again = numpyro_ebm.sample_chains(jax.random.key(1), _log_normal, _mala, None, 5,
                                      init_state=first)
    explicit = numpyro_ebm.sample_chains(jax.random.key(1), _log_normal, _mala, first.positions, 5,
                                         init_state=first.state)
    assert jnp.array_equal(again.positions, explicit.positions)
    assert not jnp.array_equal(again.positions, first.positions)


def test_check_svi_result_warns_on_a_stalled_loss_only():
    import warnings

    from numpyro.infer.svi import SVIRunResult

    stalled = jnp.concatenate([jnp.linspace(1.0, 0.5, 20), jnp.zeros(20)])
    with pytest.warns(RuntimeWarning, match=r"bitwise constant \(0\) over the last 10 of 40"):
        numpyro_ebm.check_svi_result(SVIRunResult({"mu": jnp.zeros(2)}, None, stalled))
    moving = jax.random.normal(jax.random.key(0), (40,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numpyro_ebm.check_svi_result(SVIRunResult({"mu": jnp.zeros(2)}, None, moving))
