"""``TaskGeometry``: the inner products of a step's per-task gradients that the MER diagnostics read.

Every number of the diagnostics (paper App. A.8, Eqs. 3–6; RGB's GMAE / SD-MAE, Def. 2.8; the
cosines between the update and each task gradient) is a function of inner products among the
rows of ``G`` ([T, D], the per-task gradients of the shared parameters) and with two D-vectors:
the shared update ``v`` and, for RGB, the EMA direction ``d_t``. A ``TaskGeometry`` holds exactly
those T-sized numbers:

* on the matrix path, the diagnostics compute it from ``G`` (:meth:`TaskGeometry.from_grads`);
* on the Gramian path ``G`` is never formed: the weighting keeps ``K = G Gᵀ`` when it computes it
  (``AbsWeighting._get_gramian_and_product``) and adds the products of its update from the update's
  coefficients, ``v = Gᵀ w + β d_t`` (:meth:`TaskGeometry.with_update`): ``G v = K w + β G d_t`` and
  ``‖v‖² = wᵀ K w + 2β wᵀ G d_t + β² ‖d_t‖²`` — no D-sized work at all.

All fields are float64 (the diagnostics' precision), on the device of the gradients.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["TaskGeometry"]


@dataclass(frozen=True)
class TaskGeometry:
    """``K = G Gᵀ`` and, when known, ``G v`` / ``‖v‖²`` (the shared update ``v``) and
    ``G d_t`` / ``‖d_t‖²`` (RGB's EMA direction ``d_t``)."""

    gram: Tensor  # K = G Gᵀ, [T, T]
    update_product: Optional[Tensor] = None  # G v, [T]
    update_sq_norm: Optional[Tensor] = None  # ‖v‖², []
    ema_product: Optional[Tensor] = None  # G d_t, [T]
    ema_sq_norm: Optional[Tensor] = None  # ‖d_t‖², []

    @classmethod
    def from_gramian(cls, gram: Tensor) -> TaskGeometry:
        """The geometry of a Gramian ``K = G Gᵀ`` ([T, T]) alone (a float64 copy)."""
        if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
            raise ValueError(f"gram must be [T, T], got shape {tuple(gram.shape)}")
        return cls(gram=gram.detach().to(torch.float64, copy=True))

    @classmethod
    def from_grads(cls, grads: Tensor, update: Optional[Tensor] = None, ema: Optional[Tensor] = None) -> TaskGeometry:
        """The geometry of the per-task gradients ``grads`` ([T, D]; the matrix path), with the
        update ``update`` and the EMA direction ``ema`` ([D] each) when given: one ``[T, T]`` and
        two ``[T]`` products in float64."""
        if grads.dim() != 2:
            raise ValueError(f"grads must be [T, D], got shape {tuple(grads.shape)}")
        G = grads.detach().to(torch.float64)

        def products(vector: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
            if vector is None:
                return None, None
            v = vector.detach().to(G)
            return G @ v, v @ v

        update_product, update_sq_norm = products(update)
        ema_product, ema_sq_norm = products(ema)
        return cls(G @ G.transpose(0, 1), update_product, update_sq_norm, ema_product, ema_sq_norm)

    @property
    def task_num(self) -> int:
        """T."""
        return int(self.gram.shape[0])

    @property
    def norms(self) -> Tensor:
        """``‖g_i‖`` ([T]) from the diagonal of ``K``."""
        return torch.sqrt(torch.clamp(torch.diagonal(self.gram), min=0.0))

    def with_normalized_ema(self, cross: Tensor, sq_norm: Tensor, eps: float) -> TaskGeometry:
        """Add ``d_t`` given as ``Ḡ d_t`` (``cross``, [T], with ``ḡ_i = g_i / (‖g_i‖ + eps)``, as
        RGB's step computes it) and ``‖d_t‖²``: ``G d_t = (‖g_i‖ + eps) (Ḡ d_t)_i``."""
        cross64 = cross.detach().to(self.gram)
        return dataclasses.replace(self, ema_product=cross64 * (self.norms + eps),
                                   ema_sq_norm=torch.as_tensor(sq_norm).detach().to(self.gram).reshape(()))

    def with_update(self, weights: Tensor, ema_weight: Optional[Tensor | float] = None) -> TaskGeometry:
        """Add the update ``v = Gᵀ w + β d_t`` (``weights`` = w, [T]; ``ema_weight`` = β, needs
        :meth:`with_normalized_ema` first): ``G v = K w + β G d_t``, ``‖v‖² = wᵀ K w + 2β wᵀ G d_t +
        β² ‖d_t‖²``. A positive rescaling of ``v`` afterwards (gradient clipping) leaves the
        cosines of :func:`~LibMTL_rgb.gradient_diagnostics.update_alignment` unchanged."""
        w = torch.as_tensor(weights).detach().to(self.gram).reshape(-1)
        if w.numel() != self.task_num:
            raise ValueError(f"{w.numel()} update weights for {self.task_num} tasks")
        product = self.gram @ w
        sq_norm = w @ product
        if ema_weight is not None:
            if self.ema_product is None or self.ema_sq_norm is None:
                raise ValueError("an update along d_t needs G d_t and ‖d_t‖² (with_normalized_ema)")
            beta = torch.as_tensor(ema_weight).detach().to(self.gram).reshape(())
            sq_norm = sq_norm + 2.0 * beta * (w @ self.ema_product) + beta * beta * self.ema_sq_norm
            product = product + beta * self.ema_product
        return dataclasses.replace(self, update_product=product, update_sq_norm=torch.clamp(sq_norm, min=0.0))
