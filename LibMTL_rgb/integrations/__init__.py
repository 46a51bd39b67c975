"""Adapters that put LibMTL_rgb's methods into other code bases.

- :mod:`LibMTL_rgb.integrations.libmtl`: ``register()`` adds ``--weighting RGB`` to an
  installed LibMTL (its ``Trainer``, ``LibMTL_args`` and ``prepare_args``).

The submodules import their host library only when used, so this package imports without them.
"""
