r"""Non-invertible generator guides and VERA's entropy gradient, for adversarial EBM training.

A generator guide draws the EBM site from

.. math::

    x = g_\phi(z) + \sigma\,\varepsilon,\qquad z \sim \mathcal N(0, I_k),\quad
    \varepsilon \sim \mathcal N(0, I_D),

with :math:`g_\phi` any network (a Flax ``linen`` module or a function ``g(params, z)``): a
convolutional or MLP generator, no invertibility needed. Its density
:math:`q_\phi(x) = \int \mathcal N(x; g_\phi(z), \sigma^2 I)\,\mathcal N(z; 0, I)\,dz` has no
closed form, so neither has the entropy :math:`H(q_\phi)`; but its **gradient** only needs the
score of :math:`q` at the generator's own draws (the term :math:`\mathbb E_q[\nabla_\phi \log
q_\phi(x)]_{x\ \rm fixed}` vanishes):

.. math::

    \nabla_\phi H(q_\phi) = -\mathbb E_{z,\varepsilon}\big[\nabla_x \log q_\phi(x)^\top
        \partial_\phi x\big],\qquad
    \nabla_x \log q_\phi(x) = \mathbb E_{p_\phi(z\mid x)}\Big[\frac{g_\phi(z) - x}{\sigma^2}\Big].

**VERA** (Grathwohl et al. 2021, "No MCMC for me", sec. 3) estimates the posterior expectation
by self-normalized importance sampling with a variational posterior
:math:`\xi(z\mid x) = \mathcal N(z; z_0, \operatorname{diag}\eta^2)` centred at the latent
:math:`z_0` that generated :math:`x`, :math:`\eta \in \mathbb R^k_{>0}` shared by all :math:`x`
and trained by maximizing the ELBO of :math:`\log q_\phi(x)` at the generator's draws. This is
what :func:`vera_score` computes, with ``K`` draws :math:`z_j = z_0 + \eta\odot u_j`:

.. math::

    \log w_j &= \log\mathcal N(z_j; 0, I) + \log\mathcal N(x; g_\phi(z_j), \sigma^2 I)
        - \log \xi(z_j\mid x),\qquad \tilde w = \operatorname{softmax}(\log w),\\
    \hat s(x) &= \sum_j \tilde w_j\,\frac{g_\phi(z_j) - x}{\sigma^2},\qquad
    \text{ELBO}(\eta) = \frac1K\sum_j \log w_j,\qquad
    \text{IWAE}(\eta) = \log\frac1K\sum_j w_j .

One deviation from VERA, by default: :math:`\eta` maximizes the ``K``-sample importance-weighted
bound (IWAE) instead of the ELBO (``posterior_objective="elbo"`` restores VERA's choice). On a
linear generator against a 2-D Gaussian target (``tests/test_adversarial.py``) the ELBO-trained
:math:`\eta` leaves KL(q || p) at about 0.12 nats after 4000 updates, the IWAE-trained one at
about 0.02: the ELBO's mode-seeking :math:`\xi` concentrates the weights on :math:`z_0` and
under-estimates the entropy gradient (see :func:`vera_score`).

:math:`\hat s` is biased for finite ``K`` (self-normalized), consistent as ``K -> inf``; it is
exact in the limit where :math:`\xi` is the true posterior (e.g. a linear generator with the
optimal :math:`\eta`, up to the shared-:math:`\eta` restriction: the exact posterior covariance
of a linear Gaussian generator is the same for every :math:`x`, so a full-rank linear generator's
posterior is a diagonal :math:`\xi` only when :math:`A^\top A` is diagonal). ``sigma`` is a
learned parameter constrained to ``[sigma_min, sigma_max]`` (VERA clamps it to [0.01, 0.3]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import Distribution, constraints

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.estimators.base import check_model_inputs
from numpyro_ebm.estimators.flows import check_rng_key

__all__ = [
    "GeneratorDistribution",
    "GeneratorGuide",
    "MLPGenerator",
    "generator_guide",
    "vera_score",
]


class MLPGenerator(nn.Module):
    """A generator network ``z (..., k) -> g(z) (..., out_dim)``: dense layers of widths
    ``hidden`` with ``activation``, then a linear output layer.

    **Example**: ``generator_guide(MLPGenerator(out_dim=2), latent_dim=4, site_name="x",
    rng_key=jax.random.key(0))``.
    """

    out_dim: int
    hidden: Sequence[int] = (64, 64)
    activation: Callable = nn.swish

    @nn.compact
    def __call__(self, z):
        h = z
        for width in self.hidden:
            h = self.activation(nn.Dense(width)(h))
        return nn.Dense(self.out_dim)(h)


class GeneratorDistribution(Distribution):
    r"""``x = g(z) + sigma * eps`` as a NumPyro distribution: reparametrized sampling, no density.

    :param apply_fn: ``g(net_params, z)``: ``(..., latent_dim) -> (..., *event_shape)`` (or
        ``(..., prod(event_shape))``).
    :param net_params: the generator's parameters (a pytree).
    :param sigma: the output noise scale (scalar).
    :param int latent_dim: ``k``.
    :param tuple event_shape: shape of one draw.
    :param posterior_scale: ``eta`` (``(latent_dim,)``), the VERA posterior's scale, read by
        :func:`vera_score`.
    """

    arg_constraints = {}
    has_rsample = True
    pytree_data_fields = ()

    def __init__(
        self, apply_fn, net_params, sigma, latent_dim, event_shape, posterior_scale=None
    ):  # fmt: skip
        self.apply_fn = apply_fn
        self.net_params = net_params
        self.sigma = sigma
        self.latent_dim = latent_dim
        self.posterior_scale = posterior_scale
        super().__init__(batch_shape=(), event_shape=tuple(event_shape))

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def mean(self, z, net_params=None):
        """``g(z)``, shape ``z.shape[:-1] + event_shape`` (``net_params`` overrides the own)."""
        params = self.net_params if net_params is None else net_params
        return self.apply_fn(params, z).reshape(z.shape[:-1] + self.event_shape)

    def sample_with_latents(self, rng_key, sample_shape=()):
        """``(x, z)``: draws ``sample_shape + event_shape`` and the latents that made them."""
        key_z, key_eps = jax.random.split(rng_key)
        z = jax.random.normal(key_z, tuple(sample_shape) + (self.latent_dim,))
        mean = self.mean(z)
        x = mean + self.sigma * jax.random.normal(key_eps, mean.shape)
        return x, z

    def rsample(self, rng_key, sample_shape=()):
        return self.sample_with_latents(rng_key, sample_shape)[0]

    def sample(self, key, sample_shape=()):
        return self.rsample(key, sample_shape)

    def log_prob(self, value):
        raise NotImplementedError(
            "A generator x = g(z) + sigma * eps has no closed-form density; use "
            "`AdversarialEstimation(entropy='vera')` (entropy gradient only) or a flow guide "
            "(`numpyro_ebm.flow_guide`) for an exact density."
        )


def vera_score(
    rng_key, q: GeneratorDistribution, x, z0, num_posterior_samples: int = 20, objective="iwae"
):
    r"""VERA's importance-sampled score :math:`\hat s(x) \approx \nabla_x \log q(x)` and the ELBO.

    :param rng_key: a JAX key.
    :param GeneratorDistribution q: the generator (its ``mean_fn``, ``sigma``,
        ``posterior_scale``).
    :param x: draws of ``q``, ``(N, *event_shape)``; treated as constants.
    :param z0: their latents, ``(N, latent_dim)``; constants.
    :param int num_posterior_samples: ``K``, importance draws per point.
    :param str objective: what ``eta`` maximizes: ``"iwae"`` (default), the ``K``-sample
        importance-weighted bound :math:`\log \frac1K\sum_j w_j` (Burda et al. 2016), or
        ``"elbo"``, VERA's ELBO :math:`\frac1K\sum_j \log w_j`. The ELBO's optimum is a narrow
        (mode-seeking) proposal around :math:`z_0`, which biases :math:`\hat s` towards the
        conditional score :math:`(g(z_0) - x)/\sigma^2`, whose entropy gradient in :math:`g`
        vanishes: the generator then under-disperses. The IWAE bound's optimum covers the
        posterior better.
    :return: ``(score, elbo)``: ``score`` ``(N, *event_shape)`` (no gradient), ``elbo`` the
        objective's mean over points (up to an additive constant),
        differentiable in ``posterior_scale`` only (the generator's parameters and ``sigma``
        enter it as constants).

    See the module docstring for the formulas.
    """
    sg = jax.lax.stop_gradient
    eta = q.posterior_scale
    if eta is None:
        raise ValueError("vera_score: the generator carries no `posterior_scale` (eta).")
    x, z0, sigma = sg(x), sg(z0), sg(q.sigma)
    u = jax.random.normal(rng_key, (num_posterior_samples,) + z0.shape)
    z = z0 + eta * u  # (K, N, k): differentiable in eta only
    mean = q.mean(z, sg(q.net_params))  # (K, N, *event_shape), generator weights constant
    event_axes = tuple(range(2, mean.ndim))
    log_prior = -0.5 * jnp.sum(z**2, -1)
    log_lik = -0.5 * jnp.sum((x - mean) ** 2, event_axes) / sigma**2
    log_xi = -0.5 * jnp.sum(u**2, -1) - jnp.sum(jnp.log(eta))
    # (K, N); constants shared by every term (2 pi's, D log sigma) dropped
    log_w = log_prior + log_lik - log_xi
    weights = jax.nn.softmax(sg(log_w), axis=0)
    weights = weights.reshape(weights.shape + (1,) * (mean.ndim - 2))
    score = jnp.sum(weights * sg(mean - x), 0) / sigma**2
    if objective == "iwae":
        elbo = jnp.mean(jax.nn.logsumexp(log_w, axis=0)) - jnp.log(num_posterior_samples)
    else:
        elbo = jnp.mean(log_w)
    return sg(score), elbo


class GeneratorGuide:
    """A NumPyro guide with one site ``site_name`` drawn from ``g(z) + sigma * eps``.

    Its ``numpyro.param`` sites (:attr:`param_names`, e.g. for
    :func:`numpyro_ebm.fce_optimizer`): ``f"{prefix}_net"`` (the generator's parameters, a
    pytree), ``f"{prefix}_sigma"`` (constrained to ``[sigma_min, sigma_max]``) and
    ``f"{prefix}_posterior_scale"`` (VERA's ``eta``, positive). Build it with
    :func:`generator_guide`.
    """

    def __init__(
        self, site_name, apply_fn, init_params, latent_dim, event_shape, sigma, sigma_bounds,
        posterior_scale, prefix,
    ):  # fmt: skip
        self.site_name = site_name
        self.apply_fn = apply_fn
        self.init_params = init_params
        self.latent_dim = latent_dim
        self.event_shape = tuple(event_shape)
        self.init_sigma = sigma
        self.sigma_bounds = sigma_bounds
        self.init_posterior_scale = posterior_scale
        self.net_name = f"{prefix}_net"
        self.sigma_name = f"{prefix}_sigma"
        self.posterior_name = f"{prefix}_posterior_scale"
        self.param_names = (self.net_name, self.sigma_name, self.posterior_name)

    def distribution(self, params) -> GeneratorDistribution:
        """The trained generator from ``svi.get_params(state)`` (constrained values)."""
        missing = [k for k in self.param_names if k not in params]
        if missing:
            raise ValueError(
                f"`params` has no entries {missing} (the generator's parameters); pass "
                f"`svi.get_params(state)` of an SVI run with this guide. Got keys {list(params)}."
            )
        return GeneratorDistribution(
            self.apply_fn,
            params[self.net_name],
            params[self.sigma_name],
            self.latent_dim,
            self.event_shape,
            params[self.posterior_name],
        )

    def sample(self, rng_key, params, sample_shape=()):
        """Draws ``sample_shape + event_shape`` of the trained generator."""
        return self.distribution(params).sample(rng_key, tuple(sample_shape))

    def __call__(self, *args, **kwargs):
        check_model_inputs(args, kwargs)
        lo, hi = self.sigma_bounds
        net = numpyro.param(self.net_name, self.init_params)
        sigma = numpyro.param(
            self.sigma_name, jnp.asarray(self.init_sigma), constraint=constraints.interval(lo, hi)
        )
        eta = numpyro.param(
            self.posterior_name,
            jnp.full(self.latent_dim, self.init_posterior_scale),
            constraint=constraints.positive,
        )
        q = GeneratorDistribution(self.apply_fn, net, sigma, self.latent_dim, self.event_shape, eta)
        return numpyro.sample(self.site_name, q)

    def __repr__(self):
        return (
            f"GeneratorGuide(site_name={self.site_name!r}, latent_dim={self.latent_dim}, "
            f"event_shape={self.event_shape})"
        )


def generator_guide(
    generator,
    latent_dim: int,
    site_name: str = "x",
    rng_key=None,
    *,
    init_params=None,
    sigma: float = 0.1,
    sigma_min: float = 0.01,
    sigma_max: float = 0.3,
    posterior_scale: float = 0.1,
    prefix: str | None = None,
) -> GeneratorGuide:
    r"""A guide drawing ``site_name`` from a non-invertible generator ``x = g(z) + sigma * eps``.

    For :class:`~numpyro_ebm.AdversarialEstimation` with ``entropy="vera"``.

    :param generator: a Flax ``linen`` module mapping ``(..., latent_dim) -> (..., *event_shape)``
        (or ``(..., prod(event_shape))``), initialized here with ``rng_key``; or a function
        ``g(params, z)`` with its parameters in ``init_params``.
    :param int latent_dim: ``k``, dimension of ``z ~ N(0, I_k)``.
    :param str site_name: the EBM site the generator draws (the model's observed site name).
    :param rng_key: a JAX key to initialize a Flax module (required then).
    :param init_params: initial parameters of a function ``generator`` (required then).
    :param float sigma: initial output noise scale, in ``[sigma_min, sigma_max]``.
    :param float sigma_min: lower bound of the learned ``sigma`` (> 0).
    :param float sigma_max: upper bound of the learned ``sigma``.
    :param float posterior_scale: initial ``eta`` of VERA's posterior ``N(z0, diag eta^2)``
        (the posterior of ``z`` given ``x`` is about ``sigma / |dg/dz|`` wide).
    :param str prefix: names of the param sites (default ``f"{site_name}_generator"``).
    :return: a :class:`GeneratorGuide`; its event shape is read off one call of the generator.

    **Example**

    .. code-block:: python

        gen = numpyro_ebm.MLPGenerator(out_dim=2)
        guide = numpyro_ebm.generator_guide(gen, latent_dim=4, site_name="x",
                                            rng_key=jax.random.key(0))
        svi = SVI(model, guide, numpyro_ebm.fce_optimizer(guide, ebm_lr=1e-3, flow_lr=1e-3),
                  loss=numpyro_ebm.AdversarialEstimation(entropy="vera"))
    """
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    if not isinstance(site_name, str):
        raise TypeError(f"`site_name` must be a site name (str), got {site_name!r}.")
    sigma_min = check_float("sigma_min", sigma_min, positive=True)
    sigma_max = check_float("sigma_max", sigma_max, positive=True)
    if sigma_max <= sigma_min:
        raise ValueError(f"`sigma_max` ({sigma_max}) must exceed `sigma_min` ({sigma_min}).")
    sigma = check_float("sigma", sigma, minimum=sigma_min, maximum=sigma_max)
    posterior_scale = check_float("posterior_scale", posterior_scale, positive=True)
    z = jnp.zeros((1, latent_dim))
    if hasattr(generator, "init") and hasattr(generator, "apply"):  # a Flax linen module
        if init_params is not None:
            raise ValueError(
                "`init_params` is for a generator function g(params, z); a Flax module is "
                "initialized from `rng_key`."
            )
        rng_key = check_rng_key(rng_key)
        init_params = generator.init(rng_key, z)
        apply_fn: Callable = generator.apply
    elif callable(generator):
        if init_params is None:
            raise ValueError(
                "`init_params` is required when `generator` is a function g(params, z) (pass "
                "its initial parameters)."
            )
        apply_fn = generator
    else:
        raise TypeError(
            "`generator` must be a Flax linen module or a function g(params, z), got "
            f"{generator!r}."
        )
    out = jax.eval_shape(apply_fn, init_params, z)
    if not hasattr(out, "shape") or len(out.shape) < 2 or out.shape[0] != 1:
        raise ValueError(
            "`generator` must map latents (batch, latent_dim) to draws (batch, *event_shape); "
            f"on (1, {latent_dim}) it returned {out!r}."
        )
    return GeneratorGuide(
        site_name, apply_fn, init_params, latent_dim, tuple(out.shape[1:]), sigma,
        (sigma_min, sigma_max), posterior_scale, prefix or f"{site_name}_generator",
    )  # fmt: skip
