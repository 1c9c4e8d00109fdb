r"""Contrastive divergence (CD-k) and persistent CD as losses for NumPyro's ``SVI``.

Maximum likelihood for :math:`p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)` has the gradient
:math:`\nabla_\theta \mathrm{NLL} = \mathbb E_{\rm data}[\nabla_\theta E_\theta(x)]
- \mathbb E_{p_\theta}[\nabla_\theta E_\theta(x')]`, so the surrogate loss

.. math::

    L(\theta) = \operatorname{mean}_{x\in\text{batch}} E_\theta(x)
              - \operatorname{mean}_{x'} E_\theta(\operatorname{sg}(x'))
              + \alpha\,\big(\operatorname{mean} E_\theta(x)^2
                             + \operatorname{mean} E_\theta(x')^2\big)

with negatives :math:`x'` drawn by MCMC under the current (stop-gradient) parameters has the
maximum-likelihood gradient (plus the optional energy-magnitude penalty :math:`\alpha`). The two
estimators differ only in where the chains start:

- :class:`ContrastiveDivergence` (Hinton 2002): at the data minibatch, for ``num_steps`` steps.
- :class:`PersistentContrastiveDivergence` (Tieleman 2008): where they stopped at the previous
  update, optionally drawn from a replay buffer with a fraction restarted from noise
  (Du & Mordatch 2019). The chains live in NumPyro mutable state, declared by ``pcd.guide``.

The loss value is not a log-likelihood (it is a difference of energies); watch a held-out
likelihood or samples instead.

Chains are ``vmap``-ed over single positions of shape ``event_shape``, so the site's energy must
score one event on its own: an energy that closes over batch-shaped conditioning inputs
(``E(y | x)`` with a minibatch of ``x``) is not supported by these samplers. For a *discrete*
conditional site (a class label ``y`` given ``x``) the negative phase is exact by enumeration:
:class:`numpyro_ebm.ConditionalMaximumLikelihood`. CD and PCD train only the observed
``Unnormalized`` sites with continuous support (or those named by ``sites=``), so a joint model
(JEM) with a continuous ``x`` site and a discrete ``y`` site trains with
``CombinedLoss(PersistentContrastiveDivergence(...), ConditionalMaximumLikelihood())``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.primitives import mutable

from numpyro_ebm._validation import check_int
from numpyro_ebm.estimators.base import EBMSite, EnergyLoss, observed_ebm_sites
from numpyro_ebm.sampling.chains import build_algorithm, sample_chains

__all__ = [
    "ContrastiveDivergence",
    "PersistentContrastiveDivergence",
    "contrastive_divergence_loss",
    "select_sites",
]

#: name of the ``numpyro.primitives.mutable`` site that holds the persistent chains / replay buffer.
PCD_STATE = "pcd_chains"
#: key of the chain state when ``init_dist`` is one distribution (the model's only EBM site).
_ANY_SITE = "*"


# --------------------------------------------------------------------------------------------
# the loss, as a pure function


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


# --------------------------------------------------------------------------------------------
# shared machinery


def _check_kernel(kernel) -> None:
    """Fail at construction, not at the first training step, on a kernel that is no factory.

    ``None`` is accepted: the chains then use the site distribution's own exact sampler (its
    ``annealing_path``, e.g. an RBM's block Gibbs kernel), checked when the site is traced."""
    if kernel is not None:
        build_algorithm(kernel, lambda x: -0.5 * jnp.sum(x**2))


def _check_alpha(alpha) -> float:
    try:
        alpha = float(alpha)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`alpha` must be a float >= 0, got {alpha!r}.") from err
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"`alpha` must be a finite float >= 0, got {alpha!r}.")
    return alpha


def _events(site: EBMSite, value) -> jax.Array:
    """Flatten the batch dimensions of an observed value: ``(n, *event_shape)``."""
    event_shape = tuple(site.dist.event_shape)
    value = jnp.asarray(value)
    return jnp.reshape(value, (-1, *event_shape))


def _stale_negatives(sites: list[EBMSite], kernel):
    """What the chains of each site sample, under stop-gradient parameters: the log density
    ``x -> -E(x)`` for a kernel factory, or the distribution itself (whose own sampler runs)
    when ``kernel`` is ``None``."""
    if kernel is None:
        for s in sites:
            if getattr(s.dist, "annealing_path", None) is None:
                raise ValueError(
                    f"`kernel` is None, but the site {s.name!r} has no sampler of its own (no "
                    "`annealing_path`); pass a kernel factory, e.g. "
                    "`functools.partial(numpyro_ebm.ula, step_size=1e-2)`."
                )
        return [s.dist for s in sites]
    return [lambda x, d=s.dist: -d.energy(x) for s in sites]


def _report_nonfinite(estimator: str, bad_data, bad_neg, step_hint: str) -> None:
    """Warn (once per message, host side) that a training step was not finite."""

    def warn(bad_data, bad_neg):
        if bad_neg and not bad_data:
            cause = (
                "the negative samples diverged (the MCMC chains left to infinity): reduce the "
                f"kernel's step_size{step_hint}"
            )
        else:
            cause = (
                "the energy of the data is not finite: the parameters diverged; reduce the "
                "learning rate, set `alpha` (e.g. 0.1) to penalize large energies, or reduce the "
                "kernel's step_size"
            )
        warnings.warn(
            f"{estimator}: non-finite loss; {cause}. Train with `svi.run(..., "
            "stable_update=True)` or `optax.apply_if_finite(...)` to skip such updates, and "
            "check the result with `numpyro_ebm.check_finite_params(svi_result.params)`.",
            RuntimeWarning,
            stacklevel=2,
        )

    jax.lax.cond(
        bad_data | bad_neg,
        lambda a, b: jax.debug.callback(warn, a, b),
        lambda a, b: None,
        bad_data,
        bad_neg,
    )


def is_label_site(site: EBMSite) -> bool:
    """True for a *label* site: a discrete support and one value per example (``event_shape
    ()``), e.g. a class label from :func:`numpyro_ebm.label_ebm`. Its negative phase is exact by
    enumeration (:class:`~numpyro_ebm.ConditionalMaximumLikelihood`); every other site (continuous,
    or discrete with event dimensions such as an RBM's binary vector or Ising spins) is sampled
    by MCMC (CD/PCD)."""
    discrete = bool(getattr(site.dist.support, "is_discrete", False))
    return discrete and tuple(site.dist.event_shape) == ()


def check_site_names(sites) -> tuple[str, ...] | None:
    """Validate a ``sites=`` argument: ``None`` or a (non-empty) sequence of site names."""
    if sites is None:
        return None
    if isinstance(sites, str):
        sites = (sites,)
    sites = tuple(sites)
    if not sites or not all(isinstance(s, str) for s in sites):
        raise TypeError(f"`sites` must be None or a non-empty sequence of site names, got {sites!r}.")
    return sites


def select_sites(
    sites: list[EBMSite], names: tuple[str, ...] | None, discrete: bool, estimator: str
) -> list[EBMSite]:
    """The observed ``Unnormalized`` sites an estimator trains.

    With ``names=None``: every label site (``discrete=True``, see :func:`is_label_site`) or
    every other site (``discrete=False``), so that estimators for the two kinds can be combined
    on one model (:class:`numpyro_ebm.CombinedLoss`). With names: exactly those sites, checked to
    exist and to be of the right kind. Raises ``ValueError`` when nothing is left to train.
    """
    kind = "label sites (discrete support, event_shape ())" if discrete else (
        "continuous support or discrete vectors (non-label sites)"
    )
    if names is None:
        chosen = [s for s in sites if is_label_site(s) == discrete]
        if not chosen:
            raise ValueError(
                f"{estimator} trains observed Unnormalized sites with {kind}; the model's "
                f"observed Unnormalized sites {[s.name for s in sites]} have none."
            )
        return chosen
    by_name = {s.name: s for s in sites}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"{estimator}: `sites`={list(names)} names {missing}, which are not observed "
            f"Unnormalized sites of the model (those are {list(by_name)})."
        )
    wrong = [n for n in names if is_label_site(by_name[n]) != discrete]
    if wrong:
        raise ValueError(
            f"{estimator} trains {kind}, but `sites` names {wrong}, which are not; "
            + (
                "use ContrastiveDivergence / PersistentContrastiveDivergence for non-label sites."
                if discrete
                else "use ConditionalMaximumLikelihood for discrete (class label) sites."
            )
        )
    return [by_name[n] for n in names]


def _not_finite(x) -> jax.Array:
    return ~jnp.all(jnp.isfinite(x))


class _ContrastiveBase(EnergyLoss):
    def __init__(self, kernel: Callable, num_steps: int, alpha: float, sites=None):
        _check_kernel(kernel)
        self.kernel = kernel
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.alpha = _check_alpha(alpha)
        self.sites = check_site_names(sites)

    def _select(self, sites: list[EBMSite]) -> list[EBMSite]:
        return select_sites(sites, self.sites, False, type(self).__name__)

    def _sites(self, rng_key, param_map, model, args, kwargs):
        sites = self._select(observed_ebm_sites(model, param_map, args, kwargs, rng_key))
        frozen = self._select(
            observed_ebm_sites(model, jax.lax.stop_gradient(param_map), args, kwargs, rng_key)
        )
        return sites, frozen

    def _site_loss(self, site: EBMSite, negatives):
        energy_data = site.dist.energy(_events(site, site.data))
        energy_neg = site.dist.energy(jax.lax.stop_gradient(negatives))
        loss = contrastive_divergence_loss(energy_data, energy_neg, self.alpha)
        return loss, _not_finite(energy_data), _not_finite(energy_neg)

    def _finish(self, losses, bad_data, bad_neg):
        loss = sum(losses)
        _report_nonfinite(
            type(self).__name__,
            jnp.any(jnp.stack(bad_data)),
            jnp.any(jnp.stack(bad_neg)),
            f" (num_steps={self.num_steps})",
        )
        return loss


# --------------------------------------------------------------------------------------------
# CD-k


class ContrastiveDivergence(_ContrastiveBase):
    r"""Contrastive divergence CD-k (Hinton 2002) as a loss for ``numpyro.infer.SVI``.

    Each step, one chain starts at every example of the minibatch and runs ``num_steps``
    transitions of ``kernel`` targeting :math:`p_\theta \propto e^{-E_\theta}` under the current
    parameters (no gradient flows through the sampler); the loss is
    :func:`contrastive_divergence_loss` of the data and the chains' end points, summed over the
    model's observed :class:`~numpyro_ebm.Unnormalized` sites. Other observed sites are
    conditioning inputs. Needs no guide: pass :func:`numpyro_ebm.no_guide` (``SVI`` cannot take
    ``guide=None``).

    CD-k is cheap and stable but biased: chains that start at the data never visit spurious modes
    far from it. For density estimation prefer :class:`PersistentContrastiveDivergence`.

    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(blackjax.mala, step_size=1e-2)`` or
        ``functools.partial(numpyro_ebm.ula, step_size=1e-2)``; or ``None`` for the site's own
        exact sampler (a classical model's block Gibbs kernel, from ``model.distribution``).
    :param int num_steps: ``k``, MCMC transitions per update (``>= 1``).
    :param float alpha: weight of the energy-magnitude penalty
        :math:`\alpha(\operatorname{mean}E(x)^2 + \operatorname{mean}E(x')^2)`; ``0.1`` helps
        neural energies, ``0`` (default) leaves the maximum-likelihood fixed point unbiased.
    :param sites: names of the observed ``Unnormalized`` sites to train; ``None`` (default): all
        those with continuous support (discrete ones are left to
        :class:`~numpyro_ebm.ConditionalMaximumLikelihood`).

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

    def __init__(self, kernel: Callable, num_steps: int = 1, alpha: float = 0.0, sites=None):
        super().__init__(kernel, num_steps, alpha, sites)

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, chain_key = jax.random.split(rng_key)
        sites, frozen = self._sites(model_key, param_map, model, args, kwargs)
        losses, bad_data, bad_neg = [], [], []
        for i, (site, logdensity_fn) in enumerate(zip(sites, _stale_negatives(frozen, self.kernel))):
            start = jax.lax.stop_gradient(_events(site, site.data))
            negatives = sample_chains(
                jax.random.fold_in(chain_key, i), logdensity_fn, self.kernel, start, self.num_steps
            ).positions
            loss, bd, bn = self._site_loss(site, negatives)
            losses.append(loss)
            bad_data.append(bd)
            bad_neg.append(bn)
        return {"loss": self._finish(losses, bad_data, bad_neg), "mutable_state": None}


# --------------------------------------------------------------------------------------------
# persistent CD


def _check_init_dist(init_dist):
    if init_dist is None:
        return None
    if isinstance(init_dist, Mapping):
        for name, d in init_dist.items():
            if not isinstance(d, dist.Distribution):
                raise TypeError(
                    f"`init_dist`[{name!r}] must be a NumPyro distribution over the site's event, "
                    f"got {d!r}."
                )
        return dict(init_dist)
    if not isinstance(init_dist, dist.Distribution):
        raise TypeError(
            "`init_dist` must be a NumPyro distribution over the EBM site's event (e.g. "
            "`dist.Uniform(-4, 4).expand([2]).to_event(1)`), a dict {site name: distribution}, "
            f"or None; got {init_dist!r}."
        )
    return {_ANY_SITE: init_dist}


def _draw(rng_key, d: dist.Distribution, n: int, name: str, event_shape=None):
    """``n`` draws ``(n, *event_shape)`` of ``d``, checked against the site's event shape."""
    x = d.sample(rng_key, (n,))
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"`init_dist`{'' if name == _ANY_SITE else f'[{name!r}]'} draws shape "
            f"{tuple(x.shape[1:])}, but the EBM site's event shape is {tuple(event_shape)}; "
            "use e.g. `dist.Uniform(-4, 4).expand(event_shape).to_event(len(event_shape))`."
        )
    return x


class PersistentContrastiveDivergence(_ContrastiveBase):
    r"""Persistent contrastive divergence (Tieleman 2008), with an optional replay buffer
    (Du & Mordatch 2019), as a loss for ``numpyro.infer.SVI``.

    The negatives are ``num_chains`` MCMC chains that persist across parameter updates. Each step:

    1. take ``num_chains`` positions: all the chains, or, when ``buffer_size`` is set, a random
       draw without replacement from a buffer of ``buffer_size`` earlier samples;
    2. restart a fraction ``reinit_prob`` of them from ``init_dist``;
    3. run ``num_steps`` transitions of ``kernel`` under the current, stop-gradient parameters;
    4. compute :func:`contrastive_divergence_loss` of the minibatch and the new positions;
    5. write the positions back; chains that diverged (non-finite) are written back as fresh
       draws from ``init_dist`` instead, so the state never holds NaN (the step's loss is still
       non-finite, which ``stable_update=True`` skips).

    The chains live in NumPyro mutable state (the ``numpyro.primitives.mutable`` site
    ``"pcd_chains"``) that the estimator's guide declares, so they survive between ``svi.update``
    calls, run inside the compiled ``svi.run`` loop and are saved with the ``SVIState``::

        box = dist.Uniform(-4, 4).expand([2]).to_event(1)
        pcd = PersistentContrastiveDivergence(kernel, init_dist=box)
        svi = SVI(model, pcd.guide, optim, loss=pcd)                 # init_dist given
        svi = SVI(model, pcd.make_guide(model), optim, loss=pcd)     # works without init_dist

    ``pcd.guide`` has no sample sites: it only holds the chains. ``pcd.make_guide(model)`` traces
    the model once at ``SVI.init`` to read the EBM site(s)' event shape and data; without
    ``init_dist`` it then starts and restarts chains from a diagonal Gaussian matched to the mean
    and standard deviation of the data it saw there.

    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(numpyro_ebm.ula, step_size=3e-3)`` or
        ``functools.partial(blackjax.mala, step_size=1e-2)``.
    :param int num_steps: MCMC transitions per update (``>= 1``; default 20).
    :param int num_chains: negatives per update (``>= 1``; default 256).
    :param int buffer_size: size of the replay buffer (``>= num_chains``); ``None`` (default) keeps
        exactly ``num_chains`` persistent chains.
    :param float reinit_prob: probability that a chain restarts from ``init_dist`` at a step, in
        ``[0, 1]`` (default 0.05).
    :param init_dist: where chains start and restart: a NumPyro distribution over the site's event
        (e.g. ``dist.Uniform(-4, 4).expand([2]).to_event(1)``), a dict ``{site name: distribution}``
        for models with several EBM sites, or ``None`` (then use ``pcd.make_guide(model)``).
    :param float alpha: energy-magnitude penalty weight (default 0). For neural energies ``0.1``
        is the measured difference between a usable and an unusable model; keep ``0`` for exact
        (e.g. Gaussian) energies, whose maximum-likelihood fixed point it would bias.
    :param sites: names of the observed ``Unnormalized`` sites to train; ``None`` (default): all
        those with continuous support.

    Measured recipe (MLP 2→128→128→1, eight Gaussians, 2-core CPU, 3000 Adam(1e-3) steps):
    ``ula(step_size=3e-3)``, ``num_steps=20``, ``num_chains=256``, ``buffer_size=8192``,
    ``reinit_prob=0.05``, uniform ``init_dist``, ``alpha=0.1``: 0.19 nats from the true entropy.
    """

    def __init__(
        self,
        kernel: Callable,
        num_steps: int = 20,
        num_chains: int = 256,
        buffer_size: int | None = None,
        reinit_prob: float = 0.05,
        init_dist=None,
        alpha: float = 0.0,
        sites=None,
    ):
        super().__init__(kernel, num_steps, alpha, sites)
        self.num_chains = check_int("num_chains", num_chains, 1)
        if buffer_size is not None:
            buffer_size = check_int("buffer_size", buffer_size, 1)
            if buffer_size < self.num_chains:
                raise ValueError(
                    f"`buffer_size` must be >= `num_chains` = {self.num_chains} (each step draws "
                    f"num_chains positions from the buffer), got {buffer_size}."
                )
        self.buffer_size = buffer_size
        try:
            reinit_prob = float(reinit_prob)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`reinit_prob` must be a float in [0, 1], got {reinit_prob!r}."
            ) from err
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"`reinit_prob` must be in [0, 1], got {reinit_prob!r}.")
        self.reinit_prob = reinit_prob
        self.init_dist = _check_init_dist(init_dist)

    @property
    def num_positions(self) -> int:
        """Rows of the chain state: ``buffer_size`` when set, else ``num_chains``."""
        return self.num_chains if self.buffer_size is None else self.buffer_size

    # -- the guide that owns the chains ------------------------------------------------------

    def _initial_state(self, rng_key, sites: list[EBMSite] | None):
        if sites is None:  # model unknown: init_dist alone fixes the event shape
            if self.init_dist is None:
                raise ValueError(
                    "PersistentContrastiveDivergence: `pcd.guide` needs `init_dist` (a NumPyro "
                    "distribution over the EBM site's event, e.g. "
                    "`dist.Uniform(-4, 4).expand([2]).to_event(1)`) to create the chains; or use "
                    "`pcd.make_guide(model)`, which reads the event shape from the model."
                )
            return {
                name: {
                    "positions": _draw(jax.random.fold_in(rng_key, i), d, self.num_positions, name)
                }
                for i, (name, d) in enumerate(sorted(self.init_dist.items()))
            }
        state = {}
        for i, site in enumerate(sites):
            key = jax.random.fold_in(rng_key, i)
            event_shape = tuple(site.dist.event_shape)
            d = self._site_init_dist(site.name, len(sites))
            if d is None:
                data = _events(site, site.data)
                loc = jnp.mean(data, 0)
                scale = jnp.std(data, 0) + 1e-3 * (jnp.std(data) + 1.0)
                noise = jax.random.normal(key, (self.num_positions, *event_shape), loc.dtype)
                state[site.name] = {"positions": loc + scale * noise, "loc": loc, "scale": scale}
            else:
                state[site.name] = {
                    "positions": _draw(key, d, self.num_positions, site.name, event_shape)
                }
        return state

    def _site_init_dist(self, name: str, num_sites: int):
        if self.init_dist is None:
            return None
        if name in self.init_dist:
            return self.init_dist[name]
        if _ANY_SITE in self.init_dist and num_sites == 1:
            return self.init_dist[_ANY_SITE]
        raise ValueError(
            f"`init_dist` has no entry for the EBM site {name!r}; with several observed "
            "Unnormalized sites pass a dict {site name: distribution}."
        )

    def guide(self, *args, **kwargs):
        """A NumPyro guide with no sample sites that declares the chains as mutable state.

        Use ``SVI(model, pcd.guide, optim, loss=pcd)``; it needs ``init_dist``.
        """
        key = numpyro.prng_key()
        key = jax.random.key(0) if key is None else key
        mutable(PCD_STATE, self._initial_state(key, None))

    def make_guide(self, model) -> Callable:
        """A guide for ``model``: like :meth:`guide`, but it reads the EBM site(s)' event shape and
        data from one trace of ``model`` at ``SVI.init``, so ``init_dist`` may be ``None``.

        Use ``SVI(model, pcd.make_guide(model), optim, loss=pcd)``.
        """
        if not callable(model):
            raise TypeError(f"`model` must be a NumPyro model (a callable), got {model!r}.")

        def guide(*args, **kwargs):
            key = numpyro.prng_key()
            key = jax.random.key(0) if key is None else key
            model_key, chain_key = jax.random.split(key)
            with handlers.block():
                sites = self._select(observed_ebm_sites(model, None, args, kwargs, model_key))
            mutable(PCD_STATE, self._initial_state(chain_key, sites))

        return guide

    # -- the loss -----------------------------------------------------------------------------

    def _chain_state(self, param_map, sites):
        if PCD_STATE not in param_map:
            raise ValueError(
                "PersistentContrastiveDivergence keeps its chains in the guide's mutable state, "
                "which SVI did not pass: use `SVI(model, pcd.guide, optim, loss=pcd)` or "
                "`SVI(model, pcd.make_guide(model), optim, loss=pcd)`. (`svi.evaluate` never "
                "passes mutable state: it cannot evaluate a PCD loss.)"
            )
        state = param_map[PCD_STATE]
        if set(state) == {_ANY_SITE}:
            if len(sites) != 1:
                raise ValueError(
                    f"the model has {len(sites)} observed Unnormalized sites "
                    f"{[s.name for s in sites]}, but `init_dist` is one distribution: pass a dict "
                    "{site name: distribution}, or use `pcd.make_guide(model)`."
                )
            return {sites[0].name: _ANY_SITE}
        missing = [s.name for s in sites if s.name not in state]
        if missing:
            raise ValueError(
                f"the PCD chains hold the sites {sorted(state)} but the model's observed "
                f"Unnormalized sites are {[s.name for s in sites]}: build the guide for this model."
            )
        return {s.name: s.name for s in sites}

    def _step_site(self, rng_key, site_state, init_dist, logdensity_fn, event_shape):
        """One PCD update of one site's chains; returns ``(negatives, new site state)``."""
        positions = site_state["positions"]
        pick_key, reinit_key, fresh_key, chain_key = jax.random.split(rng_key, 4)
        if self.buffer_size is None:
            idx = None
            start = positions
        else:
            idx = jax.random.choice(pick_key, self.buffer_size, (self.num_chains,), replace=False)
            start = positions[idx]
        event_axes = tuple(range(1, start.ndim))
        restart = ~jnp.all(jnp.isfinite(start), axis=event_axes)
        if self.reinit_prob > 0:
            restart = restart | jax.random.bernoulli(
                reinit_key, self.reinit_prob, (self.num_chains,)
            )
        if init_dist is None:  # the data-matched Gaussian of make_guide
            noise = jax.random.normal(fresh_key, start.shape, start.dtype)
            fresh = site_state["loc"] + site_state["scale"] * noise
        else:
            fresh = init_dist.sample(fresh_key, (self.num_chains,))
        mask = jnp.reshape(restart, (-1,) + (1,) * len(event_axes))
        start = jnp.where(mask, fresh.astype(start.dtype), start)
        negatives = sample_chains(chain_key, logdensity_fn, self.kernel, start, self.num_steps)
        negatives = jax.lax.stop_gradient(negatives.positions)
        # diverged chains restart rather than persist: the state never holds NaN/inf
        finite = jnp.all(jnp.isfinite(negatives), axis=event_axes)
        finite = jnp.reshape(finite, (-1,) + (1,) * len(event_axes))
        kept = jnp.where(finite, negatives, fresh.astype(negatives.dtype))
        new_positions = kept if idx is None else positions.at[idx].set(kept)
        return negatives, {**site_state, "positions": new_positions}

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, chain_key = jax.random.split(rng_key)
        sites, frozen = self._sites(model_key, param_map, model, args, kwargs)
        keys = self._chain_state(param_map, sites)
        state = jax.lax.stop_gradient(param_map[PCD_STATE])
        new_state = dict(state)
        losses, bad_data, bad_neg = [], [], []
        for i, (site, logdensity_fn) in enumerate(zip(sites, _stale_negatives(frozen, self.kernel))):
            key = keys[site.name]
            negatives, new_state[key] = self._step_site(
                jax.random.fold_in(chain_key, i),
                state[key],
                self._site_init_dist(site.name, len(sites)),
                logdensity_fn,
                tuple(site.dist.event_shape),
            )
            loss, bd, bn = self._site_loss(site, negatives)
            losses.append(loss)
            bad_data.append(bd)
            bad_neg.append(bn)
        loss = self._finish(losses, bad_data, bad_neg)
        return {"loss": loss, "mutable_state": {PCD_STATE: new_state}}
