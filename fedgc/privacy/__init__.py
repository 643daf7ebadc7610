"""Differential privacy in both directions: sensitivities (Gramian bounds), mechanisms, accounting.

fedgc.privacy.sensitivity  L2 sensitivities of released sequences from the filter
fedgc.privacy.mechanism    clipping, the Gaussian mechanism, ReleaseNoise (what the server is told)
fedgc.privacy.local        the client's one privatisation of its projected measurements
fedgc.privacy.accounting   opacus RDP/PRV accountant: sigma from a whole-run target, epsilon spent
fedgc.privacy.server       noise on augmentations and the errors-in-variables correction

Nothing is imported here: the accountant loads opacus, which only private runs need.
"""
