"""Buffers whose shape is known only at the first step (e.g. ``[T, D]`` gradient trackers,
where ``D`` depends on ``rep_grad`` or a grouping option), kept in the ``state_dict``.

A method registers them empty (``register_resizable_buffer``) and replaces them on its first
step; loading a ``state_dict`` resizes them to the saved shape first, so checkpoints written
after any number of steps load into a freshly built model (``Trainer.resume``).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ResizableBuffers(nn.Module):
    """Mixin for weightings with lazily shaped buffers."""

    def register_resizable_buffer(self, name: str, dtype: torch.dtype = torch.float32) -> None:
        """Register an empty buffer ``name`` whose shape comes with the first step or a load."""
        self.register_buffer(name, torch.empty(0, dtype=dtype, device=getattr(self, "device", None)))
        names = set(getattr(self, "_resizable_buffer_names", ()))
        self._resizable_buffer_names = names | {name}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in getattr(self, "_resizable_buffer_names", ()):
            saved = state_dict.get(prefix + name)
            current = self._buffers.get(name)
            if saved is not None and current is not None and saved.shape != current.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
