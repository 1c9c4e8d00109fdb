r"""The protocol every classical model follows: parameters in, energies, sites and samplers out.

A model object holds only its *structure* (sizes, lattice shape, names), fixed at construction;
its parameters are a dict passed explicitly to every method, so a model never remembers values
from a trace and every method is a pure function of ``(params, x)``:

======================================  ======================================================
``init_params(rng_key, data, ...)``     a parameter dict (a pytree of arrays)
``energy(params, x)``                   :math:`E_\theta(x)`, ``(..., *event_shape) -> (...)``
``logdensity(params, x)``               :math:`-E_\theta(x)` (BlackJAX's convention)
``distribution(params)``                an :class:`~numpyro_ebm.Unnormalized` site carrying the
                                        model's :class:`~numpyro_ebm.AnnealingPath`
``model(data, subsample_size=...)``     a NumPyro model for ``SVI``: ``numpyro.param`` sites
                                        ``f"{name}_{key}"`` and the observed site ``site``
``get_params(svi_params)``              the parameter dict back from ``svi_result.params``
``annealing_path(params)``              exact samplers of :math:`\exp f_\beta` for
                                        :math:`\beta \in [0, 1]` (AIS, tempering, CD/PCD)
``kernel(params)``                      the exact sampler at :math:`\beta = 1`, a built
                                        ``blackjax.SamplingAlgorithm``
``sample(rng_key, params, ...)``        chains of that sampler (:func:`numpyro_ebm.sample_chains`)
``log_partition(params)``               exact :math:`\log Z` where it is tractable
``logz_ais(rng_key, params, ...)``      :math:`\log Z` by AIS along ``annealing_path``
======================================  ======================================================

Training goes through ``SVI`` with the library's estimators, e.g.
``SVI(rbm.model, no_guide, optax.sgd(0.1), loss=ContrastiveDivergence(None, num_steps=1))``: with
``kernel=None`` the contrastive estimators run the site distribution's own sampler.
"""

from __future__ import annotations

import jax.numpy as jnp

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.annealing import AnnealingPath
from numpyro_ebm.sampling.chains import ChainResult, sample_chains

__all__ = ["EnergyModel", "check_param_dict"]


def check_param_dict(owner: str, params, shapes: dict) -> dict:
    """Check ``params`` against ``{key: shape}`` (only where the values are concrete arrays or
    shapes are known); raise naming the key and the expected shape."""
    if not isinstance(params, dict):
        raise TypeError(
            f"{owner}: `params` must be a dict with keys {sorted(shapes)} (from `init_params` or "
            f"`get_params(svi_result.params)`), got {type(params).__name__}."
        )
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{owner}: `params` lacks {missing}; expected keys {sorted(shapes)}.")
    unknown = [k for k in params if k not in shapes]
    if unknown:
        raise ValueError(f"{owner}: `params` has unknown keys {unknown}; expected {sorted(shapes)}.")
    for k, shape in shapes.items():
        if shape is not None and tuple(jnp.shape(params[k])) != tuple(shape):
            raise ValueError(
                f"{owner}: `params['{k}']` has shape {tuple(jnp.shape(params[k]))}, expected "
                f"{tuple(shape)}."
            )
    return params


class EnergyModel:
    """Base of the classical models (see the module docstring for the protocol).

    Subclasses set ``name``, ``site`` and ``event_shape`` and implement ``init_params``,
    ``param_shapes``, ``energy`` and ``model``; models with an exact sampler implement
    ``annealing_path`` (and get ``kernel``, ``sample`` and ``logz_ais`` from here); models with a
    tractable normalizer implement ``log_partition``.
    """

    name: str = "model"
    site: str = "x"
    event_shape: tuple = ()
    support = None  # a numpyro constraint; None means real

    def set_names(self, name: str, site: str | None, site_suffix: str | None) -> None:
        """Set ``name`` (the prefix of the ``numpyro.param`` sites) and ``site`` (the observed
        site; default ``f"{name}_{site_suffix}"``, or ``name`` when ``site_suffix`` is None)."""
        if not isinstance(name, str) or not (site is None or isinstance(site, str)):
            raise TypeError(
                f"{type(self).__name__}: `name` and `site` must be str, got {name!r}, {site!r}."
            )
        self.name = name
        if site is None:
            site = name if site_suffix is None else f"{name}_{site_suffix}"
        self.site = site

    # -- parameters ----------------------------------------------------------------------------

    @property
    def param_shapes(self) -> dict:
        """``{key: shape}`` of the parameter dict (``None`` where the shape is free)."""
        raise NotImplementedError

    def check_params(self, params) -> dict:
        """Raise a clear error when ``params`` does not fit this model; return it."""
        return check_param_dict(repr(self), params, self.param_shapes)

    def init_params(self, rng_key=None, data=None) -> dict:
        raise NotImplementedError

    def get_params(self, svi_params: dict) -> dict:
        """The parameter dict from ``SVI``'s ``{f"{name}_{key}": value}`` (``svi_result.params``)."""
        missing = [f"{self.name}_{k}" for k in self.param_shapes if f"{self.name}_{k}" not in svi_params]
        if missing:
            raise ValueError(
                f"{self!r}.get_params: `svi_params` has no site(s) {missing}; its sites are "
                f"{sorted(svi_params)}. Were they trained with this model's `model` (same `name`)?"
            )
        return {k: svi_params[f"{self.name}_{k}"] for k in self.param_shapes}

    # -- energies and sites ----------------------------------------------------------------------

    def energy(self, params, x):
        raise NotImplementedError

    def logdensity(self, params, x):
        r""":math:`\log p(x) = -E(x)` up to :math:`\log Z`; shape ``(...)``."""
        return -self.energy(params, x)

    def distribution(self, params) -> Unnormalized:
        """This model as a NumPyro site, carrying its annealing path (exact sampler) if any."""
        kwargs = {} if self.support is None else {"support": self.support}
        return Unnormalized(
            lambda x: self.energy(params, x),
            self.event_shape,
            annealing_path=self._path_or_none(params),
            **kwargs,
        )

    def model(self, data=None, *, subsample_size: int | None = None):
        raise NotImplementedError

    # -- samplers --------------------------------------------------------------------------------

    def annealing_path(self, params) -> AnnealingPath:
        raise NotImplementedError(
            f"{type(self).__name__} has no exact sampler; sample `model.distribution(params)` with "
            "a kernel factory, e.g. `sample_chains(key, dist, functools.partial(blackjax.mala, "
            "step_size=0.1), init_positions, num_steps)`."
        )

    def _path_or_none(self, params):
        try:
            return self.annealing_path(params)
        except NotImplementedError:
            return None

    def kernel(self, params):
        """The exact sampler of ``exp(-E)``: a built ``blackjax.SamplingAlgorithm``."""
        return self.annealing_path(params).kernel(1.0)

    def sample(
        self, rng_key, params, num_chains: int, num_steps: int, num_samples: int = 0,
        thin: int = 1, init_positions=None,
    ) -> ChainResult:
        """``num_chains`` chains of :meth:`kernel` from draws of the path's base (or from
        ``init_positions``), with :func:`numpyro_ebm.sample_chains`."""
        import jax

        init_key, run_key = jax.random.split(rng_key)
        path = self.annealing_path(params)
        if init_positions is None:
            init_positions = path.sample_base(init_key, num_chains)
        return sample_chains(
            run_key, self.distribution(params), path.kernel(1.0), init_positions, num_steps,
            num_samples, thin,
        )

    # -- partition function ----------------------------------------------------------------------

    def log_partition(self, params):
        raise NotImplementedError(
            f"{type(self).__name__}.log_partition: no exact log Z for this model; use "
            "`model.logz_ais(rng_key, params)`."
        )

    def logz_ais(self, rng_key, params, **kwargs):
        """:math:`\\log Z` by annealed importance sampling along :meth:`annealing_path`
        (keyword arguments as :func:`numpyro_ebm.logz_ais`)."""
        from numpyro_ebm.evaluation.ais import logz_ais

        return logz_ais(rng_key, self.annealing_path(params), **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}()"
