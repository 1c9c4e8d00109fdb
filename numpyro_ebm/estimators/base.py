r"""The one base of every estimator: :class:`EnergyEstimator`, a ``numpyro.infer.elbo.ELBO``.

An estimator trains the observed :class:`~numpyro_ebm.Unnormalized` sites of a NumPyro model
through ``numpyro.infer.SVI``. What every estimator needs is written here, once:

* **the key split** (:func:`split_key`): ``rng_key -> (model_key, loss_key)``. Every trace of the
  model within one step (the trace under the parameters and, for MCMC negatives, the trace under
  stop-gradient parameters) is seeded with ``model_key``, so they all see the same minibatch of a
  subsampled plate; so do all members of a :class:`~numpyro_ebm.CombinedLoss`. The estimator's
  own draws (noise, projections, chains) use ``fold_in(loss_key, i)`` for the ``i``-th site.
* **the trace** of the observed ``Unnormalized`` sites and **site selection**: a ``sites=``
  argument on every estimator, and by default a rule by kind of site
  (:attr:`EnergyEstimator.site_kind`: ``"label"``, ``"sampled"`` or ``"continuous"``); the
  functions (:func:`~numpyro_ebm.estimators.sites.observed_ebm_sites`,
  :func:`~numpyro_ebm.estimators.sites.select_sites`) are in :mod:`numpyro_ebm.estimators.sites`;
* **mutable state** (:attr:`EnergyEstimator.state_name`): per-site state that persists between
  steps (PCD's chains) lives in a ``numpyro.mutable`` site that the estimator's guide declares
  (:meth:`EnergyEstimator.guide`, :meth:`EnergyEstimator.make_guide`), because ``SVI.init``
  collects mutable state only from the model's and the guide's traces;
* **the non-finite-loss report**: a ``RuntimeWarning`` (host callback, once per message) that
  says whether the data's energy or the estimator's own draws went non-finite.

An estimator is then one method, :meth:`EnergyEstimator.site_loss`: a pure function of the site
(its energy, through ``site.dist``, and its data), a key and its state.

**Scale.** EBM losses are per-example **means** over the minibatch (and over negatives / noise
draws), not sums: the ``N / B`` scale of a subsampled ``numpyro.plate`` is *not* applied, so the
loss value and a good learning rate do not depend on the data set size ``N``, and a full-batch
and a minibatch run have the same optimum. NumPyro's ``Trace_ELBO`` is on the data-set scale
(``N / B`` times a minibatch sum). To add an EBM loss to an ELBO term on other sites in a
:class:`~numpyro_ebm.CombinedLoss` with the weights of a joint log-likelihood, weight the EBM
loss by ``N`` (or the ELBO by ``1 / N``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.infer.elbo import ELBO
from numpyro.primitives import mutable

from numpyro_ebm._validation import check_finite
from numpyro_ebm.estimators.sites import (
    EBMSite,
    check_site_names,
    observed_ebm_sites,
    select_sites,
    site_events,
)

__all__ = ["ANY_SITE", "EnergyEstimator", "check_model_inputs", "no_guide", "split_key"]

#: key of a site's state when the guide was built without the model (e.g. PCD's ``init_dist``
#: given as one distribution): it stands for the model's only trained site.
ANY_SITE = "*"

#: ``fold_in`` salt of the key handed to :meth:`EnergyEstimator.guide_inputs` (site ``i`` gets
#: ``fold_in(loss_key, i)``; this stays clear of any site index).
_GUIDE_SALT = 0x7FFFFFFF


def split_key(rng_key) -> tuple[jax.Array, jax.Array]:
    """``rng_key -> (model_key, loss_key)``, the one key schedule of every estimator.

    ``model_key`` seeds every trace of the model within the step (so every trace sees the same
    minibatch); ``loss_key`` seeds the estimator's own draws (site ``i`` gets
    ``jax.random.fold_in(loss_key, i)``).
    """
    model_key, loss_key = jax.random.split(rng_key)
    return model_key, loss_key


# --------------------------------------------------------------------------------------------
# guides


def check_model_inputs(args, kwargs) -> None:
    """Raise ``ValueError`` if a concrete array among the model's inputs holds NaN or inf.

    Called by every guide the library ships (:func:`no_guide`, :meth:`EnergyEstimator.guide`
    and :meth:`~EnergyEstimator.make_guide`, ``CombinedLoss``'s, :func:`numpyro_ebm.flow_guide`'s):
    ``SVI.init`` runs the guide eagerly on the data, so bad data fails
    there with a clear error instead of turning into NaN losses inside the compiled loop.
    """
    for i, a in enumerate(args):
        if hasattr(a, "dtype") and hasattr(a, "shape"):
            check_finite(f"model argument {i} (data)", a)
    for k, v in kwargs.items():
        if hasattr(v, "dtype") and hasattr(v, "shape"):
            check_finite(f"model argument `{k}` (data)", v)


def no_guide(*args, **kwargs):
    """A guide with no sites, for estimators that need none: ``SVI(model, no_guide, optim, loss)``.

    ``SVI`` needs a callable guide (``None`` fails its checks). ``no_guide`` also checks the data
    it is called with at ``SVI.init``: NaN or inf raise a ``ValueError`` naming the argument.
    """
    check_model_inputs(args, kwargs)
    return None


def _guide_key():
    key = numpyro.prng_key()
    return jax.random.key(0) if key is None else key


# --------------------------------------------------------------------------------------------
# the non-finite report


def _not_finite(x) -> jax.Array:
    return ~jnp.all(jnp.isfinite(x))


#: energies of the data above this magnitude get a warning during training: their gradients
#: (of the same order) overflow float32 when squared (Adam's second moment), which freezes the
#: parameters with finite losses.
ENERGY_BOUND = 1e18


def _report_nonfinite(estimator: str, total, data, energies, hint: str) -> None:
    """Warn (host side, once per message) that a training step's loss was not finite: a host
    callback, to be called where the step's flag says there is something to report (in a
    ``lax.cond`` branch: see :meth:`EnergyEstimator._report`). The cause is found on the host,
    with NumPy, from the arrays the branch passes, so that the compiled step holds no second
    copy of the checks.

    ``total``: the loss; ``data``: the sites' observed data (the floating-point ones);
    ``energies``: the energy of each site's data. The cause named is the first that holds: the
    data itself holds NaN or inf (e.g. rows outside the minibatch that ``SVI.init`` saw), the
    energy of the data is not finite, the loss is not finite. A separate warning: the energy of
    the data (or the finite loss) is above :data:`ENERGY_BOUND` in magnitude.
    """

    def warn(total, data, energies):
        # Under vmap the callback runs for every element: look at the values, not the branch.
        total, energies = np.asarray(total), [np.asarray(e) for e in energies]
        bad_input = any(not np.all(np.isfinite(np.asarray(x))) for x in data)
        bad_data = any(not np.all(np.isfinite(e)) for e in energies)
        bad_loss = not np.all(np.isfinite(total))
        huge = any(np.any(np.abs(e[np.isfinite(e)]) > ENERGY_BOUND) for e in energies) or bool(
            np.any(np.abs(total[np.isfinite(total)]) > ENERGY_BOUND)
        )
        if huge and not (bad_input or bad_data or bad_loss):
            warnings.warn(
                f"{estimator}: the energy of the data (or the loss) exceeds {ENERGY_BOUND:g} in "
                "magnitude; "
                "gradients this large overflow the optimizer's float32 statistics (Adam's "
                "second moment becomes inf), after which the updates are zero and the "
                "parameters freeze with a finite loss. Rescale the energy (or its "
                "initialization), or set `alpha` on a contrastive estimator to penalize large "
                "energies; `numpyro_ebm.check_svi_result(svi_result)` fails on such a run.",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if not (bad_input or bad_data or bad_loss):
            return
        if bad_input:
            cause = (
                "the observed data itself holds NaN or inf (in a minibatch of this run, not only "
                "in the one `SVI.init` checked): clean the data set (e.g. drop the rows where "
                "`~jnp.isfinite(data).all(-1)`); the learning rate is not the cause"
            )
        elif bad_data:
            cause = (
                "the energy of the data is not finite: the parameters diverged; reduce the "
                "learning rate, set `alpha` (e.g. 0.1) on a contrastive estimator to penalize "
                "large energies, or reduce the kernel's step_size"
            )
        else:
            cause = hint
        warnings.warn(
            f"{estimator}: non-finite loss; {cause}. Train with `svi.run(..., "
            "stable_update=True)` or `optax.apply_if_finite(...)` to skip such updates, and "
            "check the result with `numpyro_ebm.check_svi_result(svi_result)`.",
            RuntimeWarning,
            stacklevel=2,
        )

    jax.debug.callback(warn, total, data, energies)


# --------------------------------------------------------------------------------------------
# the base class


class EnergyEstimator(ELBO):
    r"""Base of every estimator: a ``numpyro.infer.elbo.ELBO`` whose loss is a sum of one
    :meth:`site_loss` per trained site.

    Per step, :meth:`loss_with_mutable_state` (what ``SVI`` calls):

    1. splits ``rng_key`` into ``(model_key, loss_key)`` (:func:`split_key`);
    2. traces the model with ``model_key`` and collects its observed ``Unnormalized`` sites
       (:func:`observed_ebm_sites`); with :attr:`stop_gradient_trace`, traces it again under
       ``stop_gradient(params)`` with the same key (:attr:`EBMSite.frozen`);
    3. selects the sites to train (:func:`select_sites` with ``sites=`` and :attr:`site_kind`);
    4. reads each site's state (:meth:`guide_inputs`: the mutable state entry, or ``None``);
    5. sums ``site_loss(site, fold_in(loss_key, i), state)`` over the sites, collects the new
       states, and reports a non-finite loss.

    Losses are per-example means over the minibatch (see the module docstring for what that
    means when combining with an ELBO).

    **Writing an estimator**: subclass, set :attr:`site_kind`, implement :meth:`site_loss`
    (a scalar, or ``(scalar, new_state)`` when :attr:`state_name` is set, in which case also
    implement :meth:`initial_state`)::

        class EnergyMatching(EnergyEstimator):
            site_kind = "continuous"

            def site_loss(self, site, rng_key, state):
                return jnp.mean(site.dist.energy(site.data) ** 2)

    :param sites: names of the observed ``Unnormalized`` sites to train; ``None`` (default):
        every site of :attr:`site_kind`.
    :param report_nonfinite: warn during training when a step's loss is not finite, or above
        :data:`ENERGY_BOUND` in magnitude, naming the cause (default ``True``: each step tests
        its loss, and only a failing step evaluates the data's energy to name the cause).
        ``"full"``: each step also evaluates the energy of the data (one more forward pass), and
        warns when it is huge behind a small loss. The warning is a host callback compiled into
        the training program, and JAX's persistent compilation cache
        (:func:`~numpyro_ebm.enable_compilation_cache`) cannot store a program that holds one:
        pass ``False`` to have a rerun script load its training program from the cache. A
        non-finite loss then shows only as a NaN loss value, which
        :func:`~numpyro_ebm.check_svi_result` still reports after the run.
    """

    can_infer_discrete = True  # the EBM sites are observed: no enumeration of latent sites
    #: which sites the default selection trains: ``"label"``, ``"sampled"`` or ``"continuous"``.
    site_kind: ClassVar[str] = "continuous"
    #: also trace the model under stop-gradient parameters (``EBMSite.frozen``), e.g. for MCMC.
    stop_gradient_trace: ClassVar[bool] = False
    #: name of the ``numpyro.mutable`` site holding the per-site state, or ``None`` (stateless).
    state_name: ClassVar[str | None] = None
    #: the loss evaluates :meth:`data_energy` of every site itself: the non-finite report then
    #: takes that energy as an operand (XLA merges the two evaluations) instead of evaluating it
    #: in the branch of a failing step, a second copy of the energy that costs compile time.
    data_energy_in_loss: ClassVar[bool] = False

    def __init__(self, sites=None, *, report_nonfinite: bool | str = True):
        super().__init__(num_particles=1)
        self.sites = check_site_names(sites)
        if not (isinstance(report_nonfinite, bool) or report_nonfinite == "full"):
            raise TypeError(
                f"`report_nonfinite` must be True, False or 'full', got {report_nonfinite!r}."
            )
        self.report_nonfinite = report_nonfinite

    # -- what a subclass writes -------------------------------------------------------------

    def site_loss(self, site: EBMSite, rng_key, state):
        """The loss of one site: a scalar (or ``(scalar, new_state)`` for a stateful estimator).

        :param EBMSite site: the site: ``site.dist.energy`` (differentiable in the parameters),
            ``site.data`` (the minibatch), ``site.frozen`` (see :attr:`stop_gradient_trace`).
        :param rng_key: a key for the estimator's own draws, distinct for every site.
        :param state: this site's entry of :meth:`guide_inputs` (``None`` for a stateless one).
        """
        raise NotImplementedError

    def initial_state(self, rng_key, sites: list[EBMSite] | None) -> dict:
        """The state a guide declares: ``{site name (or ANY_SITE): site state}``.

        ``sites`` is ``None`` for :meth:`guide` (the model is unknown) and the model's selected
        sites for :meth:`make_guide`. Stateful estimators override this.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no state.")

    def data_energy(self, site: EBMSite) -> jax.Array:
        """The energy of the site's minibatch, ``(n,)`` (batch dimensions flattened): the
        expression the report evaluates, and the one a loss with :attr:`data_energy_in_loss`
        uses, so that XLA computes it once."""
        return site.dist.energy(site_events(site.dist, site.data))

    def nonfinite_hint(self) -> str:
        """What to say when the loss is not finite although the data's energy is."""
        return (
            "the data's energy is finite but the loss is not (its derivatives or the estimator's "
            "own draws overflowed); reduce the learning rate"
        )

    # -- the state -----------------------------------------------------------------------------

    def guide(self, *args, **kwargs):
        """A NumPyro guide with no sample sites: ``SVI(model, est.guide, optim, loss=est)``.

        It checks the data it is called with at ``SVI.init`` (as :func:`no_guide`) and, for a
        stateful estimator, declares the state as the ``numpyro.mutable`` site
        :attr:`state_name`, built without the model (:meth:`initial_state` with ``None``).
        """
        check_model_inputs(args, kwargs)
        if self.state_name is not None:
            mutable(self.state_name, self.initial_state(_guide_key(), None))

    def make_guide(self, model) -> Callable:
        """A guide for ``model``: like :meth:`guide`, but it traces the model once at
        ``SVI.init`` to build the state from the sites it trains (their event shapes, data).

        Use ``SVI(model, est.make_guide(model), optim, loss=est)``.
        """
        if not callable(model):
            raise TypeError(f"`model` must be a NumPyro model (a callable), got {model!r}.")

        def guide(*args, **kwargs):
            check_model_inputs(args, kwargs)
            if self.state_name is None:
                return
            model_key, state_key = jax.random.split(_guide_key())
            with handlers.block():
                sites = self.select(observed_ebm_sites(model, None, args, kwargs, model_key))
            mutable(self.state_name, self.initial_state(state_key, sites))

        return guide

    def state_keys(self, param_map, sites: list[EBMSite]) -> dict[str, str]:
        """``{site name: key of its entry in the mutable state}`` (a site name or ANY_SITE)."""
        name = type(self).__name__
        if self.state_name not in param_map:
            raise ValueError(
                f"{name} keeps its state in the guide's mutable site {self.state_name!r}, which "
                "SVI did not pass: use `SVI(model, est.guide, optim, loss=est)` or "
                "`SVI(model, est.make_guide(model), optim, loss=est)` (with est the estimator, "
                "e.g. `pcd.guide`). (`svi.evaluate` never passes mutable state: it cannot "
                "evaluate such a loss.)"
            )
        state = param_map[self.state_name]
        if set(state) == {ANY_SITE}:
            if len(sites) != 1:
                raise ValueError(
                    f"{name}: the model has {len(sites)} trained sites {[s.name for s in sites]}, "
                    "but the state was built for one site (e.g. `init_dist` given as one "
                    "distribution): pass one per site (a dict {site name: ...}), or use "
                    "`est.make_guide(model)`."
                )
            return {sites[0].name: ANY_SITE}
        missing = [s.name for s in sites if s.name not in state]
        if missing:
            raise ValueError(
                f"{name}: the state holds the sites {sorted(state)} but the trained sites are "
                f"{[s.name for s in sites]}: build the guide for this model."
            )
        return {s.name: s.name for s in sites}

    def guide_inputs(self, rng_key, param_map, guide, model_args, model_kwargs, sites):
        """``{site name: state}`` handed to :meth:`site_loss`: the site's entry of the mutable
        state (stop-gradient), or ``None`` for a stateless estimator. Estimators whose guide
        provides something else (FCE: the flow) override this."""
        if self.state_name is None:
            return {s.name: None for s in sites}
        keys = self.state_keys(param_map, sites)
        state = jax.lax.stop_gradient(param_map[self.state_name])
        return {s.name: state[keys[s.name]] for s in sites}

    # -- the loss ------------------------------------------------------------------------------

    def select(self, sites: list[EBMSite]) -> list[EBMSite]:
        """The sites this estimator trains (:func:`select_sites` with ``sites=``)."""
        return select_sites(sites, self.sites, self.site_kind, type(self).__name__)

    def estimate(
        self, model_key, loss_key, param_map, model, guide, model_args=(), model_kwargs=None
    ):
        """The loss with explicit keys: ``{"loss": scalar, "mutable_state": dict or None}``.

        :meth:`loss_with_mutable_state` calls it with :func:`split_key` of its ``rng_key``;
        :class:`~numpyro_ebm.CombinedLoss` calls it with one ``model_key`` for all members.
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        sites = self.select(
            observed_ebm_sites(model, param_map, model_args, model_kwargs, model_key)
        )
        if self.stop_gradient_trace:
            frozen = observed_ebm_sites(
                model, jax.lax.stop_gradient(param_map), model_args, model_kwargs, model_key
            )
            frozen = {s.name: s.dist for s in frozen}
            sites = [s._replace(frozen=frozen[s.name]) for s in sites]
        inputs = self.guide_inputs(
            jax.random.fold_in(loss_key, _GUIDE_SALT),
            param_map,
            guide,
            model_args,
            model_kwargs,
            sites,
        )
        total, new_states = 0.0, {}
        for i, site in enumerate(sites):
            out = self.site_loss(site, jax.random.fold_in(loss_key, i), inputs[site.name])
            if self.state_name is not None:
                out, new_states[site.name] = out
            total = total + out
        if self.report_nonfinite:
            self._report(sites, total)
        mutable_state = None
        if self.state_name is not None:
            keys = self.state_keys(param_map, sites)
            state = dict(jax.lax.stop_gradient(param_map[self.state_name]))
            state.update({keys[name]: value for name, value in new_states.items()})
            mutable_state = {self.state_name: state}
        return {"loss": total, "mutable_state": mutable_state}

    def _report(self, sites: list[EBMSite], total) -> None:
        """The non-finite report of one step (:func:`_report_nonfinite`).

        ``report_nonfinite=True``: the step tests its loss alone (not finite, or above
        :data:`ENERGY_BOUND` in magnitude), and only a step that fails diagnoses the cause, in
        the true branch of a ``lax.cond``: whether the data or the data's energy holds NaN or
        inf, or whether that energy is finite but large enough to freeze Adam. The branch holds
        the host callback alone, which finds the cause with NumPy; it evaluates the data's
        energy (:meth:`data_energy`) only when the loss has not (:attr:`data_energy_in_loss`:
        CD and PCD pass the loss's own evaluation, at no cost). A passing step costs two
        comparisons of a scalar. ``"full"``: every step also tests the energy of the data (one
        forward pass, shared with the loss where it has one), so a finite, small loss over huge
        energies (e.g. CD whose chains reject every move, so that the negatives equal the data)
        is reported too.
        """

        total = jax.lax.stop_gradient(total)
        data = [jax.lax.stop_gradient(site.data) for site in sites
                if jnp.issubdtype(jnp.result_type(site.data), jnp.inexact)]

        def energies():
            return [jax.lax.stop_gradient(self.data_energy(site)) for site in sites]

        flag = _not_finite(total) | (jnp.abs(total) > ENERGY_BOUND)
        given = self.data_energy_in_loss or self.report_nonfinite == "full"
        operands = (total, data, energies() if given else [])
        if self.report_nonfinite == "full":
            for energy in operands[2]:
                finite = jnp.where(jnp.isfinite(energy), energy, 0.0)
                flag = flag | _not_finite(energy) | jnp.any(jnp.abs(finite) > ENERGY_BOUND)
            for x in data:
                flag = flag | _not_finite(x)

        def report(operands):
            # the checks of the data and of its energy run on the host (_report_nonfinite); the
            # energy is evaluated here, in the branch of a failing step, unless it was given
            total, data, given_energies = operands
            _report_nonfinite(type(self).__name__, total, data,
                              given_energies if given else energies(), self.nonfinite_hint())

        jax.lax.cond(flag, report, lambda operands: None, operands)

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, loss_key = split_key(rng_key)
        return self.estimate(model_key, loss_key, param_map, model, guide, args, kwargs)

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)[
            "loss"
        ]
