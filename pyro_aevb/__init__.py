"""pyro-aevb: Auto-Encoding Variational Bayes as a probabilistic program in Pyro."""

__version__ = "0.1.0"
