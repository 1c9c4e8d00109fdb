r"""Contrastive divergence (CD-k) as a loss for NumPyro's ``SVI``.

Maximum likelihood for :math:`p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)` has the gradient
:math:`\nabla_\theta \mathrm{NLL} = \mathbb E_{\rm data}[\nabla_\theta E_\theta(x)]
- \mathbb E_{p_\theta}[\nabla_\theta E_\theta(x')]`, so the surrogate loss

.. math::

    L(\theta) = \operatorname{mean}_{x\in\text{batch}} E_\theta(x)
              - \operatorname{mean}_{x'} E_\theta(\operatorname{sg}(x'))
              + \alpha\,\big(\operatorname{mean} E_\theta(x)^2
                             + \operatorname{mean} E_\theta(x')^2\big)

with negatives :math:`x'` drawn by MCMC under the current (stop-gradient) parameters has the
maximum-likelihood gradient (plus the optional energy-magnitude penalty :math:`\alpha`).
:class:`ContrastiveDivergence` (Hinton 2002) starts the chains at the data minibatch;
:class:`~numpyro_ebm.estimators.persistent.PersistentContrastiveDivergence` (Tieleman 2008)
where they stopped at the previous update.

The loss value is not a log-likelihood (it is a difference of energies); watch a held-out
likelihood or samples instead.

Chains are ``vmap``-ed over single positions of shape ``event_shape`` when the site's energy
scores one event on its own. A **conditional energy** :math:`E(y, x)` that closes over a
minibatch of conditioning inputs (``Unnormalized(lambda y: E(y, x), ...)`` in a plate over the
examples, ``x`` a model input or another observed site) scores only the whole minibatch at once
(:func:`scores_single_events` is False). CD then runs the chains over :math:`y` jointly, one
position of the minibatch's shape started at the data, with every example's :math:`x` held
fixed, under the log density :math:`\sum_i -E(y_i, x_i)`: the product of the per-example
conditionals, so each :math:`y_i` is a chain of :math:`p(y \mid x_i)`. With ULA (a
coordinate-wise update) these are exactly independent per-example chains; a Metropolis-adjusted
kernel (MALA) accepts or rejects the minibatch as a whole (valid, slower mixing for large
minibatches). PCD keeps one persistent chain per example for such sites, stored at the plate's
(subsample) index (:meth:`~numpyro_ebm.PersistentContrastiveDivergence.conditional_site_loss`;
build its guide with ``make_guide``). CD and PCD train the
non-label sites (``site_kind = "sampled"``: continuous sites and discrete vectors); a class label
site is trained exactly by :class:`numpyro_ebm.ConditionalMaximumLikelihood`, so a joint model
(JEM) trains with ``CombinedLoss(PersistentContrastiveDivergence(...),
ConditionalMaximumLikelihood())``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.estimators.base import EnergyEstimator
from numpyro_ebm.estimators.sites import EBMSite, site_events
from numpyro_ebm.sampling.chains import build_algorithm, sample_chains

__all__ = [
    "ContrastiveDivergence",
    "check_alpha",
    "check_kernel",
    "contrastive_divergence_loss",
    "scores_single_events",
]


def contrastive_divergence_loss(energy_data, energy_negative, alpha=0.0):
    r"""The CD surrogate loss from the energies of the data and of the negatives.

    .. math::

        L = \operatorname{mean} E(x) - \operatorname{mean} E(x')
            + \alpha\,(\operatorname{mean} E(x)^2 + \operatorname{mean} E(x')^2)

    :param energy_data: ``(batch,)`` energies of the data, differentiable in the parameters.
    :param energy_negative: ``(num_negatives,)`` energies of the (stop-gradient) negatives,
        differentiable in the parameters.
    :param alpha: weight of the energy-magnitude penalty (``0`` for none).
    :return: a scalar.
    """
    loss = jnp.mean(energy_data) - jnp.mean(energy_negative)
    if alpha:
        loss = loss + alpha * (jnp.mean(energy_data**2) + jnp.mean(energy_negative**2))
    return loss


def check_kernel(kernel) -> None:
    """Fail at construction, not at the first training step, on a kernel that is no factory.

    ``None`` is accepted: the chains then use the site distribution's own exact sampler (its
    ``annealing_path``, e.g. an RBM's block Gibbs kernel), checked when the site is traced."""
    if kernel is not None:
        build_algorithm(kernel, lambda x: -0.5 * jnp.sum(x**2))


def scores_single_events(dist, data) -> bool:
    """Whether the site's energy scores one event on its own: ``dist.energy`` of one event of
    ``data`` (shape ``(1, *event_shape)``) has shape ``(1,)``. False for a conditional energy
    ``E(y, x)`` closing over a minibatch of ``x`` (it broadcasts one ``y`` against every ``x``,
    or fails), whose chains must then run over the whole minibatch (module docstring). Checked
    on shapes only (``jax.eval_shape``), so it costs nothing."""
    events = site_events(dist, data)
    if events.shape[0] <= 1:
        return True
    try:
        out = jax.eval_shape(dist.energy_fn, jax.ShapeDtypeStruct((1, *events.shape[1:]),
                                                                   events.dtype))
    except (TypeError, ValueError):
        return False
    return tuple(out.shape) in ((1,), (1, 1), ())


def check_alpha(alpha) -> float:
    """``float(alpha)``, or raise naming ``alpha`` unless it is a finite float ``>= 0``."""
    return check_float("alpha", alpha, minimum=0.0)


class ContrastiveDivergence(EnergyEstimator):
    r"""Contrastive divergence CD-k (Hinton 2002) as a loss for ``numpyro.infer.SVI``.

    Each step, one chain starts at every example of the minibatch and runs ``num_steps``
    transitions of ``kernel`` targeting :math:`p_\theta \propto e^{-E_\theta}` under the current
    parameters (no gradient flows through the sampler); the loss is
    :func:`contrastive_divergence_loss` of the data and the chains' end points, summed over the
    trained sites. Other observed sites are conditioning inputs. Needs no guide: pass
    :func:`numpyro_ebm.no_guide` (``SVI`` cannot take ``guide=None``).

    CD-k is cheap and stable but biased: chains that start at the data never visit spurious modes
    far from it. For density estimation prefer
    :class:`~numpyro_ebm.PersistentContrastiveDivergence`.

    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(blackjax.mala, step_size=1e-2)`` or
        ``functools.partial(numpyro_ebm.ula, step_size=1e-2)``; or ``None`` for the site
        distribution's own sampler (its ``annealing_path`` at ``beta = 1``: a classical model's
        block Gibbs kernel from ``model.distribution(params)``, or a
        :func:`numpyro_ebm.geometric_path`'s kernel).
    :param int num_steps: ``k``, MCMC transitions per update (``>= 1``).
    :param float alpha: weight of the energy-magnitude penalty
        :math:`\alpha(\operatorname{mean}E(x)^2 + \operatorname{mean}E(x')^2)`; ``0.1`` helps
        neural energies, ``0`` (default) leaves the maximum-likelihood fixed point unbiased.
    :param sites: names of the observed ``Unnormalized`` sites to train; ``None`` (default): every
        non-label site (label sites are left to
        :class:`~numpyro_ebm.ConditionalMaximumLikelihood`).
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        def model(data):
            mlp = flax_module("energy", MLP(), input_shape=(1, 2))
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", numpyro_ebm.Unnormalized(mlp, (2,)), obs=batch)

        cd = numpyro_ebm.ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), 10)
        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=cd)
        result = svi.run(jax.random.key(0), 5000, data)
    """

    site_kind = "sampled"
    stop_gradient_trace = True
    data_energy_in_loss = True  # negatives_loss evaluates data_energy(site)

    def __init__(
        self, kernel: Callable | None, num_steps: int = 1, alpha: float = 0.0, sites=None, *,
        report_nonfinite: bool | str = True,
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        check_kernel(kernel)
        self.kernel = kernel
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.alpha = check_alpha(alpha)

    def chain_target(self, site: EBMSite):
        """What the chains of ``site`` sample, under stop-gradient parameters: the log density
        ``x -> -E(x)`` for a kernel factory, or the distribution itself (whose own sampler runs)
        when ``kernel`` is ``None``."""
        frozen = site.frozen
        if self.kernel is None:
            if getattr(frozen, "annealing_path", None) is None:
                raise ValueError(
                    f"`kernel` is None, but the site {site.name!r} has no sampler of its own (no "
                    "`annealing_path`); pass a kernel factory, e.g. "
                    "`functools.partial(numpyro_ebm.ula, step_size=1e-2)`."
                )
            return frozen
        return lambda x: -frozen.energy(x)

    def negatives_loss(self, site: EBMSite, negatives) -> jax.Array:
        """:func:`contrastive_divergence_loss` of the site's data and the given negatives."""
        energy_data = self.data_energy(site)
        energy_neg = site.dist.energy(jax.lax.stop_gradient(negatives))
        return contrastive_divergence_loss(energy_data, energy_neg, self.alpha)

    def nonfinite_hint(self) -> str:
        return (
            "the negative samples diverged (the MCMC chains left to infinity): reduce the "
            f"kernel's step_size (num_steps={self.num_steps})"
        )

    def site_loss(self, site, rng_key, state=None):
        start = jax.lax.stop_gradient(site_events(site.dist, site.data))
        if not scores_single_events(site.dist, site.data):
            return self.negatives_loss(site, self.conditional_negatives(site, rng_key, start))
        negatives = sample_chains(
            rng_key, self.chain_target(site), self.kernel, start, self.num_steps
        ).positions
        return self.negatives_loss(site, negatives)

    def conditional_negatives(self, site: EBMSite, rng_key, start) -> jax.Array:
        r"""Negatives of a conditional energy (one that scores only whole minibatches): one chain
        whose position is the minibatch ``(n, *event_shape)``, started at ``start``, under
        :math:`\sum_i -E(y_i, x_i)` (each example's ``x`` fixed); returns ``(n, *event_shape)``."""
        frozen = site.frozen
        if self.kernel is None:
            target = self.chain_target(site)  # the site's own sampler takes the minibatch
        else:
            def target(y):
                return -jnp.sum(frozen.energy(y))

        positions = sample_chains(rng_key, target, self.kernel, start[None], self.num_steps)
        return positions.positions[0]
