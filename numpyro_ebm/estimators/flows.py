r"""Normalizing-flow guides: a NumPyro guide whose one site is a flowjax flow.

Flow contrastive estimation (:class:`~numpyro_ebm.FlowContrastiveEstimation`) needs a noise
distribution that is fast both ways: exact sampling *and* exact ``log_prob`` at data points, and
both reparametrized. Coupling flows (RealNVP-style affine or rational-quadratic spline coupling
layers, from `flowjax <https://github.com/danielward27/flowjax>`_) invert in one pass, unlike
NumPyro's ``InverseAutoregressiveTransform`` (sequential inverse, ~D passes) or
``BlockNeuralAutoregressiveTransform`` (no inverse).

The flow is

.. math::

    x = \mathrm{loc} + \mathrm{scale} \odot f_\phi(z), \qquad z \sim \mathcal N(0, I_D),

with :math:`f_\phi` a stack of coupling layers and random permutations, and ``loc``, ``scale``
(trainable, initialized from the arguments, e.g. the data mean and standard deviation) putting
the flow's work in a standardized space, where a spline's ``[-interval, interval]`` makes sense.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax.nn as jnn
import jax.numpy as jnp
from numpyro.distributions import TransformedDistribution

from numpyro_ebm._validation import check_int, check_positive, check_rng_key
from numpyro_ebm.energy import unwrap_distribution
from numpyro_ebm.estimators.base import check_model_inputs

__all__ = [
    "FlowGuide",
    "flow_guide",
    "fce_optimizer",
    "guide_distribution",
    "sample_and_log_prob",
]

_FLOWS = ("coupling-spline", "coupling-affine")


def sample_and_log_prob(q, rng_key, sample_shape):
    """Reparametrized draws from ``q`` and their log density, sharing the flow's passes."""
    if isinstance(q, TransformedDistribution):
        y, intermediates = q.sample_with_intermediates(rng_key, sample_shape)
        return y, q.log_prob(y, intermediates)
    y = q.rsample(rng_key, sample_shape)
    return y, q.log_prob(y)


def guide_distribution(guide_trace, site, estimator: str, hint: str):
    """The distribution a guide draws the EBM site ``site`` from, checked: a sample site of the
    same name, the EBM's event shape, reparametrized sampling (else ``ValueError``/``TypeError``
    naming ``estimator``; ``hint`` says how to build a guide, with ``{site!r}`` for the name)."""
    if site.name not in guide_trace or guide_trace[site.name]["type"] != "sample":
        sample_sites = [k for k, v in guide_trace.items() if v["type"] == "sample"]
        raise ValueError(
            f"{estimator}: the guide has no sample site named {site.name!r} (the EBM site); its "
            f"sample sites are {sample_sites}. The guide must draw the same site "
            + hint.format(site=site.name)
            + "."
        )
    q = unwrap_distribution(guide_trace[site.name]["fn"])
    if tuple(q.event_shape) != tuple(site.dist.event_shape):
        raise ValueError(
            f"{estimator}: the guide's site {site.name!r} has event shape "
            f"{q.event_shape}, the EBM's has {site.dist.event_shape}; they must match."
        )
    if not q.has_rsample:
        raise TypeError(
            f"{estimator}: the guide's distribution at {site.name!r} ({type(q).__name__}) cannot "
            "be sampled with the reparametrization trick; the guide needs gradients through its "
            "samples."
        )
    return q


class FlowGuide:
    """A NumPyro guide with one site ``site_name`` drawn from a flowjax flow.

    Call it like any guide: it ignores the model's arguments except to check them (NaN or inf
    in an array argument raise a ``ValueError`` at ``SVI.init``, as
    :func:`~numpyro_ebm.no_guide`). Its parameters live in one ``numpyro.param`` site,
    ``param_name`` (a pytree: the flow's arrays), registered with
    ``flowjax.experimental.numpyro.register_params``.

    :ivar site_name: the guide's sample site (the EBM site's name).
    :ivar param_name: the ``numpyro.param`` site that holds the flow's arrays.
    :ivar init_flow: the flowjax distribution at initialization (shape ``(event_dim,)``).
    """

    def __init__(self, site_name: str, param_name: str, init_flow):
        self.site_name = site_name
        self.param_name = param_name
        self.init_flow = init_flow
        self.param_names = (param_name,)

    def __call__(self, *args, **kwargs):
        from flowjax.experimental.numpyro import register_params, sample

        # the model's data passes through the guide at SVI.init: NaN or inf raise there
        check_model_inputs(args, kwargs)
        flow = register_params(self.param_name, self.init_flow)
        return sample(self.site_name, flow)

    def flow(self, params):
        """The trained flow as a flowjax distribution, from ``svi.get_params(state)``.

        It has ``sample(key, sample_shape)``, ``log_prob(x)`` (shape ``x.shape[:-1]``) and
        ``sample_and_log_prob``; e.g. the flow's test log-likelihood is
        ``guide.flow(params).log_prob(x_test).mean()``.
        """
        import equinox as eqx
        import paramax

        if self.param_name not in params:
            raise ValueError(
                f"`params` has no entry {self.param_name!r} (the flow's parameters); pass "
                f"`svi.get_params(state)` of an SVI run with this guide. Got keys {list(params)}."
            )
        _, static = eqx.partition(
            self.init_flow,
            eqx.is_inexact_array,
            is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable),
        )
        return paramax.unwrap(eqx.combine(params[self.param_name], static))

    def log_prob(self, params, x):
        """``log q(x)`` of the trained flow, shape ``x.shape[:-1]``."""
        return self.flow(params).log_prob(x)

    def __repr__(self):
        return f"FlowGuide(site_name={self.site_name!r}, param_name={self.param_name!r})"


def flow_guide(
    site_name: str,
    event_dim: int,
    rng_key=None,
    flow: str = "coupling-spline",
    *,
    flow_layers: int = 6,
    nn_width: int = 64,
    nn_depth: int = 1,
    nn_activation: Callable = jnn.relu,
    knots: int = 8,
    interval: float = 4.0,
    loc=0.0,
    scale=1.0,
    param_name: str | None = None,
) -> FlowGuide:
    r"""Build a normalizing-flow guide over the site ``site_name`` (a point in ``R^event_dim``).

    :param str site_name: name of the model's observed ``Unnormalized`` site the flow models.
    :param int event_dim: dimension ``D >= 2`` of one draw (the site's ``event_shape == (D,)``).
    :param rng_key: a JAX key (``jax.random.key(0)``) for the flow's initialization; required.
    :param str flow: ``"coupling-spline"`` (rational-quadratic spline coupling, Durkan et al.
        2019: flexible, multimodal) or ``"coupling-affine"`` (RealNVP affine coupling: cheaper,
        exact for Gaussians, weaker on multimodal data).
    :param int flow_layers: number of coupling layers (each followed by a random permutation).
    :param int nn_width: hidden width of each conditioner MLP.
    :param int nn_depth: hidden layers of each conditioner MLP.
    :param nn_activation: conditioner activation.
    :param int knots: spline knots (``"coupling-spline"`` only).
    :param float interval: the spline acts on ``[-interval, interval]`` of the standardized space
        (identity outside).
    :param loc: initial location of the output affine layer (scalar or ``(D,)``, e.g. data mean).
    :param scale: initial scale of the output affine layer (scalar or ``(D,)``, e.g. data std).
    :param str param_name: name of the ``numpyro.param`` site (default ``f"{site_name}_flow"``).
    :return: a :class:`FlowGuide`.

    **Example**

    .. code-block:: python

        guide = numpyro_ebm.flow_guide("x", 2, jax.random.key(0), loc=data.mean(0),
                                       scale=data.std(0))
        svi = SVI(model, guide, numpyro_ebm.fce_optimizer(guide, num_updates=5000),
                  loss=numpyro_ebm.FlowContrastiveEstimation(flow_mle_weight=0.1))
    """
    from flowjax.bijections import Affine, RationalQuadraticSpline
    from flowjax.distributions import StandardNormal, Transformed
    from flowjax.flows import coupling_flow

    if not isinstance(site_name, str):
        raise TypeError(f"`site_name` must be a site name (str), got {site_name!r}.")
    event_dim = check_int("event_dim", event_dim, minimum=2)
    if flow not in _FLOWS:
        raise ValueError(f"`flow` must be one of {_FLOWS}, got {flow!r}.")
    check_int("flow_layers", flow_layers, minimum=1)
    check_int("nn_width", nn_width, minimum=1)
    check_int("nn_depth", nn_depth, minimum=0)
    check_int("knots", knots, minimum=1)
    check_positive("interval", interval)
    check_positive("scale", scale)
    rng_key = check_rng_key(rng_key)
    transformer = (
        RationalQuadraticSpline(knots=knots, interval=interval)
        if flow == "coupling-spline"
        else None  # flowjax's default: affine with a minimum scale
    )
    base = coupling_flow(
        rng_key,
        base_dist=StandardNormal((event_dim,)),
        transformer=transformer,
        flow_layers=flow_layers,
        nn_width=nn_width,
        nn_depth=nn_depth,
        nn_activation=nn_activation,
    )
    loc = jnp.broadcast_to(jnp.asarray(loc, jnp.float32), (event_dim,))
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (event_dim,))
    init_flow = Transformed(base, Affine(loc, scale))
    return FlowGuide(site_name, param_name or f"{site_name}_flow", init_flow)


def fce_optimizer(
    flow_params,
    ebm_lr: float = 1e-3,
    flow_lr: float = 3e-4,
    num_updates: int | None = None,
    decay_to: float = 0.05,
    clip_norm: float | None = None,
):
    r"""Adam with one learning rate for the EBM and a lower one for the flow, for FCE.

    FCE is a two-player game; it is stable when the flow (the player that ascends) moves slower
    than the EBM, hence ``flow_lr < ebm_lr`` by default (see docs/estimators.md for measured
    rates).

    :param flow_params: the flow's ``numpyro.param`` names: a :class:`FlowGuide` (its
        ``param_names``), or an iterable of names. Every other parameter is the EBM's.
    :param float ebm_lr: Adam learning rate of the EBM (energy network and ``log_Z``).
    :param float flow_lr: Adam learning rate of the flow.
    :param int num_updates: when given, both rates follow a cosine decay to ``decay_to`` times
        their initial value over ``num_updates`` optimizer updates (SVI steps).
    :param float decay_to: final fraction of the learning rates under the cosine decay.
    :param float clip_norm: optional global gradient-norm clipping (per group).
    :return: a NumPyro optimizer (``numpyro.optim.optax_to_numpyro`` of an
        ``optax.multi_transform``).
    """
    import optax
    from numpyro.optim import optax_to_numpyro

    names = getattr(flow_params, "param_names", flow_params)
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(
            f"`flow_params` must be a FlowGuide or an iterable of param names, got {flow_params!r}."
        )
    names = frozenset(names)
    check_positive("ebm_lr", ebm_lr)
    check_positive("flow_lr", flow_lr)
    check_positive("decay_to", decay_to)
    if num_updates is not None:
        check_int("num_updates", num_updates, minimum=1)

    def adam(lr):
        if num_updates is not None:
            lr = optax.cosine_decay_schedule(lr, num_updates, alpha=decay_to)
        tx = optax.adam(lr)
        return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if clip_norm else tx

    def labels(params):
        return {k: "flow" if k in names else "ebm" for k in params}

    return optax_to_numpyro(
        optax.multi_transform({"ebm": adam(ebm_lr), "flow": adam(flow_lr)}, labels)
    )
