"""Fakes for what cannot run on a test machine (each named as a fake)."""
