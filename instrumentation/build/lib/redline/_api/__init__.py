"""The implementation behind redline's public API (re-exported by :mod:`redline`)."""
