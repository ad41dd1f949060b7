"""fedarena: poisoning attacks and defenses in federated learning, measured and reproduced."""

__version__ = "0.1.0"
