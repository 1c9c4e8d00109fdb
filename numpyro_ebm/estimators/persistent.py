# Slightly over ~400 lines on purpose: one estimator whose three ways to reach every mode (the
# persisted PT state, annealed restarts, the replay buffer) share the restart logic of site_loss.
r"""Persistent contrastive divergence (Tieleman 2008), with an optional replay buffer
(Du & Mordatch 2019), as a loss for NumPyro's ``SVI``.

The loss is the one of :class:`~numpyro_ebm.ContrastiveDivergence`,

.. math::

    L(\theta) = \operatorname{mean} E_\theta(x) - \operatorname{mean} E_\theta(\operatorname{sg}(x'))
              + \alpha\,(\operatorname{mean} E_\theta(x)^2 + \operatorname{mean} E_\theta(x')^2),

but the chains that draw the negatives :math:`x'` persist across parameter updates. They are
the estimator's per-site state, kept in the ``numpyro.mutable`` site ``"pcd_chains"`` that its
guide declares (``pcd.guide`` or ``pcd.make_guide(model)``), so they survive between
``svi.update`` calls, run inside the compiled ``svi.run`` loop and are saved with the
``SVIState``.

Three ways to reach every mode of a multimodal model (a chain of a local kernel stays in the mode
where it starts, and PCD then learns the wrong mode weights):

* **parallel tempering negatives**: ``kernel=functools.partial(numpyro_ebm.parallel_tempering,
  kernel=mala, ...)``. The whole tempering state (every replica, the ladder, the index process
  and swap statistics, a :class:`~numpyro_ebm.PTState`) persists in the mutable state as
  ``"kernel_state"``, so the replicas keep travelling across updates instead of restarting
  from the target replica; ``numpyro_ebm.tempering_summary(state["kernel_state"])`` reads the
  swap rates of the training run;
* **short-run annealed chains** (``anneal_steps``): restarted chains are annealed from
  ``init_dist`` to the model along :math:`f_\beta = (1-\beta)\log p_0 + \beta \log p`
  (with ``reinit_prob=1``: every chain, every update, i.e. non-persistent annealed short-run
  MCMC);
* **replay buffer with reinitialization from the base** (``buffer_size``, ``reinit_prob``,
  ``init_dist``; Du & Mordatch 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.estimators.base import ANY_SITE
from numpyro_ebm.estimators.contrastive import ContrastiveDivergence, scores_single_events
from numpyro_ebm.estimators.sites import EBMSite, site_events
from numpyro_ebm.sampling.annealed_langevin import anneal_chains
from numpyro_ebm.sampling.chains import build_algorithm, sample_chains
from numpyro_ebm.sampling.tempering import PTState

__all__ = ["PCD_STATE", "PersistentContrastiveDivergence"]

#: name of the ``numpyro.mutable`` site that holds the persistent chains / replay buffer.
PCD_STATE = "pcd_chains"


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
    return {ANY_SITE: init_dist}


def _draw(rng_key, d: dist.Distribution, n: int, name: str, event_shape=None):
    """``n`` draws ``(n, *event_shape)`` of ``d``, checked against the site's event shape."""
    x = d.sample(rng_key, (n,))
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"`init_dist`{'' if name == ANY_SITE else f'[{name!r}]'} draws shape "
            f"{tuple(x.shape[1:])}, but the EBM site's event shape is {tuple(event_shape)}; "
            "use e.g. `dist.Uniform(-4, 4).expand(event_shape).to_event(len(event_shape))`."
        )
    return x


def _finite_rows(tree) -> jax.Array:
    """``(n,)`` bool: every floating entry of row ``i`` of every leaf is finite."""
    out = None
    for leaf in jax.tree.leaves(tree):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        ok = jnp.all(jnp.isfinite(leaf), axis=tuple(range(1, leaf.ndim)))
        out = ok if out is None else out & ok
    return out


def _where_rows(mask, a, b):
    """Row-wise ``where`` over two pytrees of the same structure (leading axis: chains)."""
    return jax.tree.map(
        lambda x, y: jnp.where(jnp.reshape(mask, (-1,) + (1,) * (x.ndim - 1)), x, y), a, b
    )


def _is_tempering(kernel) -> bool:
    """Whether the factory builds :func:`~numpyro_ebm.parallel_tempering` (its state is a
    :class:`~numpyro_ebm.PTState`), by the shape of its initial state on a stand-in density."""
    try:
        shape = jax.eval_shape(build_algorithm(kernel, _dummy_logdensity).init, jnp.zeros(1))
    except Exception:  # noqa: BLE001 - a kernel for other positions (e.g. discrete) is not PT
        return False
    return isinstance(shape, PTState)


def _dummy_logdensity(x):
    return -0.5 * sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(x))


class PersistentContrastiveDivergence(ContrastiveDivergence):
    r"""Persistent contrastive divergence (Tieleman 2008), with an optional replay buffer
    (Du & Mordatch 2019), as a loss for ``numpyro.infer.SVI``.

    The negatives are ``num_chains`` MCMC chains that persist across parameter updates. Each step:

    1. take ``num_chains`` positions: all the chains, or, when ``buffer_size`` is set, a random
       draw without replacement from a buffer of ``buffer_size`` earlier samples;
    2. restart a fraction ``reinit_prob`` of them from ``init_dist``;
    3. run ``num_steps`` transitions of ``kernel`` under the current, stop-gradient parameters;
    4. compute :func:`~numpyro_ebm.contrastive_divergence_loss` of the minibatch and the new
       positions;
    5. write the positions back; chains that diverged (non-finite) are written back as fresh
       draws from ``init_dist`` instead, so the state never holds NaN (the step's loss is still
       non-finite, which ``stable_update=True`` skips).

    The chains live in NumPyro mutable state (the ``numpyro.mutable`` site ``"pcd_chains"``,
    :data:`PCD_STATE`) that the estimator's guide declares::

        box = dist.Uniform(-4, 4).expand([2]).to_event(1)
        pcd = PersistentContrastiveDivergence(kernel, init_dist=box)
        svi = SVI(model, pcd.guide, optim, loss=pcd)                 # init_dist given
        svi = SVI(model, pcd.make_guide(model), optim, loss=pcd)     # works without init_dist

    A conditional energy :math:`E(y, x)` (one that scores only whole minibatches) gets one
    persistent chain per example instead, kept by the example's plate index
    (:meth:`conditional_site_loss`; needs ``pcd.make_guide(model)``).

    ``pcd.guide`` has no sample sites: it only holds the chains. ``pcd.make_guide(model)`` traces
    the model once at ``SVI.init`` to read the trained sites' event shape and data; without
    ``init_dist`` it then starts and restarts chains from a diagonal Gaussian matched to the mean
    and standard deviation of the data it saw there.

    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(numpyro_ebm.ula, step_size=3e-3)`` or
        ``functools.partial(blackjax.mala, step_size=1e-2)``; or ``None`` for the site
        distribution's own sampler (its ``annealing_path`` at ``beta = 1``).
    :param int num_steps: MCMC transitions per update (``>= 1``; default 20).
    :param int num_chains: negatives per update (``>= 1``; default 256).
    :param int buffer_size: size of the replay buffer (``>= num_chains``); ``None`` (default) keeps
        exactly ``num_chains`` persistent chains.
    :param float reinit_prob: probability that a chain restarts from ``init_dist`` at a step, in
        ``[0, 1]`` (default 0.05).
    :param init_dist: where chains start and restart: a NumPyro distribution over the site's event
        (e.g. ``dist.Uniform(-4, 4).expand([2]).to_event(1)``), a dict ``{site name: distribution}``
        for models with several trained sites, or ``None`` (then use ``pcd.make_guide(model)``).
    :param float alpha: energy-magnitude penalty weight (default 0); ``0.1`` for neural energies
        (see docs/estimators.md), ``0`` for exact (e.g. Gaussian) energies, whose
        maximum-likelihood fixed point it would bias.
    :param sites: names of the observed ``Unnormalized`` sites to train; ``None`` (default): every
        non-label site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).
    :param int anneal_steps: ``J >= 0`` (default 0: off). Short-run annealed chains: the chains
        restarted at a step (``reinit_prob``, divergence) first take one transition at each of
        ``J`` inverse temperatures (``anneal_schedule``) on the geometric path from ``init_dist``
        (its ``log_prob``; the data-matched Gaussian of ``make_guide``) to the model, :func:`~numpyro_ebm.sampling.anneal_chains`; the other chains take those ``J`` transitions at ``beta = 1``. Then all
        chains take ``num_steps``. Needs a kernel factory that is not parallel tempering.
    :param str anneal_schedule: ``"sigmoid"`` (default), ``"linear"`` or ``"geometric"``
        (:func:`~numpyro_ebm.temperature_schedule`).
    :param persist_kernel_state: ``None`` (default): persist the whole kernel state when it is
        richer than the positions, i.e. for :func:`~numpyro_ebm.parallel_tempering` (every
        replica, the ladder, the index process; stored as ``"kernel_state"`` beside
        ``"positions"``, a pytree of arrays that checkpoints save); ``False``: persist positions
        only (a PT ladder then restarts at the persisted positions at every update).

    The mutable state per site is ``{"positions": (num_positions, *event_shape)}``, plus
    ``"kernel_state"`` (the batched kernel state, ``num_positions`` rows) with persisted PT, and
    ``"loc"``, ``"scale"`` with ``make_guide`` and no ``init_dist``.
    """

    state_name = PCD_STATE

    def __init__(
        self,
        kernel: Callable | None,
        num_steps: int = 20,
        num_chains: int = 256,
        buffer_size: int | None = None,
        reinit_prob: float = 0.05,
        init_dist=None,
        alpha: float = 0.0,
        sites=None,
        *,
        anneal_steps: int = 0,
        anneal_schedule: str = "sigmoid",
        persist_kernel_state: bool | None = None,
        report_nonfinite: bool | str = True,
    ):
        super().__init__(kernel, num_steps, alpha, sites, report_nonfinite=report_nonfinite)
        self.num_chains = check_int("num_chains", num_chains, 1)
        if buffer_size is not None:
            buffer_size = check_int("buffer_size", buffer_size, 1)
            if buffer_size < self.num_chains:
                raise ValueError(
                    f"`buffer_size` must be >= `num_chains` = {self.num_chains} (each step draws "
                    f"num_chains positions from the buffer), got {buffer_size}."
                )
        self.buffer_size = buffer_size
        self.reinit_prob = check_float("reinit_prob", reinit_prob, minimum=0.0, maximum=1.0)
        self.init_dist = _check_init_dist(init_dist)
        self.anneal_steps = check_int("anneal_steps", anneal_steps, 0)
        if self.anneal_steps:
            from numpyro_ebm.evaluation.ais import temperature_schedule

            # drop beta = 0 (the base draw itself): J transitions at beta_1 .. beta_J = 1
            self.anneal_betas = temperature_schedule(self.anneal_steps, anneal_schedule)[1:]
        self.anneal_schedule = anneal_schedule
        if persist_kernel_state not in (None, True, False):
            raise TypeError(
                f"`persist_kernel_state` must be None, True or False, got {persist_kernel_state!r}."
            )
        rich = kernel is not None and _is_tempering(kernel)
        if persist_kernel_state and not rich:
            raise ValueError(
                "`persist_kernel_state=True` needs a kernel whose state is more than the chain "
                "positions (numpyro_ebm.parallel_tempering); other kernels' states hold the "
                "log density and gradient under old parameters and are rebuilt from the positions."
            )
        self.persist_kernel_state = rich if persist_kernel_state is None else persist_kernel_state
        if self.anneal_steps and (kernel is None or rich):
            raise ValueError(
                "`anneal_steps` > 0 needs a kernel factory of a local kernel (e.g. "
                "`functools.partial(blackjax.mala, step_size=0.05)`); got "
                f"{'None' if kernel is None else 'parallel tempering'}, which brings its own "
                "annealing."
            )

    @property
    def num_positions(self) -> int:
        """Rows of the chain state: ``buffer_size`` when set, else ``num_chains``."""
        return self.num_chains if self.buffer_size is None else self.buffer_size

    def _site_init_dist(self, name: str):
        if self.init_dist is None:
            return None
        if name in self.init_dist:
            return self.init_dist[name]
        if ANY_SITE in self.init_dist:
            return self.init_dist[ANY_SITE]
        raise ValueError(
            f"`init_dist` has no entry for the EBM site {name!r}; with several trained sites "
            "pass a dict {site name: distribution}."
        )

    def _init_dist_label(self, name: str) -> str:
        return f"[{name!r}]" if self.init_dist is not None and name in self.init_dist else ""

    def initial_state(self, rng_key, sites: list[EBMSite] | None) -> dict:
        """``{site name: {"positions": (num_positions, *event_shape)}}`` (plus ``"loc"`` and
        ``"scale"`` of the data-matched Gaussian when ``init_dist`` is ``None``)."""
        if sites is None:  # model unknown: init_dist alone fixes the event shape
            if self.init_dist is None:
                raise ValueError(
                    "PersistentContrastiveDivergence: `pcd.guide` needs `init_dist` (a NumPyro "
                    "distribution over the EBM site's event, e.g. "
                    "`dist.Uniform(-4, 4).expand([2]).to_event(1)`) to create the chains; or use "
                    "`pcd.make_guide(model)`, which reads the event shape from the model."
                )
            return {
                name: self._with_kernel_state(
                    {"positions": _draw(jax.random.fold_in(rng_key, i), d, self.num_positions, name)}
                )
                for i, (name, d) in enumerate(sorted(self.init_dist.items()))
            }
        if self.init_dist is not None and set(self.init_dist) == {ANY_SITE} and len(sites) > 1:
            raise ValueError(
                f"`init_dist` is one distribution but the model has {len(sites)} trained sites "
                f"{[s.name for s in sites]}; pass a dict {{site name: distribution}}."
            )
        state = {}
        for i, site in enumerate(sites):
            key = jax.random.fold_in(rng_key, i)
            event_shape = tuple(site.dist.event_shape)
            if not scores_single_events(site.dist, site.data):
                state[site.name] = self._conditional_initial_state(site)
                continue
            d = self._site_init_dist(site.name)
            if d is None:
                data = site_events(site.dist, site.data)
                loc = jnp.mean(data, 0)
                scale = jnp.std(data, 0) + 1e-3 * (jnp.std(data) + 1.0)
                noise = jax.random.normal(key, (self.num_positions, *event_shape), loc.dtype)
                state[site.name] = {"positions": loc + scale * noise, "loc": loc, "scale": scale}
            else:
                state[site.name] = {
                    "positions": _draw(key, d, self.num_positions, site.name, event_shape)
                }
            state[site.name] = self._with_kernel_state(state[site.name])
        return state

    def _with_kernel_state(self, state: dict, logdensity_fn=_dummy_logdensity) -> dict:
        """Add the batched kernel state of the positions (persisted PT); its log densities are
        recomputed under the current parameters at every update, so any function fixes the
        structure here."""
        if not self.persist_kernel_state:
            return state
        algorithm = build_algorithm(self.kernel, logdensity_fn)
        positions = state["positions"]
        if not jnp.issubdtype(positions.dtype, jnp.inexact):
            positions = positions.astype(jnp.result_type(float))
        return {**state, "kernel_state": jax.vmap(algorithm.init)(positions)}

    def _base_logdensity(self, site, state):
        init_dist = self._site_init_dist(site.name)
        if init_dist is not None:
            return init_dist.log_prob
        loc, scale = state["loc"], state["scale"]
        return lambda x: jnp.sum(dist.Normal(loc, scale).log_prob(x))
    # -- conditional energies: one persistent chain per example ---------------------------------

    def _conditional_initial_state(self, site: EBMSite) -> dict:
        """``{"positions": (num_examples, *event_shape), "visited": (num_examples,)}``: one chain
        per example of the plate, started at the example's data on its first visit."""
        if site.example_index is None:
            raise ValueError(
                f"PersistentContrastiveDivergence: the energy of site {site.name!r} scores only "
                "whole minibatches (a conditional energy E(y, x)), so its chains are kept per "
                "example, which needs the site under one `numpyro.plate` over the examples (one "
                "batch dimension); or train it with ContrastiveDivergence."
            )
        if self.buffer_size is not None:
            raise ValueError(
                f"PersistentContrastiveDivergence: site {site.name!r} has a conditional energy "
                "(one chain per example); `buffer_size` does not apply to it: pass None."
            )
        data = site_events(site.dist, site.data)
        dtype = jnp.result_type(float, data.dtype)
        return {
            "positions": jnp.zeros((site.num_examples, *data.shape[1:]), dtype),
            "visited": jnp.zeros((site.num_examples,), bool),
        }

    def conditional_site_loss(self, site: EBMSite, rng_key, state):
        r"""PCD for a conditional energy :math:`E(y, x)`: example :math:`i` of the minibatch
        continues its own persistent chain over :math:`y` (with its :math:`x_i` fixed), stored at
        its plate index; a chain starts at :math:`y_i` on the example's first visit, and
        restarts there with probability ``reinit_prob`` or when it diverged. ``num_chains``
        does not apply (one chain per example). Returns ``(loss, new state)``."""
        if "visited" not in state or site.example_index is None:
            raise ValueError(
                f"PersistentContrastiveDivergence: site {site.name!r} has a conditional energy "
                "E(y, x) (it scores only whole minibatches), whose chains are kept per example: "
                "build the guide with `pcd.make_guide(model)` (and keep the site under one "
                "numpyro.plate over the examples)."
            )
        positions, visited = state["positions"], state["visited"]
        if positions.shape[0] != site.num_examples:
            raise ValueError(
                f"PersistentContrastiveDivergence: the chains of site {site.name!r} were built "
                f"for {positions.shape[0]} examples, the plate now has {site.num_examples}: "
                "build the guide for this data."
            )
        idx = site.example_index
        data = jax.lax.stop_gradient(site_events(site.dist, site.data)).astype(positions.dtype)
        reinit_key, chain_key = jax.random.split(rng_key)
        start = positions[idx]
        event_axes = tuple(range(1, start.ndim))
        restart = ~visited[idx] | ~jnp.all(jnp.isfinite(start), axis=event_axes)
        if self.reinit_prob > 0:
            restart = restart | jax.random.bernoulli(reinit_key, self.reinit_prob, idx.shape)
        mask = jnp.reshape(restart, (-1,) + (1,) * len(event_axes))
        start = jnp.where(mask, data, start)
        negatives = jax.lax.stop_gradient(self.conditional_negatives(site, chain_key, start))
        finite = jnp.all(jnp.isfinite(negatives), axis=event_axes)
        kept = jnp.where(jnp.reshape(finite, mask.shape), negatives, data)
        new_state = {**state, "positions": positions.at[idx].set(kept),
                     "visited": visited.at[idx].set(True)}
        return self.negatives_loss(site, negatives), new_state

    def site_loss(self, site, rng_key, state):
        """One PCD update of the site's chains: ``(loss, new state)``."""
        if not scores_single_events(site.dist, site.data):
            return self.conditional_site_loss(site, rng_key, state)
        positions = state["positions"]
        pick_key, reinit_key, fresh_key, chain_key = jax.random.split(rng_key, 4)
        anneal_key = jax.random.fold_in(rng_key, 5)
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
        init_dist = self._site_init_dist(site.name)
        if init_dist is None and "loc" not in state:  # the data-matched Gaussian of make_guide
            raise ValueError(
                f"PersistentContrastiveDivergence: no `init_dist` for the site {site.name!r} "
                "and its chains were not built by `pcd.make_guide(model)`."
            )

        chain_shape, chain_dtype = start.shape, start.dtype

        def draw_fresh(key):  # fresh starts, drawn only when a chain restarts or diverges
            if init_dist is None:
                noise = jax.random.normal(key, chain_shape, chain_dtype)
                return state["loc"] + state["scale"] * noise
            return init_dist.sample(key, (self.num_chains,))

        fresh_shape = jax.eval_shape(draw_fresh, fresh_key).shape
        what = "`init_dist`" + ("" if init_dist is None else self._init_dist_label(site.name))
        event_shape = tuple(site.dist.event_shape)
        if tuple(start.shape[1:]) != event_shape or tuple(fresh_shape[1:]) != event_shape:
            raise ValueError(
                f"PersistentContrastiveDivergence: {what} draws shape {tuple(fresh_shape[1:])} "
                f"(the chains hold {tuple(start.shape[1:])}), but the EBM site {site.name!r} has "
                f"event shape {event_shape}; use e.g. `dist.Uniform(-4, 4).expand("
                f"{list(event_shape)}).to_event({len(event_shape)})`."
            )
        mask = jnp.reshape(restart, (-1,) + (1,) * len(event_axes))
        start = jax.lax.cond(
            jnp.any(restart),
            lambda s: jnp.where(mask, draw_fresh(fresh_key).astype(s.dtype), s), lambda s: s, start,
        )
        target = self.chain_target(site)
        if self.anneal_steps:
            frozen = site.frozen
            start = anneal_chains(
                anneal_key, lambda x: -frozen.energy(x), self._base_logdensity(site, state),
                self.kernel, start, self.anneal_betas, active=restart,
            )
        init_state = None
        if self.persist_kernel_state:
            frozen = site.frozen
            logdensity_fn = lambda x: -frozen.energy(x)  # noqa: E731
            algorithm = build_algorithm(self.kernel, logdensity_fn)
            kept_state = state["kernel_state"]
            if idx is not None:
                kept_state = jax.tree.map(lambda a: a[idx], kept_state)
            fresh_state = jax.vmap(algorithm.init)(start)
            init_state = _where_rows(restart, fresh_state, kept_state)
            # the persisted log density is under the previous parameters: recompute it
            init_state = init_state._replace(logdensity=jax.vmap(logdensity_fn)(init_state.position))
            target = None
            kernel = algorithm
        else:
            kernel = self.kernel
        try:
            negatives = sample_chains(
                chain_key, target, kernel, start, self.num_steps, init_state=init_state
            )
        except TypeError as err:
            if jnp.issubdtype(start.dtype, jnp.inexact) or "init_positions" not in str(err):
                raise
            raise TypeError(
                f"PersistentContrastiveDivergence: {what} draws {start.dtype} values, but the "
                "kernel takes gradients of the log density, which integers cannot have: use a "
                "continuous `init_dist` (e.g. `dist.Uniform(-4, 4).expand(event_shape)"
                ".to_event(...)`) for a gradient-based kernel, or a discrete kernel (Gibbs, "
                "`kernel=None` for a model with an exact sampler)."
            ) from err
        new_state = negatives.state
        negatives = jax.lax.stop_gradient(negatives.positions)
        # diverged chains restart rather than persist: the state never holds NaN/inf
        finite = jnp.all(jnp.isfinite(negatives), axis=event_axes)
        if init_state is not None:
            finite = finite & _finite_rows(getattr(new_state, "replicas", new_state.position))
        # a chain that restarted above and then diverged gets a draw of its own, not that start
        refresh_key = jax.random.fold_in(fresh_key, 1)
        kept = jax.lax.cond(
            jnp.all(finite),
            lambda x: x,
            lambda x: jnp.where(
                jnp.reshape(finite, mask.shape), x, draw_fresh(refresh_key).astype(x.dtype)
            ),
            negatives,
        )
        new_positions = kept if idx is None else positions.at[idx].set(kept)
        out = {**state, "positions": new_positions}
        if init_state is not None:
            new_state = jax.lax.stop_gradient(_where_rows(finite, new_state, fresh_state))
            if idx is None:
                out["kernel_state"] = new_state
            else:
                out["kernel_state"] = jax.tree.map(
                    lambda a, b: a.at[idx].set(b), state["kernel_state"], new_state
                )
        return self.negatives_loss(site, negatives), out
