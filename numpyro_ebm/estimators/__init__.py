"""Estimators: losses for NumPyro's ``SVI`` that train the observed ``Unnormalized`` site(s)."""

from numpyro_ebm.estimators._site import EBMSite, EnergyLoss, no_guide, observed_ebm_sites

__all__ = ["EBMSite", "EnergyLoss", "no_guide", "observed_ebm_sites"]
