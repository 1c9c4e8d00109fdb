r"""Adversarial training: the EBM against a learned sampler (the guide), in one SVI loop.

For any density :math:`q` (Jensen; equality iff :math:`q = p_\theta`)

.. math::

    \log Z(\theta) = \log \mathbb E_q\big[e^{-E_\theta(x)}/q(x)\big]
        \;\ge\; \mathbb E_q[-E_\theta(x)] + H(q),

so maximum likelihood is the game (notes, section 11)

.. math::

    \min_\theta \max_\phi\; V(\theta, \phi) =
        \mathbb E_{\rm data}[E_\theta(x)] + \mathbb E_{x\sim q_\phi}[-E_\theta(x)]
        + \lambda H(q_\phi),

:math:`V \le` the data's NLL under :math:`p_\theta` (for :math:`\lambda = 1`). The generator's
step raises :math:`V`, i.e. lowers the reverse KL :math:`\mathrm{KL}(q_\phi \| p_\theta) = \log
Z - \mathbb E_q[-E] - H(q)` (mode-seeking: it may drop modes); the EBM's step is contrastive
divergence with the generator's draws as negatives,
:math:`\nabla_\theta = \mathbb E_{\rm data}[\nabla E] - \mathbb E_{q}[\nabla E]`, optionally

* **refined** by ``langevin_steps`` unadjusted Langevin steps on :math:`-E_\theta` (stop-gradient
  parameters), starting at the generator's draws, and/or
* **importance-weighted** with self-normalized weights
  :math:`\tilde w_i \propto e^{-E_\theta(x_i) - \log q(x_i)}` (then
  :math:`\sum_i \tilde w_i \nabla E(x_i)` is a consistent estimate of :math:`\mathbb
  E_{p_\theta}[\nabla E]` even when :math:`q \ne p_\theta`; needs an exact :math:`\log q`).

Both players move in one SVI step, as in FCE: the guide is traced with its parameters through
:func:`~numpyro_ebm.estimators.fce.reverse_gradient` (:func:`~numpyro_ebm.estimators.fce.
trace_adversary`), so the generator ascends what the EBM descends; give each side its own
learning rate with :func:`numpyro_ebm.fce_optimizer`; the generator must be the faster player
(it has to track :math:`p_\theta`), e.g. ``ebm_lr=1e-3, flow_lr=3e-3``, with ``alpha=0.1`` for
a neural energy (docs/estimators.md).

**Entropy.** ``entropy="exact"``: :math:`H(q) = -\mathbb E_q[\log q]` with the guide's exact,
reparametrized ``log_prob`` (a normalizing flow, :func:`numpyro_ebm.flow_guide`). ``entropy=
"vera"``: a generator :math:`x = g(z) + \sigma\varepsilon` (:func:`numpyro_ebm.generator_guide`),
whose entropy *gradient* is VERA's importance-sampled score estimate
(:func:`~numpyro_ebm.estimators.generators.vera_score`); the entropy's value is then unknown.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.estimators.base import EnergyEstimator, no_guide
from numpyro_ebm.estimators.contrastive import check_alpha
from numpyro_ebm.estimators.fce import trace_adversary
from numpyro_ebm.estimators.flows import (
    FlowGuide,
    check_rng_key,
    guide_distribution,
    sample_and_log_prob,
)
from numpyro_ebm.estimators.generators import GeneratorDistribution, GeneratorGuide, vera_score
from numpyro_ebm.estimators.sites import site_events
from numpyro_ebm.sampling.chains import sample_chains
from numpyro_ebm.sampling.langevin import ula

__all__ = ["AdversarialEstimation", "LogZBound", "logz_lower_bound", "sample_generator"]

_NAME = "AdversarialEstimation"
_HINT = (
    "from the generator, e.g. `numpyro_ebm.flow_guide({site!r}, event_dim, rng_key)` "
    "(entropy='exact') or `numpyro_ebm.generator_guide(net, latent_dim, {site!r}, rng_key)` "
    "(entropy='vera')"
)
ENTROPIES = ("exact", "vera")


class AdversarialEstimation(EnergyEstimator):
    r"""Adversarial maximum likelihood: CD against a generator that minimizes KL(q || p_theta).

    The guide is the generator, a NumPyro guide with a sample site of the *same name* as each
    trained EBM site: a flow (:func:`numpyro_ebm.flow_guide`, ``entropy="exact"``) or a
    non-invertible generator (:func:`numpyro_ebm.generator_guide`, ``entropy="vera"``). The
    site needs no ``log_Z``; after training the EBM is an ordinary ``Unnormalized`` site, the
    generator an amortized sampler (:func:`sample_generator` or ``Predictive(guide, params=...)``)
    and, with a flow, a lower bound on :math:`\log Z` (:func:`logz_lower_bound`).

    Per step, with the minibatch :math:`x_{1:B}`, ``n = num_negatives`` generator draws
    :math:`y_{1:n}` (reparametrized), EBM negatives :math:`\tilde y` (the draws, stop-gradient,
    optionally Langevin-refined) with weights :math:`\tilde w` (uniform, or importance weights):

    .. math::

        \text{loss} = \frac1B\sum_b E_\theta(x_b)
            - \Big[\sum_i \tilde w_i E_\theta(\tilde y_i)\Big]_{\text{value } 0}
            - \frac1n \sum_i E_{\bar\theta}(y_{\mathrm{rev}(\phi)})
            + \lambda \hat H(q_{\mathrm{rev}(\phi)})
            + \alpha\,(\operatorname{mean} E(x)^2 + \operatorname{mean} E(\tilde y)^2)

    (:math:`\bar\theta`: stop-gradient parameters; :math:`[\cdot]_{\text{value }0}` enters as
    ``t - stop_gradient(t)``, so it only carries the CD gradient). Its **value** is the game value
    :math:`\hat V = \operatorname{mean} E(x) - \operatorname{mean} E(y) + \lambda \hat H`, an
    estimate of a lower bound on the data's NLL, tight at :math:`q = p_\theta` (with
    ``entropy="vera"`` the entropy's value is unknown and :math:`\hat H` contributes 0).

    :param str entropy: ``"exact"`` (flow guide: :math:`\hat H = -\operatorname{mean}\log q(y)`)
        or ``"vera"`` (generator guide: VERA's entropy gradient).
    :param int num_negatives: generator draws per step; ``None`` (default): the minibatch size.
    :param int langevin_steps: ULA steps refining the EBM's negatives (``0``: none).
    :param float langevin_step_size: the ULA step size (``numpyro_ebm.ula``).
    :param bool importance_weighting: weight the negatives by
        :math:`\operatorname{softmax}(-E(y) - \log q(y))` (``entropy="exact"`` only, no
        refinement).
    :param float entropy_weight: :math:`\lambda \ge 0` (``1``: the likelihood bound; ``> 1``
        pushes the generator to spread, against mode dropping).
    :param int num_posterior_samples: ``K``, VERA's importance draws per point.
    :param str posterior_objective: what VERA's posterior scale maximizes: ``"iwae"`` (default)
        or ``"elbo"`` (VERA's original; see
        :func:`~numpyro_ebm.estimators.generators.vera_score`).
    :param float alpha: energy-magnitude penalty as in :class:`~numpyro_ebm.ContrastiveDivergence`.
    :param sites: names of the sites to train; ``None``: every continuous observed site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        def model(data):
            E = flax_module("energy", numpyro_ebm.nets.MLPEnergy(), input_shape=(1, 2))
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", numpyro_ebm.Unnormalized(E, (2,)), obs=batch)

        guide = numpyro_ebm.flow_guide("x", 2, jax.random.key(0), loc=data.mean(0),
                                       scale=data.std(0))
        svi = SVI(model, guide, numpyro_ebm.fce_optimizer(guide, ebm_lr=1e-3, flow_lr=3e-3),
                  loss=numpyro_ebm.AdversarialEstimation(entropy="exact"))
        params = svi.run(jax.random.key(1), 5000, data).params
        E = numpyro_ebm.energy_fn(model, "x", model_args=(data,))
        bound = numpyro_ebm.logz_lower_bound(jax.random.key(2), E, guide, params)
    """

    site_kind = "continuous"
    stop_gradient_trace = True

    def __init__(
        self,
        entropy: str = "exact",
        num_negatives: int | None = None,
        langevin_steps: int = 0,
        importance_weighting: bool = False,
        entropy_weight: float = 1.0,
        *,
        langevin_step_size: float = 1e-2,
        num_posterior_samples: int = 20,
        posterior_objective: str = "iwae",
        alpha: float = 0.0,
        sites=None,
        report_nonfinite: bool | str = True,
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        if not isinstance(entropy, str) or entropy not in ENTROPIES:
            raise ValueError(
                f"{_NAME}: `entropy` must be one of {ENTROPIES} ('exact' for a flow guide, "
                f"'vera' for a generator_guide), got {entropy!r}."
            )
        self.entropy = entropy
        self.num_negatives = (
            None if num_negatives is None else check_int("num_negatives", num_negatives, 1)
        )
        self.langevin_steps = check_int("langevin_steps", langevin_steps, 0)
        self.langevin_step_size = check_float(
            "langevin_step_size", langevin_step_size, positive=True
        )
        if not isinstance(importance_weighting, bool):
            raise TypeError(f"`importance_weighting` must be a bool, got {importance_weighting!r}.")
        if importance_weighting and entropy != "exact":
            raise ValueError(
                "`importance_weighting=True` needs the generator's exact log density: use "
                "entropy='exact' with a flow guide (got entropy='vera')."
            )
        if importance_weighting and self.langevin_steps:
            raise ValueError(
                "`importance_weighting=True` weights the generator's own draws by "
                "exp(-E - log q); Langevin-refined draws have no known density: set "
                "`langevin_steps=0` or `importance_weighting=False`."
            )
        self.importance_weighting = importance_weighting
        self.entropy_weight = check_float("entropy_weight", entropy_weight, minimum=0.0)
        self.num_posterior_samples = check_int("num_posterior_samples", num_posterior_samples, 1)
        if posterior_objective not in ("iwae", "elbo"):
            raise ValueError(
                f"{_NAME}: `posterior_objective` must be 'iwae' or 'elbo', got "
                f"{posterior_objective!r}."
            )
        self.posterior_objective = posterior_objective
        self.alpha = check_alpha(alpha)

    def nonfinite_hint(self) -> str:
        return (
            "the generator diverged (its draws, log densities or energies are not finite): "
            "lower the generator's learning rate (`numpyro_ebm.fce_optimizer(..., flow_lr=...)`)"
            + (", or the Langevin step size (`langevin_step_size`)" if self.langevin_steps else "")
        )

    def guide_inputs(self, rng_key, param_map, guide, model_args, model_kwargs, sites):
        """``{site name: q}``: the guide's distribution at each site, traced with the guide's
        parameters through :func:`~numpyro_ebm.estimators.fce.reverse_gradient`."""
        if guide is None or guide is no_guide:
            raise ValueError(
                "AdversarialEstimation needs a generator guide over the EBM site: "
                "`numpyro_ebm.flow_guide(site_name, event_dim, rng_key)` (entropy='exact') or "
                "`numpyro_ebm.generator_guide(net, latent_dim, site_name, rng_key)` "
                f"(entropy='vera'); got guide={getattr(guide, '__name__', guide)!r}."
            )
        _, adversary_tr = trace_adversary(guide, param_map, model_args, model_kwargs, rng_key)
        out = {}
        for s in sites:
            q = guide_distribution(adversary_tr, s, _NAME, _HINT)
            is_generator = isinstance(q, GeneratorDistribution)
            if self.entropy == "exact" and is_generator:
                raise ValueError(
                    f"AdversarialEstimation: entropy='exact' needs a guide with an exact log "
                    f"density at {s.name!r} (a flow, `numpyro_ebm.flow_guide`); the guide is a "
                    "non-invertible generator (`generator_guide`): use entropy='vera'."
                )
            if self.entropy == "vera" and not is_generator:
                raise ValueError(
                    f"AdversarialEstimation: entropy='vera' needs a generator guide at "
                    f"{s.name!r} (`numpyro_ebm.generator_guide`), got {type(q).__name__}; with a "
                    "flow (exact log density) use entropy='exact'."
                )
            if tuple(q.batch_shape) != ():
                raise ValueError(
                    f"AdversarialEstimation: the guide's site {s.name!r} has batch shape "
                    f"{q.batch_shape}; the generator must draw one event per call (batch "
                    "shape ())."
                )
            out[s.name] = q
        return out

    def site_loss(self, site, rng_key, state):
        """The adversarial loss of one site; ``state`` is the guide's (reversed) generator."""
        q = state
        sg = jax.lax.stop_gradient
        x = site_events(site.dist, site.data)
        event_ndim = len(site.dist.event_shape)
        batch = math.prod(x.shape[: x.ndim - event_ndim])
        x = x.reshape((batch,) + tuple(site.dist.event_shape))
        n = self.num_negatives or batch
        key_q, key_refine, key_vera = jax.random.split(rng_key, 3)
        if self.entropy == "exact":
            y, log_q = sample_and_log_prob(q, key_q, (n,))
            entropy = -jnp.mean(log_q)
        else:
            y, z0 = q.sample_with_latents(key_q, (n,))
            score, elbo = vera_score(
                key_vera, q, y, z0, self.num_posterior_samples, self.posterior_objective
            )
            axes = tuple(range(1, y.ndim))
            # value 0; gradient -E[s . dy/dphi] = grad H
            entropy = -jnp.mean(jnp.sum(score * (y - sg(y)), axes))
        energy_gen = site.frozen.energy(y)  # theta frozen; the gradient reaches phi through y
        generator_term = -jnp.mean(energy_gen) + self.entropy_weight * entropy
        if self.entropy == "vera":
            generator_term = generator_term + (elbo - sg(elbo))  # value 0; eta ascends it

        negatives = sg(y)
        if self.langevin_steps:
            frozen = site.frozen
            negatives = sample_chains(
                key_refine,
                lambda v: -frozen.energy(v),
                partial(ula, step_size=self.langevin_step_size),
                negatives,
                self.langevin_steps,
            ).positions
            negatives = sg(negatives)
        energy_neg = site.dist.energy(negatives)
        if self.importance_weighting:
            weights = jax.nn.softmax(sg(-energy_gen - log_q))
            mean_neg = jnp.sum(weights * energy_neg)
        else:
            mean_neg = jnp.mean(energy_neg)
        energy_data = site.dist.energy(x)
        loss = jnp.mean(energy_data) - (mean_neg - sg(mean_neg)) + generator_term
        if self.alpha:
            loss = loss + self.alpha * (jnp.mean(energy_data**2) + jnp.mean(energy_neg**2))
        return loss


# --------------------------------------------------------------------------------------------
# after training


class LogZBound(NamedTuple):
    r"""A Monte Carlo lower bound :math:`\mathbb E_q[-E(x) - \log q(x)] \le \log Z`.

    :ivar log_Z: the estimate (nats); its gap to the true ``log Z`` is ``KL(q || p)``.
    :ivar stderr: its Monte Carlo standard error.
    :ivar num_samples: the number of generator draws.
    """

    log_Z: jax.Array
    stderr: jax.Array
    num_samples: int


def _flow_draws(rng_key, guide, params, num_samples):
    if isinstance(guide, FlowGuide):
        return guide.flow(params).sample_and_log_prob(rng_key, (num_samples,))
    if isinstance(guide, GeneratorGuide):
        raise ValueError(
            "`guide` is a generator_guide: x = g(z) + sigma * eps has no closed-form log q, so "
            "E_q[-E] + H(q) is not available; train with a flow guide (entropy='exact') for a "
            "log Z bound, or estimate log Z with `numpyro_ebm.logz_ais`."
        )
    raise TypeError(f"`guide` must be a FlowGuide (`numpyro_ebm.flow_guide`), got {guide!r}.")


def logz_lower_bound(rng_key, energy_fn, guide, params, num_samples: int = 10_000) -> LogZBound:
    r"""The variational lower bound :math:`\log Z \ge \mathbb E_q[-E(x)] + H(q)` from a trained
    flow guide: the mean of :math:`-E(y_i) - \log q(y_i)` over ``num_samples`` draws
    :math:`y_i \sim q`, with its standard error.

    :param rng_key: a JAX key.
    :param energy_fn: ``E(params, x)`` (e.g. ``numpyro_ebm.energy_fn(model, "x",
        model_args=(data,))``), ``x`` of shape ``(N, *event_shape)`` -> ``(N,)``.
    :param guide: the :class:`~numpyro_ebm.FlowGuide` trained with
        ``AdversarialEstimation(entropy="exact")``.
    :param params: ``svi.get_params(state)`` (the EBM's and the flow's).
    :param int num_samples: draws of the flow.
    :return: a :class:`LogZBound`.

    **Example**

    .. code-block:: python

        bound = numpyro_ebm.logz_lower_bound(jax.random.key(0), E, guide, params)
        print(f"log Z >= {bound.log_Z:.3f} +- {bound.stderr:.3f}")
    """
    rng_key = check_rng_key(rng_key)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    if not callable(energy_fn):
        raise TypeError(f"`energy_fn` must be a callable E(params, x), got {energy_fn!r}.")
    y, log_q = _flow_draws(rng_key, guide, params, num_samples)
    values = -energy_fn(params, y) - log_q
    return LogZBound(
        jnp.mean(values), jnp.std(values, ddof=1) / math.sqrt(num_samples), num_samples
    )


def sample_generator(rng_key, guide, params, num_samples: int) -> jax.Array:
    """``num_samples`` independent draws ``(num_samples, *event_shape)`` of a trained generator
    (a :class:`~numpyro_ebm.FlowGuide` or a :class:`~numpyro_ebm.GeneratorGuide`).

    Equivalent to ``Predictive(guide, params=params, num_samples=num_samples)(rng_key)[site]``
    but one batched call instead of a ``vmap`` over single draws.
    """
    rng_key = check_rng_key(rng_key)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    if isinstance(guide, FlowGuide):
        return guide.flow(params).sample(rng_key, (num_samples,))
    if isinstance(guide, GeneratorGuide):
        return guide.sample(rng_key, params, (num_samples,))
    raise TypeError(
        "`guide` must be a FlowGuide (`numpyro_ebm.flow_guide`) or a GeneratorGuide "
        f"(`numpyro_ebm.generator_guide`), got {guide!r}."
    )
