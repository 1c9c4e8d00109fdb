r"""Flow contrastive estimation (Gao et al. 2020): NCE against a normalizing flow that fights back.

The EBM :math:`p_{\theta,c}(x) = \exp(-E_\theta(x) - c)` (``c = log_Z``, learned) and a flow
:math:`q_\phi` play a game on the NCE value function with :math:`\nu` noise draws per data point,

.. math::

    G(x) &= -E_\theta(x) - c - \log q_\phi(x) - \log\nu,\\
    L(\theta, c, \phi) &= -\mathbb E_{x\sim\text{data}} \log\sigma(G(x))
        - \nu\, \mathbb E_{y\sim q_\phi} \log\sigma(-G(y)),

:math:`\min_{\theta,c} \max_\phi L`. Both players move in one SVI step: the loss passes the
flow's parameters through a gradient reversal (identity forward, negated cotangent backward), so
one gradient descent step lowers :math:`L` in :math:`(\theta, c)` and raises it in :math:`\phi`.
The noise samples :math:`y = T_\phi(z)` are reparametrized, and the flow's gradient flows through
them (stopping it collapses the game). An optional anchor
:math:`w\,(-\mathbb E_\text{data}\log q_\phi(x))` (``flow_mle_weight``) keeps the flow near
the data.

At equilibrium (:math:`q_\phi = p_{\theta,c} =` data) :math:`G \equiv -\log\nu` and
:math:`L^* = (1+\nu)\log(1+\nu) - \nu\log\nu` (``2 log 2 = 1.386`` for :math:`\nu = 1`). A loss far
below it means the flow is losing (the EBM separates it from data easily).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.energy import trace_model
from numpyro_ebm.estimators.base import EnergyEstimator, no_guide
from numpyro_ebm.estimators.flows import guide_distribution, sample_and_log_prob
from numpyro_ebm.estimators.nce import nce_loss

__all__ = [
    "FlowContrastiveEstimation",
    "reverse_gradient",
    "fce_equilibrium_loss",
    "trace_adversary",
]

_NAME = "FlowContrastiveEstimation"
_FLOW_HINT = "from a flow, e.g. `numpyro_ebm.flow_guide({site!r}, event_dim)`"


@jax.custom_vjp
def reverse_gradient(tree):
    """Identity on a pytree whose gradient is negated: ``d/dx f(reverse_gradient(x)) = -f'(x)``."""
    return tree


def _reverse_fwd(tree):
    return tree, None


def _reverse_bwd(_, cotangent):
    return (jax.tree.map(jnp.negative, cotangent),)


reverse_gradient.defvjp(_reverse_fwd, _reverse_bwd)


def trace_adversary(guide, param_map, model_args, model_kwargs, rng_key):
    """``(guide_trace, adversary_trace)``: the guide traced under ``param_map`` as is, and again
    (same key, so the same draws) with the guide's own ``numpyro.param`` sites passed through
    :func:`reverse_gradient`, so that the guide ascends whatever a loss built on the second trace
    descends. Shared by FCE and :class:`~numpyro_ebm.AdversarialEstimation`."""
    guide_tr = trace_model(guide, param_map, model_args, model_kwargs, rng_key)
    guide_names = [k for k, v in guide_tr.items() if v["type"] == "param"]
    reversed_map = dict(param_map)
    reversed_map.update(reverse_gradient({k: param_map[k] for k in guide_names if k in param_map}))
    adversary_tr = trace_model(guide, reversed_map, model_args, model_kwargs, rng_key)
    return guide_tr, adversary_tr


def fce_equilibrium_loss(num_noise: int = 1) -> float:
    r"""``(1+nu) log(1+nu) - nu log nu``: the FCE/NCE loss when the flow equals the EBM."""
    nu = float(num_noise)
    return (1 + nu) * math.log1p(nu) - nu * math.log(nu)


class FlowContrastiveEstimation(EnergyEstimator):
    r"""Flow contrastive estimation: NCE whose noise is the guide's flow, trained adversarially.

    The guide is a normalizing flow over each trained site: a NumPyro guide with a sample site of
    the *same name* whose distribution samples with the reparametrization trick and has an exact
    ``log_prob`` (build one with :func:`numpyro_ebm.flow_guide`). The site must carry a learnable
    log normalizer, ``Unnormalized(E, event_shape, log_Z=numpyro.param("log_Z", 0.0))``.

    Per step, with the minibatch ``x`` (``B`` points) and ``nu * B`` flow draws ``y``:

    .. math::

        \text{loss} = L_\text{NCE}(\theta, c, \text{rev}(\phi))
            + w\,\Big(-\frac1B\sum_i \log q_\phi(x_i)\Big)

    where ``rev`` is :func:`reverse_gradient`: the EBM (energy params and ``log_Z``) descends the
    NCE loss and the flow ascends it, in one ``SVI`` loop, with any optimizer. The flow must
    move slower than the EBM: :func:`numpyro_ebm.fce_optimizer` gives it its own, lower
    learning rate (recommended rates in docs/estimators.md).

    The reported loss includes the anchor term; the NCE part is near
    :func:`fce_equilibrium_loss` (1.386 for ``nu = 1``) when the game is balanced.

    After training both are models: the EBM's test log-likelihood is ``-E(x) - log_Z`` (self-
    normalized; check it against ``numpyro_ebm.logz_quadrature`` in low dimension) and the flow's
    is ``guide.log_prob(params, x)`` (exact).

    :param int num_noise: ``nu >= 1``, flow draws per data point.
    :param float flow_mle_weight: ``w >= 0``, weight of the flow's maximum-likelihood anchor
        (e.g. 0.1; 0 lets the flow drop modes).
    :param sites: names of the sites to train; ``None``: every continuous observed
        ``Unnormalized`` site (the guide needs a flow for each).
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        def model(data):
            E = flax_module("energy", mlp, input_shape=(1, 2))
            log_Z = numpyro.param("log_Z", 0.0)
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", Unnormalized(E, (2,), log_Z=log_Z), obs=batch)

        guide = numpyro_ebm.flow_guide("x", 2, jax.random.key(0), loc=data.mean(0),
                                       scale=data.std(0))
        svi = SVI(model, guide, numpyro_ebm.fce_optimizer(guide, num_updates=5000),
                  loss=FlowContrastiveEstimation(num_noise=1, flow_mle_weight=0.1))
        result = svi.run(rng_key, 5000, data)
        flow_nll = -guide.log_prob(result.params, x_test).mean()
    """

    site_kind = "continuous"

    def __init__(
        self, num_noise: int = 1, flow_mle_weight: float = 0.0, sites=None, *,
        report_nonfinite: bool | str = True,
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        self.num_noise = check_int("num_noise", num_noise, minimum=1)
        self.flow_mle_weight = check_float("flow_mle_weight", flow_mle_weight, minimum=0.0)

    def nonfinite_hint(self) -> str:
        return (
            "the flow diverged (its draws or log densities are not finite): lower the flow's "
            "learning rate (`numpyro_ebm.fce_optimizer(..., flow_lr=...)`) or raise "
            "`flow_mle_weight`"
        )

    def guide_inputs(self, rng_key, param_map, guide, model_args, model_kwargs, sites):
        """``{site name: (q, q_adversary)}``: the guide's flow at each site, traced as is (for
        the anchor) and with the flow's parameters through :func:`reverse_gradient` (for the NCE
        term)."""
        if guide is None or guide is no_guide:
            raise ValueError(
                "FlowContrastiveEstimation needs a normalizing-flow guide over the EBM site "
                "(e.g. `numpyro_ebm.flow_guide(site_name, event_dim, rng_key)`); got guide="
                f"{getattr(guide, '__name__', guide)!r}."
            )
        guide_tr, adversary_tr = trace_adversary(
            guide, param_map, model_args, model_kwargs, rng_key
        )
        return {
            s.name: (
                guide_distribution(guide_tr, s, _NAME, _FLOW_HINT),
                guide_distribution(adversary_tr, s, _NAME, _FLOW_HINT),
            )
            for s in sites
        }

    def site_loss(self, site, rng_key, state):
        """The FCE loss of one site; ``state`` is ``(q, q_adversary)`` from the guide."""
        q, q_adv = state
        if site.dist.log_Z is None:
            raise ValueError(
                f"FlowContrastiveEstimation: site {site.name!r} has no learnable log "
                "normalizer; write it as `Unnormalized(E, event_shape, "
                "log_Z=numpyro.param('log_Z', 0.0))` (NCE/FCE learn log Z)."
            )
        x = site.data
        batch_shape = x.shape[: x.ndim - len(site.dist.event_shape)]
        n_extra = len(batch_shape) - len(q_adv.batch_shape)
        if n_extra < 0:
            raise ValueError(
                f"FlowContrastiveEstimation: the guide's site {site.name!r} has batch shape "
                f"{q_adv.batch_shape}, larger than the data's {batch_shape}."
            )
        y, log_q_y = sample_and_log_prob(q_adv, rng_key, (self.num_noise,) + batch_shape[:n_extra])
        log_nu = math.log(self.num_noise)
        logit_data = site.dist.log_prob(x) - q_adv.log_prob(x) - log_nu
        logit_noise = site.dist.log_prob(y) - log_q_y - log_nu
        loss = nce_loss(logit_data, logit_noise, self.num_noise)
        if self.flow_mle_weight > 0:
            loss = loss - self.flow_mle_weight * jnp.mean(q.log_prob(x))
        return loss
