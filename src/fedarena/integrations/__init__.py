"""Bridges to other FL frameworks (optional extras): :mod:`fedarena.integrations.flower`."""
