r"""Conditional energies over a class label, :math:`E_\theta(y, x)` with :math:`y \in \{0..K-1\}`,
trained through NumPyro's ``SVI`` (:class:`ConditionalMaximumLikelihood`), and the building blocks
to write one (:func:`label_ebm`), predict with it (:func:`label_energies`) or join it to an EBM
over ``x`` (:func:`joint_energy`).

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

Prediction is by minimum energy:
``label_energies(model, params, "y", model_args=(x_test,)).argmin(-1)``.
(``dist.Categorical(logits=-net(xb))`` with ``Trace_ELBO`` is the same model and gradient; the
``Unnormalized`` form is the one that composes with the other EBM estimators, e.g. in JEM.)

**Joint EBM (JEM, Grathwohl et al. 2019).** The same logits define an EBM over ``x``,
:math:`E_\theta(x) = -\log\sum_y e^{-f_\theta(x)_y}` (:func:`joint_energy`). Add it as a second
observed site ``numpyro.sample("x", Unnormalized(lambda v: joint_energy(net(v)), (64,)), obs=xb)``
and train with ``CombinedLoss(PersistentContrastiveDivergence(...), ConditionalMaximumLikelihood())``
(:mod:`numpyro_ebm.estimators.combined`):
PCD (SGLD chains with a replay buffer, reinitialization, small steps, the energy penalty
``alpha``) trains the continuous ``x`` site, the exact conditional likelihood the discrete ``y``
site, each estimator taking only the sites of its kind.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import trace_model, unwrap_distribution
from numpyro_ebm.estimators.base import EnergyEstimator
from numpyro_ebm.estimators.contrastive import check_alpha, contrastive_divergence_loss
from numpyro_ebm.estimators.sites import EBMSite

__all__ = [
    "ConditionalMaximumLikelihood",
    "conditional_nll",
    "enumerate_energies",
    "joint_energy",
    "label_ebm",
    "label_energies",
]

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

    (``optax.softmax_cross_entropy_with_integer_labels`` of the logits ``-energies``).

    :param energies: ``(N, K)`` (or ``(*batch, K)``).
    :param labels: integer labels ``(N,)`` (or ``(*batch,)``).
    :return: scalar.
    """
    labels = jnp.asarray(labels).astype(jnp.int32)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(-jnp.asarray(energies), labels))


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


def label_energies(model, params, site: str, model_args=(), model_kwargs=None) -> jax.Array:
    r"""The table :math:`E(k, x_n)`, ``(*batch, K)``, of a model's label site under ``params``.

    Traces ``model(*model_args, **model_kwargs)`` (call it without labels, e.g.
    ``model_args=(x_test,)``: the site is then latent, which is fine) and enumerates the labels of
    ``site``. Predict by minimum energy: ``label_energies(...).argmin(-1)``; class probabilities
    are ``softmax(-table)``.

    :param model: a NumPyro model with a label site (e.g. built by :func:`label_ebm`).
    :param params: ``{param name: value}``, e.g. ``svi_result.params``.
    :param str site: the label site's name.
    :param tuple model_args: positional arguments of ``model``.
    :param dict model_kwargs: keyword arguments of ``model``.

    **Example**

    .. code-block:: python

        table = numpyro_ebm.label_energies(model, result.params, "y", model_args=(x_test,))
        accuracy = (table.argmin(-1) == y_test).mean()
    """
    if not isinstance(model_args, (tuple, list)):
        raise TypeError(
            f"`model_args` must be a tuple of the model's positional arguments, got "
            f"{type(model_args).__name__}; e.g. `model_args=(x_test,)`."
        )
    tr = trace_model(model, params, tuple(model_args), model_kwargs)
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


class ConditionalMaximumLikelihood(EnergyEstimator):
    r"""Exact maximum likelihood of a discrete conditional EBM :math:`p_\theta(y\mid x)` as a loss
    for ``numpyro.infer.SVI``.

    For every trained label site (an observed :class:`~numpyro_ebm.Unnormalized` site with a
    finite integer support and ``event_shape ()``, e.g. built by :func:`label_ebm`), the labels'
    energies :math:`E_\theta(k, x_n)` are enumerated (:func:`enumerate_energies`) and

    - ``negatives="exact"``: loss = :func:`conditional_nll`
      :math:`= \operatorname{mean}_n [E(y_n, x_n) + \log Z(x_n)]` (its gradient is the CD
      gradient with the negative phase in closed form);
    - ``negatives="sample"``: loss = :func:`~numpyro_ebm.contrastive_divergence_loss` of the data
      energies and of ``num_samples`` exact categorical draws :math:`y' \sim
      p_\theta(\cdot\mid x_n)` per example (stop-gradient), plus the optional penalty ``alpha``.

    Both have expected gradient :math:`\operatorname{mean}_n[\nabla E(y_n,x_n) -
    \mathbb E_{p(y'|x_n)}\nabla E(y',x_n)]`; ``"exact"`` has no sampling noise. Losses are means
    over the minibatch; several sites add. Non-label sites are left to the other estimators
    (see :class:`~numpyro_ebm.CombinedLoss`). Needs no guide: ``SVI(model, no_guide, optim,
    loss=...)``.

    :param str negatives: ``"exact"`` (default) or ``"sample"``.
    :param int num_samples: draws per example with ``negatives="sample"`` (default 1).
    :param float alpha: energy-magnitude penalty :math:`\alpha(\operatorname{mean} E(y,x)^2 +
        \operatorname{mean} E(y',x)^2)` (with ``"exact"``, the second mean is the expectation
        under :math:`p(y'|x)`); default 0.
    :param sites: names of the label sites to train; ``None``: every label site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3),
                  loss=numpyro_ebm.ConditionalMaximumLikelihood())
        result = svi.run(jax.random.key(0), 2000, x_train, y_train)
        table = numpyro_ebm.label_energies(model, result.params, "y", model_args=(x_test,))
        pred = table.argmin(-1)
    """

    site_kind = "label"

    def __init__(
        self, negatives: str = "exact", num_samples: int = 1, alpha: float = 0.0, sites=None,
        *, report_nonfinite: bool | str = True,
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        if negatives not in _NEGATIVES:
            raise ValueError(f"`negatives` must be one of {_NEGATIVES}, got {negatives!r}.")
        self.negatives = negatives
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.alpha = check_alpha(alpha)

    def site_loss(self, site: EBMSite, rng_key, state=None):
        """The loss of one label site (a scalar)."""
        labels = site.data
        if not jnp.issubdtype(labels.dtype, jnp.integer) and labels.dtype != jnp.bool_:
            raise ValueError(
                f"site '{site.name}': observed labels must be integers, got dtype {labels.dtype}."
            )
        table = enumerate_energies(site.dist, labels.shape, site.name)  # (*batch, K)
        values = _finite_values(site.dist.support, site.name)
        index = labels.astype(jnp.int32) - values[0]
        e_data = jnp.take_along_axis(table, index[..., None], axis=-1)[..., 0]
        log_p = jax.nn.log_softmax(-table, axis=-1)
        if self.negatives == "exact":
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(-table, index))
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
        return contrastive_divergence_loss(jnp.ravel(e_data), jnp.ravel(e_neg), self.alpha)
