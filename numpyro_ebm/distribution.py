"""An energy-based model as a NumPyro site.

``Unnormalized`` is a NumPyro :class:`~numpyro.distributions.Distribution` whose log density is
``-E(x)`` (minus an optional ``log_Z``); ``energy_factor`` is the ``numpyro.factor`` form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution

from numpyro_ebm._validation import is_concrete

__all__ = ["Unnormalized", "energy_factor"]

_SAMPLE_ERROR = (
    "Unnormalized (an energy-based model) has no exact sampler: its normalizing constant is "
    "unknown. Draw samples with MCMC instead: `numpyro_ebm.sample_chains(rng_key, dist.log_prob, "
    "kernel, init_positions, num_steps)` for many chains of a BlackJAX kernel, or "
    "`numpyro.infer.MCMC(NUTS(model))` / `MCMC(numpyro_ebm.BlackJAXKernel(...))` when the site is "
    "a latent variable of a model."
)


def _site_name_of(fn) -> str | None:
    """Best effort: the name of the NumPyro sample site whose distribution ``fn`` is being
    sampled (found in the calling frames' ``msg``), for error messages only."""
    import inspect

    frame = inspect.currentframe()
    for _ in range(40):
        if frame is None:
            return None
        msg = frame.f_locals.get("msg")
        if isinstance(msg, dict) and msg.get("fn") is fn and isinstance(msg.get("name"), str):
            return msg["name"]
        frame = frame.f_back
    return None


def _discrete_sample_error(fn) -> str:
    name = _site_name_of(fn)
    where = f"site {name!r}" if name else "a sample site"
    return (
        f"Unnormalized: {where} is a latent discrete energy-based site (support {fn.support}, "
        f"event shape {tuple(fn.event_shape)}), which has no exact sampler and which NUTS/HMC, "
        "BlackJAXKernel, DiscreteHMCGibbs and MixedHMC cannot sample (no gradients, no "
        "enumeration). Run MCMC with `numpyro_ebm.EBMGibbs(NUTS(model))` (or "
        "`EBMGibbs(model=model)` when every latent site is discrete): it updates the site by "
        "exact-conditional block Gibbs given the other sites. To draw from the EBM alone use "
        "`model.sample(...)` / `numpyro_ebm.sample_chains(...)`."
    )


class Unnormalized(Distribution):
    r"""An unnormalized density :math:`p(x) \propto \exp(-E(x))` as a NumPyro distribution.

    .. math::

        \log p(x) = -E(x) - \log Z

    where :math:`\log Z` is ``log_Z`` when it is given (a self-normalized model, as learned by
    noise contrastive estimation) and ``0`` otherwise, so ``log_prob`` is then the *unnormalized*
    log density. That is all MCMC (NUTS, BlackJAX kernels) and the training losses need.

    :param energy_fn: ``E``, a function mapping ``(..., *event_shape) -> (...)``: a plain JAX
        function, or the callable returned by :func:`numpyro.contrib.module.flax_module` /
        ``nnx_module`` (parameters then live in the model as ``numpyro.param`` sites).
    :param tuple event_shape: shape of one draw ``x`` (``()`` for a scalar, ``(2,)`` for a 2-D point).
    :param support: a NumPyro constraint for each element of ``x`` (default ``constraints.real``);
        a latent site is sampled in the unconstrained space and mapped by ``biject_to(support)``.
    :param log_Z: optional log normalizing constant, e.g. ``numpyro.param("log_Z", 0.0)``; a
        concrete non-finite value raises.
    :param annealing_path: optional :class:`~numpyro_ebm.sampling.annealing.AnnealingPath` whose
        ``kernel(1.0)`` is an exact sampler of this density (a classical model's block Gibbs
        kernel, set by ``model.distribution(params)``). Drivers handed the distribution without
        a kernel (``sample_chains``, CD/PCD with ``kernel=None``, ``logz_ais``) use it.
    :param tuple batch_shape: batch shape (set by ``numpyro.plate`` through :meth:`expand`).

    **Example**

    .. code-block:: python

        def model(data):
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", Unnormalized(lambda x: 0.5 * (x**2).sum(-1), (2,)), obs=batch)

    ``sample`` raises: use :func:`numpyro_ebm.sample_chains` or ``MCMC``.
    """

    arg_constraints = {}
    pytree_data_fields = ("log_Z",)
    pytree_aux_fields = ("energy_fn", "_support", "annealing_path")

    def __init__(
        self,
        energy_fn: Callable | None = None,
        event_shape: tuple = (),
        support=constraints.real,
        log_Z=None,
        *,
        annealing_path=None,
        batch_shape: tuple = (),
        validate_args=None,
    ):
        if energy_fn is None or not callable(energy_fn):
            raise TypeError(
                "Unnormalized: `energy_fn` must be a callable E mapping (..., *event_shape) -> "
                f"(...), e.g. `lambda x: 0.5 * (x ** 2).sum(-1)`; got {energy_fn!r}."
            )
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        try:
            event_shape = tuple(int(d) for d in event_shape)
        except TypeError as err:
            raise TypeError(
                f"Unnormalized: `event_shape` must be a tuple of ints, got {event_shape!r}."
            ) from err
        if any(d < 0 for d in event_shape):
            raise ValueError(
                f"Unnormalized: `event_shape` must hold sizes >= 0, got {event_shape!r}."
            )
        if not isinstance(support, constraints.Constraint):
            raise TypeError(
                f"Unnormalized: `support` must be a numpyro constraint, got {support!r}."
            )
        if support.event_dim < len(event_shape):
            support = constraints.independent(support, len(event_shape) - support.event_dim)
        if annealing_path is not None and not callable(getattr(annealing_path, "kernel", None)):
            raise TypeError(
                "Unnormalized: `annealing_path` must be a numpyro_ebm.AnnealingPath (with a "
                f"`kernel(beta)` sampler), got {annealing_path!r}."
            )
        if log_Z is not None and is_concrete(log_Z):
            try:
                finite = bool(np.all(np.isfinite(np.asarray(log_Z, dtype=float))))
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"Unnormalized: `log_Z` must be a number (a finite log normalizer), got "
                    f"{log_Z!r}."
                ) from err
            if not finite:
                raise ValueError(
                    f"Unnormalized: `log_Z` must be finite (a log normalizer), got {log_Z!r}."
                )
        self.energy_fn = energy_fn
        self.annealing_path = annealing_path
        self._support = support
        self.log_Z = log_Z
        super().__init__(
            batch_shape=tuple(batch_shape), event_shape=event_shape, validate_args=validate_args
        )

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return self._support

    def energy(self, value):
        """``E(value)``, shape ``value.shape[:-len(event_shape)]``; checked against that shape (a
        trailing axis of size 1, as an MLP returns, is squeezed; any other shape raises)."""
        value = jnp.asarray(value)
        event_dim = len(self.event_shape)
        if value.shape[value.ndim - event_dim :] != self.event_shape:
            raise ValueError(
                f"Unnormalized: value of shape {value.shape} does not end in the event shape "
                f"{self.event_shape}."
            )
        energy = self.energy_fn(value)
        expected = value.shape[: value.ndim - event_dim]
        if jnp.shape(energy) != expected:
            # only an MLP's trailing (..., 1) output (or a single energy) is reshaped: any other
            # shape of the right size, e.g. (3, 2) for a batch (2, 3), would mix up examples
            if jnp.shape(energy) == expected + (1,) or jnp.size(energy) == 1 == math.prod(expected):
                energy = jnp.reshape(energy, expected)
            else:
                raise ValueError(
                    f"Unnormalized: `energy_fn` returned shape {jnp.shape(energy)} for a value of "
                    f"shape {value.shape}; expected {expected} (one energy per event of shape "
                    f"{self.event_shape})."
                )
        return energy

    def log_prob(self, value):
        """``-E(value) - log_Z``. With ``validate_args=True`` a concrete ``value`` outside the
        support warns (NumPyro's check), and a non-finite energy raises naming ``energy_fn``."""
        if self._validate_args:
            self._validate_sample(value)
        energy = self.energy(value)
        if self._validate_args and is_concrete(energy):
            bad = ~np.isfinite(np.asarray(energy))
            if bad.any():
                raise ValueError(
                    f"Unnormalized: `energy_fn` returned {int(bad.sum())} non-finite value(s) "
                    f"(NaN or inf) of {bad.size}; the log density is undefined there."
                )
        log_prob = -energy
        if self.log_Z is not None:
            log_prob = log_prob - self.log_Z
        return log_prob

    def sample(self, key, sample_shape=()):
        if self._support.is_discrete:
            raise NotImplementedError(_discrete_sample_error(self))
        raise NotImplementedError(_SAMPLE_ERROR)

    def expand(self, batch_shape):
        batch_shape = tuple(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        return Unnormalized(
            self.energy_fn,
            self.event_shape,
            self._support,
            self.log_Z,
            annealing_path=self.annealing_path,
            batch_shape=batch_shape,
            validate_args=self._validate_args,
        )


def energy_factor(name: str, energy):
    r"""Add an energy term to the model: ``numpyro.factor(name, -energy)``.

    The model's log joint gains :math:`-E`, i.e. its potential energy gains :math:`E`.

    :param str name: site name.
    :param energy: a scalar or array of energies (summed by ``numpyro.factor``).
    """
    return numpyro.factor(name, -energy)
