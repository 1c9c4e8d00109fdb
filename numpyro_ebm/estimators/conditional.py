r"""Conditional energies over a class label, :math:`E_\theta(y, x)` with :math:`y \in \{0..K-1\}`,
trained through NumPyro's ``SVI``; and :class:`CombinedLoss`, to train a joint EBM (JEM).

A conditional EBM over a discrete label is a network with one output per class,
:math:`E_\theta(y, x) = f_\theta(x)_y`, and

.. math::

    p_\theta(y \mid x) = \frac{e^{-E_\theta(y, x)}}{Z_\theta(x)},\qquad
    Z_\theta(x) = \sum_{k=0}^{K-1} e^{-E_\theta(k, x)} .

The negative phase of maximum likelihood is an expectation over :math:`p_\theta(\cdot\mid x)`,
and with :math:`K` classes it is *exact* by enumeration: no MCMC is needed. The per-example
negative conditional log-likelihood and its gradient are

.. math::

    -\log p_\theta(y\mid x) = E_\theta(y, x) + \log Z_\theta(x),\qquad
    \nabla_\theta = \nabla_\theta E_\theta(y, x)
        - \mathbb E_{y' \sim p_\theta(\cdot\mid x)}\big[\nabla_\theta E_\theta(y', x)\big],

which is the cross-entropy of ``softmax(-f(x))`` and the label, and exactly the contrastive
divergence gradient of :mod:`numpyro_ebm.estimators.contrastive` with a negative drawn per example
by an exact categorical Gibbs step (for a single discrete variable, one Gibbs step *is* an exact
draw, so CD-1 is unbiased here). :class:`ConditionalMaximumLikelihood` computes it either way:

- ``negatives="exact"`` (default): the expectation over :math:`y'` in closed form (the
  Rao-Blackwellized CD estimate); the loss value is the cross-entropy itself.
- ``negatives="sample"``: ``num_samples`` exact categorical draws per example, fed to
  :func:`~numpyro_ebm.estimators.contrastive.contrastive_divergence_loss` (CD with an exact Gibbs
  kernel; an unbiased, noisier estimate of the same gradient; supports the ``alpha`` penalty).

One idea, one place: the CD surrogate is the one of ``contrastive.py``; this module only adds
the exact sampler/expectation over a finite support.

Write the label as an observed :class:`~numpyro_ebm.Unnormalized` site with a finite integer
support, with ``x`` a model argument (the conditioning input); :func:`label_ebm` builds it from
the ``(batch, K)`` table of energies::

    def model(x, y=None):
        net = flax_module("energy", MLP(num_classes), input_shape=(1, 64))
        with numpyro.plate("data", x.shape[0], subsample_size=128):
            xb = numpyro.subsample(x, event_dim=1)
            yb = None if y is None else numpyro.subsample(y, event_dim=0)
            numpyro.sample("y", label_ebm(net(xb)), obs=yb)

    svi = SVI(model, no_guide, optax.adam(1e-3), loss=ConditionalMaximumLikelihood())

Prediction is by minimum energy: ``label_energies(model, params, "y", x_test).argmin(-1)``.
(``dist.Categorical(logits=-net(xb))`` with ``Trace_ELBO`` is the same model and gradient; the
``Unnormalized`` form is the one that composes with the other EBM estimators, e.g. in JEM.)

**Joint EBM (JEM, Grathwohl et al. 2019).** The same logits define an EBM over ``x``,
:math:`E_\theta(x) = -\log\sum_y e^{-f_\theta(x)_y}` (:func:`joint_energy`). Add it as a second
observed site ``numpyro.sample("x", Unnormalized(lambda v: joint_energy(net(v)), (64,)), obs=xb)``
and train with ``CombinedLoss(PersistentContrastiveDivergence(...), ConditionalMaximumLikelihood())``:
PCD (SGLD chains with a replay buffer, reinitialization, small steps, the energy penalty
``alpha``) trains the continuous ``x`` site, the exact conditional likelihood the discrete ``y``
site, each estimator taking only the sites of its kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import trace_model, unwrap_distribution
from numpyro_ebm.estimators.base import EBMSite, EnergyLoss, observed_ebm_sites
from numpyro_ebm.estimators.contrastive import (
    _check_alpha,
    check_site_names,
    contrastive_divergence_loss,
    select_sites,
)

__all__ = [
    "CombinedLoss",
    "ConditionalMaximumLikelihood",
    "conditional_nll",
    "enumerate_energies",
    "joint_energy",
    "label_ebm",
    "label_energies",
]

# Salt that separates this loss's categorical draws from the model trace (same convention as the
# contrastive losses: the model is traced with the first half of the split key).
_SAMPLE_SALT = 0xC1A55


# --------------------------------------------------------------------------------------------
# building blocks


def label_ebm(energies, log_Z=None) -> Unnormalized:
    r"""An :class:`~numpyro_ebm.Unnormalized` site over a class label, from a table of energies.

    .. math:: E(y) = \text{energies}[..., y],\qquad y \in \{0, \dots, K-1\}

    :param energies: ``(*batch, K)``, e.g. ``net(x)`` for a minibatch ``x`` (one row per example:
        the conditioning input enters through the table).
    :param log_Z: optional, as for ``Unnormalized``.
    :return: ``Unnormalized`` with ``event_shape=()`` and support
        ``constraints.integer_interval(0, K - 1)``; its energy maps integer labels of shape
        ``(*sample, *batch)`` to ``(*sample, *batch)``.
    """
    energies = jnp.asarray(energies)
    if energies.ndim < 1 or energies.shape[-1] < 2:
        raise ValueError(
            f"label_ebm: `energies` must have shape (*batch, K) with K >= 2 classes, got "
            f"{energies.shape}."
        )
    num_classes = energies.shape[-1]

    def energy_fn(y):
        y = jnp.asarray(y)
        batch = jnp.broadcast_shapes(y.shape, energies.shape[:-1])
        table = jnp.broadcast_to(energies, batch + (num_classes,))
        index = jnp.broadcast_to(y, batch).astype(jnp.int32)[..., None]
        return jnp.take_along_axis(table, index, axis=-1)[..., 0]

    return Unnormalized(
        energy_fn, (), constraints.integer_interval(0, num_classes - 1), log_Z=log_Z
    )


def joint_energy(energies):
    r"""The JEM energy of ``x``: :math:`E(x) = -\log \sum_y e^{-E(y, x)}`; ``(..., K) -> (...)``."""
    return -logsumexp(-jnp.asarray(energies), axis=-1)


def conditional_nll(energies, labels):
    r"""Mean negative conditional log-likelihood (cross-entropy) of the labels.

    .. math:: \frac1N\sum_n \Big[E(y_n, x_n) + \log\sum_k e^{-E(k, x_n)}\Big]

    :param energies: ``(N, K)`` (or ``(*batch, K)``).
    :param labels: integer labels ``(N,)`` (or ``(*batch,)``).
    :return: scalar.
    """
    energies = jnp.asarray(energies)
    labels = jnp.asarray(labels).astype(jnp.int32)
    e_y = jnp.take_along_axis(energies, labels[..., None], axis=-1)[..., 0]
    return jnp.mean(e_y + logsumexp(-energies, axis=-1))


def _finite_values(support, name: str) -> jax.Array:
    """The values of a finite integer support: ``integer_interval(a, b)`` or ``boolean``."""
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if base is constraints.boolean:
        return jnp.arange(2)
    if isinstance(base, constraints.integer_interval):
        try:
            low, high = int(base.lower_bound), int(base.upper_bound)
        except (TypeError, jax.errors.ConcretizationTypeError) as err:
            raise ValueError(
                f"site '{name}': the bounds of its integer_interval support must be concrete "
                "Python/NumPy integers to enumerate the labels."
            ) from err
        return jnp.arange(low, high + 1)
    raise ValueError(
        f"site '{name}': enumerating the labels needs a finite support, "
        "`constraints.integer_interval(0, K - 1)` or `constraints.boolean` (use "
        f"`numpyro_ebm.label_ebm`); got {support}."
    )


def enumerate_energies(ebm: Unnormalized, batch_shape: tuple, name: str = "y") -> jax.Array:
    r"""Energies of every label for every example: ``(*batch_shape, K)``.

    ``out[..., k] = E(values[k])`` where ``values`` enumerates the site's finite support; the
    energy is called once per label with a ``batch_shape`` array of that label (``vmap`` over
    labels), so any energy that scores a batch of labels works.

    :param ebm: an ``Unnormalized`` with ``event_shape=()`` and a finite integer support.
    :param tuple batch_shape: the shape of the labels the energy expects (the minibatch).
    :param str name: the site name, for error messages.
    """
    if tuple(ebm.event_shape) != ():
        raise ValueError(
            f"site '{name}': enumeration needs one label per example (event_shape ()), got "
            f"event_shape {tuple(ebm.event_shape)}; for label sequences use "
            "numpyro_ebm.models.crf.LinearChainCRF (forward algorithm)."
        )
    values = _finite_values(ebm.support, name)
    table = jax.vmap(lambda v: ebm.energy(jnp.full(tuple(batch_shape), v, jnp.int32)))(values)
    return jnp.moveaxis(table, 0, -1)


def label_energies(model, params, site: str, *args, **kwargs) -> jax.Array:
    r"""The table :math:`E(k, x_n)`, ``(*batch, K)``, of a model's label site under ``params``.

    Traces ``model(*args, **kwargs)`` (call it without labels, e.g. ``model(x_test)``: the site
    is then latent, which is fine) and enumerates the labels of ``site``. Predict by minimum
    energy: ``label_energies(...).argmin(-1)``; class probabilities are ``softmax(-table)``.
    """
    tr = trace_model(model, params, args, kwargs)
    if site not in tr or tr[site]["type"] != "sample":
        raise ValueError(f"`site`={site!r} is not a sample site of the model.")
    fn = tr[site]["fn"]
    ebm = unwrap_distribution(fn)
    if not isinstance(ebm, Unnormalized):
        raise ValueError(
            f"site {site!r} is a {type(ebm).__name__}, not a numpyro_ebm.Unnormalized label site."
        )
    return enumerate_energies(ebm, tuple(fn.batch_shape), site)


# --------------------------------------------------------------------------------------------
# the estimator


_NEGATIVES = ("exact", "sample")


class ConditionalMaximumLikelihood(EnergyLoss):
    r"""Exact maximum likelihood of a discrete conditional EBM :math:`p_\theta(y\mid x)` as a loss
    for ``numpyro.infer.SVI``.

    For every observed :class:`~numpyro_ebm.Unnormalized` site with a finite integer support
    (e.g. built by :func:`label_ebm`), the labels' energies
    :math:`E_\theta(k, x_n)` are enumerated (:func:`enumerate_energies`) and

    - ``negatives="exact"``: loss = :func:`conditional_nll`
      :math:`= \operatorname{mean}_n [E(y_n, x_n) + \log Z(x_n)]` (its gradient is the CD
      gradient with the negative phase in closed form);
    - ``negatives="sample"``: loss = :func:`contrastive_divergence_loss` of the data energies and
      of ``num_samples`` exact categorical draws :math:`y' \sim p_\theta(\cdot\mid x_n)` per
      example (stop-gradient), plus the optional penalty ``alpha``.

    Both have expected gradient :math:`\operatorname{mean}_n[\nabla E(y_n,x_n) -
    \mathbb E_{p(y'|x_n)}\nabla E(y',x_n)]`; ``"exact"`` has no sampling noise. Losses are means
    over the minibatch; several sites add. Continuous sites are left to the other estimators
    (see :class:`CombinedLoss`). Needs no guide: ``SVI(model, no_guide, optim, loss=...)``.

    :param str negatives: ``"exact"`` (default) or ``"sample"``.
    :param int num_samples: draws per example with ``negatives="sample"`` (default 1).
    :param float alpha: energy-magnitude penalty :math:`\alpha(\operatorname{mean} E(y,x)^2 +
        \operatorname{mean} E(y',x)^2)` (with ``"exact"``, the second mean is the expectation
        under :math:`p(y'|x)`); default 0.
    :param sites: names of the label sites to train; ``None``: all observed ``Unnormalized``
        sites with discrete support.

    **Example**

    .. code-block:: python

        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3),
                  loss=numpyro_ebm.ConditionalMaximumLikelihood())
        result = svi.run(jax.random.key(0), 2000, x_train, y_train)
        pred = numpyro_ebm.label_energies(model, result.params, "y", x_test).argmin(-1)
    """

    def __init__(
        self, negatives: str = "exact", num_samples: int = 1, alpha: float = 0.0, sites=None
    ):
        if negatives not in _NEGATIVES:
            raise ValueError(f"`negatives` must be one of {_NEGATIVES}, got {negatives!r}.")
        self.negatives = negatives
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.alpha = _check_alpha(alpha)
        self.sites = check_site_names(sites)

    def site_loss(self, rng_key, site: EBMSite):
        """The loss of one label site (a scalar)."""
        labels = site.data
        if not jnp.issubdtype(labels.dtype, jnp.integer) and labels.dtype != jnp.bool_:
            raise ValueError(
                f"site '{site.name}': observed labels must be integers, got dtype {labels.dtype}."
            )
        table = enumerate_energies(site.dist, labels.shape, site.name)  # (*batch, K)
        values = _finite_values(site.dist.support, site.name)
        index = (labels.astype(jnp.int32) - values[0])[..., None]
        e_data = jnp.take_along_axis(table, index, axis=-1)[..., 0]
        log_p = jax.nn.log_softmax(-table, axis=-1)
        if self.negatives == "exact":
            loss = jnp.mean(e_data + logsumexp(-table, axis=-1))
            if self.alpha:
                p = jax.lax.stop_gradient(jnp.exp(log_p))
                loss = loss + self.alpha * (
                    jnp.mean(e_data**2) + jnp.mean(jnp.sum(p * table**2, axis=-1))
                )
            return loss
        draws = jax.random.categorical(
            rng_key, jax.lax.stop_gradient(log_p), axis=-1, shape=(self.num_samples,) + labels.shape
        )
        e_neg = jnp.take_along_axis(
            jnp.broadcast_to(table, draws.shape + table.shape[-1:]), draws[..., None], axis=-1
        )[..., 0]
        return contrastive_divergence_loss(
            jnp.ravel(e_data), jnp.ravel(e_neg), self.alpha
        )

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, sample_key = jax.random.split(rng_key)  # same minibatch as the CD losses
        sites = select_sites(
            observed_ebm_sites(model, param_map, args, kwargs, model_key),
            self.sites,
            True,
            type(self).__name__,
        )
        sample_key = jax.random.fold_in(sample_key, _SAMPLE_SALT)
        loss = sum(
            self.site_loss(jax.random.fold_in(sample_key, i), site) for i, site in enumerate(sites)
        )
        return {"loss": loss, "mutable_state": None}


# --------------------------------------------------------------------------------------------
# several estimators on one model


class CombinedLoss(EnergyLoss):
    r"""A weighted sum of estimators on one model: :math:`L = \sum_i w_i L_i`.

    Each estimator trains the sites it selects (CD/PCD: continuous sites; score matching / NCE:
    see their docs; :class:`ConditionalMaximumLikelihood`: discrete ones), all with the same
    ``rng_key``, so the contrastive losses and the conditional likelihood see the same minibatch.
    Mutable states (PCD chains) are merged; give the combined loss the guide of the estimator that
    owns them (``pcd.guide`` / ``pcd.make_guide(model)``).

    This is JEM (Grathwohl et al. 2019): :math:`\log p(x, y) = \log p(x) + \log p(y\mid x)`,
    trained as ``CombinedLoss(pcd, ConditionalMaximumLikelihood(), weights=(1.0, 1.0))``.

    :param losses: the estimators (``EnergyLoss`` instances or any object with NumPyro's
        ``loss_with_mutable_state`` contract).
    :param weights: one float per loss (default all 1).
    """

    def __init__(self, *losses, weights: Sequence[float] | None = None):
        if not losses:
            raise ValueError("CombinedLoss needs at least one loss.")
        for loss in losses:
            if not callable(getattr(loss, "loss_with_mutable_state", None)):
                raise TypeError(
                    "CombinedLoss: every loss needs a `loss_with_mutable_state` method (an "
                    f"EnergyLoss such as PersistentContrastiveDivergence); got {loss!r}."
                )
        weights = (1.0,) * len(losses) if weights is None else tuple(float(w) for w in weights)
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` must have one entry per loss ({len(losses)}), got {len(weights)}."
            )
        self.losses = losses
        self.weights = weights

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        total, state = 0.0, {}
        for loss, weight in zip(self.losses, self.weights):
            out = loss.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
            total = total + weight * out["loss"]
            for name, value in (out.get("mutable_state") or {}).items():
                if name in state:
                    raise ValueError(
                        f"CombinedLoss: two losses keep mutable state under the same name {name!r}."
                    )
                state[name] = value
        return {"loss": total, "mutable_state": state or None}
