"""``AbsWeighting``: LibMTL's weighting contract and the one place gradients are plumbed.

LibMTL's Trainer builds ``class MTLmodel(Architecture, Weighting)``; a weighting may use
``self.task_num``, ``self.task_name``, ``self.device``, ``self.rep_grad``, ``self.rep`` /
``self.rep_tasks``, ``self.get_share_params()`` and ``self.zero_grad_share_params()`` from the
architecture, and ``self.epoch``, ``self.epochs``, ``self.train_loss_buffer`` set by the Trainer.

What differs from LibMTL is inside, not on the surface:

* the per-task gradients of the shared parameters come from ONE batched backward pass
  (``torch.vmap`` over ``torch.autograd.grad`` with the rows of the identity as cotangents)
  instead of T passes, when every operation of the model's backward has a batching rule;
  otherwise from T passes (detected once per model, with one ``BatchedGradFallbackWarning``).
  ``grad_method`` pins either path (``docs/performance.md`` has the measurements);
* each of the T passes (and each ``rep_grad`` pass) differentiates the task's own loss, the
  input of the Trainer's ``torch.stack``, not a row of the stacked vector, so it never runs
  through the other tasks' branches (``task_loss_outputs``);
* the gradient matrix is created on the model's device, flattening and writing back are
  single O(D) passes with precomputed offsets (LibMTL re-sums the sizes for every parameter,
  O(P^2)), and nothing is copied to the host.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import warnings
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.graph import GradientEdge

from LibMTL_rgb import distributed
from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting import task_gramian
from LibMTL_rgb.weighting.task_geometry import TaskGeometry

#: Values of ``AbsWeighting.grad_method``.
GRAD_METHODS = ("auto", "batched", "loop", "gramian")
#: Values of ``AbsWeighting.gradient_path()``.
GRADIENT_PATHS = ("matrix", "gramian", "chunked")
#: Values of ``AbsWeighting.gramian_computer``.
GRAMIAN_COMPUTERS = ("auto", "engine", "chunks")


class BatchedGradFallbackWarning(UserWarning):
    """The batched per-task backward is not possible for a model; T backward passes are used."""


class GramianFallbackWarning(UserWarning):
    """The Gramian engine could not follow a forward pass; the Gramian came from chunks of G."""


class MatrixMemoryError(ValueError):
    """A method that needs the whole ``[T, D]`` matrix was refused: it exceeds ``grad_memory_budget``."""


class AbsWeighting(nn.Module):
    """Base class of every weighting method (LibMTL's ``AbsWeighting``)."""

    #: Method options: CLI flags ``--name`` and ``weight_args`` keys (see ``registry.py``).
    hyperparameters: tuple[Hyperparameter, ...] = ()
    #: Whether the method can work on representation gradients (``rep_grad=True``).
    supports_rep_grad: bool = True
    #: How ``_compute_grad`` gets the per-task gradients of the shared parameters:
    #: ``"auto"``: one vmapped backward pass unless an operation of the model's backward has no
    #: batching rule (found out on the first call, then remembered; T passes from then on);
    #: ``"batched"``: always one vmapped pass, operations without a batching rule run once per
    #: task inside it (vmap's fallback); ``"loop"``: T backward passes (LibMTL's way).
    #: ``"gramian"``: no ``[T, D]`` matrix at all — the method receives the T×T Gramian ``G Gᵀ``
    #: (:meth:`_get_gramian`) and its update is one weighted backward pass (only methods with
    #: ``supports_gramian``). Whatever the value, a method with ``supports_gramian`` takes the
    #: Gramian path when the matrix would not fit ``grad_memory_budget`` (:meth:`gradient_path`).
    #: Set it on the class or on the model.
    grad_method: str = "auto"
    #: Whether the method's update needs only the Gramian ``G Gᵀ`` of the task gradients (and
    #: RGB's ``G d``): it then runs on the Gramian path (``docs/performance.md``).
    supports_gramian: bool = False
    #: Bytes the ``[T, D]`` matrix may take before a ``supports_gramian`` method switches to the
    #: Gramian path; ``None``: a quarter of the memory free on the model's device when the path is
    #: first chosen (:func:`~LibMTL_rgb.weighting.task_gramian.default_memory_budget`).
    grad_memory_budget: Optional[int] = None
    #: Whether the method can take ``G`` in chunks of parameters (its update of a parameter
    #: chunk needs only that chunk's ``[T, D_c]`` columns): beyond ``grad_memory_budget`` it then
    #: takes the chunked matrix path (``chunked_matrix.py``) instead of the whole matrix.
    supports_chunked_matrix: bool = False
    #: Why the method needs the whole ``[T, D]`` matrix (e.g. a ``[T, D]`` state); non-empty:
    #: beyond ``grad_memory_budget`` it is refused when the path is chosen (the Trainer's
    #: construction) with :class:`MatrixMemoryError`. Any other method that asks ``_get_grads``
    #: for a matrix over the budget is refused there, before the matrix is allocated.
    needs_full_matrix: str = ""
    #: How the Gramian path computes ``G Gᵀ``: ``"chunks"`` — the per-task passes (one cotangent
    #: at a time) on consecutive parameter chunks that fit ``grad_memory_budget``: memory one
    #: chunk plus one backward pass, time one pass per task and chunk (passes to late chunks are
    #: short); ``"engine"`` — one backward pass with T cotangents that forms each module's
    #: ``[T, p_m]`` Jacobian in turn (``task_gramian.GramianEngine``): memory T × (twice the
    #: largest module's parameters + the activations' cotangents), which on the CPU conv nets
    #: measured in ``docs/performance.md`` exceeds the matrix itself; ``"auto"``: chunks (the
    #: only computer whose memory the budget bounds). Data-parallel runs always use chunks
    #: (each chunk averaged over the processes).
    gramian_computer: str = "auto"
    #: The head rule (every weighting of this package): inside ``backward``, the task-specific
    #: parameters get ``∇ Σ_t w_t L_t`` for the weights ``w`` that ``backward`` returns (ones
    #: when it returns None). False (the default) keeps LibMTL's contract for LibMTL-derived
    #: custom weightings: ``mode='backward'`` leaves ``Σ_t ∇L_t`` in them, as LibMTL does.
    head_rule: bool = False
    #: With the head rule: False for the methods whose returned weights multiply other vectors
    #: than the current task gradients (DB-MTL's EMA gradients, MoCo's tracked ones): their
    #: heads get ``Σ_t ∇L_t``.
    heads_take_returned_weights: bool = True
    #: Tasks per vmapped backward (``torch.vmap``'s ``chunk_size``); ``None`` = all T at once.
    #: Smaller values cap the memory of the batched pass (it holds ``chunk`` cotangents).
    grad_chunk_size: Optional[int] = None

    def __init__(self) -> None:
        super().__init__()
        self.register_forward_pre_hook(_arm_gramian_engine, with_kwargs=True)

    def __init_subclass__(cls, **kwargs) -> None:
        """Every ``backward`` a subclass defines applies the head rule when it returns (for
        classes with ``head_rule = True``)."""
        super().__init_subclass__(**kwargs)
        if "backward" in vars(cls):
            cls.backward = _with_head_rule(vars(cls)["backward"])

    def init_param(self) -> None:
        """Called once after the model is built (LibMTL contract)."""

    # ------------------------------------------------------------------ checks
    def _check_rep_grad_support(self) -> None:
        if getattr(self, "rep_grad", False) and not self.supports_rep_grad:
            raise ValueError(
                f"{type(self).__name__} manipulates shared-parameter gradients and cannot run "
                "with rep_grad=True; use rep_grad=False (drop --rep_grad)."
            )

    def _raise_if_nonfinite(self, losses: Tensor, grads: Optional[Tensor] = None) -> None:
        """Raise ``FloatingPointError`` naming the first task with a non-finite loss/gradient.

        ``grads`` ([T, D]) is checked by its row sums (NaN and inf propagate through a sum: one
        read of the matrix, no [T, D] mask, one host sync with the losses); element by element
        only when a sum is not finite, which finite values can also cause (an overflow)."""
        finite_losses = torch.isfinite(losses.detach())
        grads = grads.detach() if grads is not None else None
        finite_grads = torch.isfinite(grads.sum(dim=-1)) if grads is not None else finite_losses
        if bool((finite_losses & finite_grads).all()):  # one host sync
            return
        if grads is not None:
            finite_grads = torch.isfinite(grads).all(dim=-1)
            if bool((finite_losses & finite_grads).all()):  # finite rows whose sums overflowed
                return
        names = list(getattr(self, "task_name", range(len(losses))))
        for index in range(len(losses)):
            if not bool(finite_losses[index]):
                raise FloatingPointError(f"task {names[index]!r} has a non-finite loss ({float(losses[index].detach())})")
        for index in range(len(losses)):
            if not bool(finite_grads[index]):
                raise FloatingPointError(f"task {names[index]!r} has a non-finite gradient")

    # ------------------------------------------------------------ plumbing
    def _share_param_list(self) -> list[nn.Parameter]:
        return [p for p in self.get_share_params() if p.requires_grad]

    def _compute_grad_dim(self) -> None:
        """Set ``grad_index`` (sizes), ``grad_offsets`` (cumulative) and ``grad_dim`` (D)."""
        self.grad_index = [p.numel() for p in self._share_param_list()]
        self.grad_offsets = np.concatenate([[0], np.cumsum(self.grad_index)]).astype(int).tolist()
        self.grad_dim = int(self.grad_offsets[-1])

    def _grad2vec(self, out: Optional[Tensor] = None) -> Tensor:
        """Flatten the shared parameters' ``.grad`` into ``out`` (a [D] vector); missing grads are 0."""
        params = self._share_param_list()
        if out is None:
            out = torch.empty(self.grad_dim, device=self.device, dtype=_grad_dtype(params))
        _flatten_into(out, [p.grad for p in params], params)
        return out

    def _compute_grad(self, losses: Tensor, mode: str = "backward", rep_grad: bool = False):
        """Per-task gradients: a [T, D] matrix of shared-parameter gradients, or, with
        ``rep_grad``, the gradients of the representation(s) (LibMTL semantics).

        ``mode='backward'``: afterwards every other parameter of the model holds the sum of
        its tasks' gradients in ``.grad`` (what T calls of ``loss.backward()`` leave), the
        shared parameters hold none (``_reset_grad`` writes them), and the graph is freed.
        ``mode='autograd'`` leaves every ``.grad`` alone and keeps the graph.
        """
        if mode not in ("backward", "autograd"):
            raise ValueError(f"mode must be 'backward' or 'autograd', got {mode!r}")
        if rep_grad:
            return self._compute_rep_grad(losses, mode)
        losses = _as_loss_vector(losses)
        self._compute_grad_dim()
        params = self._share_param_list()
        grads = self._per_task_grads(losses, params)
        self._had_grad = distributed.reached_on_any_rank(self._had_grad)  # data-parallel: same on every rank
        # data-parallel: the mean over processes, overlapping with the backward pass below
        pending = distributed.start_task_grad_mean(self, grads)
        if mode == "backward":
            for param in params:
                param.grad = None
            self._backward_task_specific(losses, params)
        pending.wait()
        return grads

    def _backward_task_specific(self, losses: Tensor, shared: list[nn.Parameter], retain_graph: bool = False) -> None:
        """The task-specific parameters' share of a ``mode='backward'`` call.

        Inside ``backward`` (the head rule, :meth:`_apply_head_rule`): the weighting's own
        parameters get ``Σ_t ∇L_t`` now; the model's task-specific parameters get
        ``∇ Σ_t w_t L_t`` once ``backward`` has returned its weights ``w``. Called directly
        (outside ``backward``, LibMTL's contract), every one gets ``Σ_t ∇L_t`` now."""
        others = self._task_specific_params(shared)
        if not others:
            return
        if not self._defers_heads():
            # one pass for the rest of the model: sum_t dL_t/dθ, as T backward passes leave it
            losses.backward(torch.ones_like(losses), inputs=others, retain_graph=retain_graph)
            return
        own_ids = {id(p) for p in self._weighting_params()}
        own = [p for p in others if id(p) in own_ids]
        heads = [p for p in others if id(p) not in own_ids]
        if own:
            losses.backward(torch.ones_like(losses), inputs=own, retain_graph=bool(heads) or retain_graph)
        if heads:
            self._deferred_head_losses.append((losses, heads))

    def _defers_heads(self) -> bool:
        """Whether ``mode='backward'`` leaves the heads to the head rule (inside ``backward``)."""
        return self.head_rule and getattr(self, "_backward_depth", 0) > 0

    def _weighting_params(self) -> list[nn.Parameter]:
        """The weighting's own learnable parameters among the non-shared ones (e.g. IMTL-L's
        loss scales): they get ``Σ_t ∇L_t`` in ``mode='backward'``, not the head rule."""
        return []

    def _apply_head_rule(self, weights) -> None:
        """Back-propagate ``Σ_t w_t L_t`` into the task-specific parameters deferred by
        ``mode='backward'`` calls, ``w`` = the weights ``backward`` returned (ones for None)."""
        deferred, self._deferred_head_losses = self._deferred_head_losses, []
        for losses, heads in deferred:
            if weights is None or not self.heads_take_returned_weights:
                weight = torch.ones_like(losses)
            else:
                weight = torch.as_tensor(np.asarray(weights, dtype=np.float64) if not isinstance(weights, Tensor) else weights)
                weight = weight.detach().to(device=losses.device, dtype=losses.dtype)
                if weight.numel() != losses.numel():
                    raise ValueError(f"{type(self).__name__}.backward returned {weight.numel()} weights for {losses.numel()} losses")
                weight = weight.reshape(losses.shape)
            losses.backward(weight, inputs=heads)

    def _per_task_grads(self, losses: Tensor, params: list[nn.Parameter]) -> Tensor:
        """The [T, D] matrix by the path ``grad_method`` selects (sets ``_had_grad``)."""
        method = self.grad_method
        if method not in GRAD_METHODS:
            raise ValueError(f"grad_method must be one of {GRAD_METHODS}, got {method!r}")
        if not params:
            self._had_grad = []
            return torch.empty(len(losses), 0, device=losses.device, dtype=_grad_dtype(params))
        if method == "gramian":  # slices of G on the Gramian path: T passes, one cotangent at a time (its memory bound)
            method = "loop"
        if method == "auto" and getattr(self, "_batched_grads_failed", False):
            method = "loop"
        if method != "loop":
            try:
                grads, self._had_grad = _batched_task_grads(losses, params, self.grad_chunk_size, strict=method == "auto")
                return grads
            except (RuntimeError, NotImplementedError) as err:
                if method == "batched":
                    raise
                self._batched_grads_failed = True
                warnings.warn(
                    f"{type(self).__name__}: the batched per-task backward failed ({_first_line(err)}); this model "
                    f"gets {len(losses)} backward passes per step from now on. Set grad_method='loop' to skip the "
                    "check, or grad_method='batched' to batch with vmap's per-task fallback for such operations.",
                    BatchedGradFallbackWarning,
                    stacklevel=4,
                )
        grads, self._had_grad = _looped_task_grads(losses, params)
        return grads

    # ------------------------------------------------------------ Gramian path
    def gradient_path(self) -> str:
        """``"matrix"`` (the ``[T, D]`` per-task gradients), ``"gramian"`` (only ``G Gᵀ``) or
        ``"chunked"`` (``G`` in chunks of parameters, ``chunked_matrix.py``), chosen once per
        model and setting: ``grad_method="gramian"`` asks for the Gramian path; otherwise, when
        the matrix would exceed ``grad_memory_budget``, a ``supports_gramian`` method takes the
        Gramian path and a ``supports_chunked_matrix`` one the chunked path, a method with
        ``needs_full_matrix`` is refused (:class:`MatrixMemoryError`) and any other is refused
        if it asks ``_get_grads`` for the matrix (``rep_grad`` keeps the matrix of the small
        representation gradients). ``gradient_path_reason`` says why. Raises ``ValueError`` for
        ``grad_method="gramian"`` on a method without ``supports_gramian``."""
        params = self._share_param_list()
        dim = sum(p.numel() for p in params)
        dtype = _grad_dtype(params)
        key = (self.grad_method, self.grad_memory_budget, bool(getattr(self, "rep_grad", False)), dim, dtype, self.task_num)
        cached = getattr(self, "_gradient_path_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        path, reason = self._choose_gradient_path(dim, dtype)
        self._gradient_path_cache = (key, path)
        self.gradient_path_reason = reason
        return path

    def _choose_gradient_path(self, dim: int, dtype: torch.dtype) -> tuple[str, str]:
        name = type(self).__name__
        self._matrix_refusal: Optional[str] = None
        if self.grad_method not in GRAD_METHODS:
            raise ValueError(f"grad_method must be one of {GRAD_METHODS}, got {self.grad_method!r}")
        if self.grad_method == "gramian" and not self.supports_gramian:
            raise ValueError(
                f"grad_method='gramian': {name} needs the per-task gradients themselves, not only their Gramian; "
                f"use grad_method 'auto', 'batched' or 'loop' (the methods that take the Gramian path: docs/performance.md)"
            )
        if getattr(self, "rep_grad", False):
            return "matrix", "rep_grad: the representation gradients are small"
        if self.grad_method == "gramian":
            return "gramian", "grad_method='gramian'"
        size = task_gramian.matrix_bytes(self.task_num, dim, dtype)
        budget = self._memory_budget()
        if size <= budget:
            return "matrix", f"the [{self.task_num}, {dim}] matrix takes {_readable_bytes(size)} (budget {_readable_bytes(budget)})"
        over = f"the [{self.task_num}, {dim}] matrix would take {_readable_bytes(size)}, over the budget of {_readable_bytes(budget)} (grad_memory_budget)"
        if self.supports_gramian:
            return "gramian", f"{over}: {name} runs on the Gramian G Gᵀ instead"
        if self.supports_chunked_matrix:
            return "chunked", f"{over}: {name} takes G in chunks of parameters that fit the budget"
        self._matrix_refusal = _matrix_refusal(name, self.task_num, dim, size, budget, self.needs_full_matrix)
        if self.needs_full_matrix:
            raise MatrixMemoryError(self._matrix_refusal)
        return "matrix", f"{over}: refused if {name} asks for it (_get_grads)"

    def _task_grad_slice(self, losses: Tensor, params: list[nn.Parameter]) -> tuple[Tensor, list[bool]]:
        """``[T, D_params]`` per-task gradients of ``params`` by the per-task path (no side effects)."""
        saved = getattr(self, "_had_grad", None)
        try:
            grads = self._per_task_grads(losses, params)
            return grads, list(self._had_grad)
        finally:
            self._had_grad = saved  # type: ignore[assignment]

    def _gramian_engine(self) -> task_gramian.GramianEngine:
        engine = getattr(self, "_gramian_engine_state", None)
        if engine is None:
            engine = task_gramian.GramianEngine(self._share_param_list(), self._task_grad_slice)
            self._gramian_engine_state = engine
        return engine

    def _get_gramian(self, losses: Tensor, mode: str = "backward") -> Tensor:
        """The Gramian ``K = G Gᵀ`` ([T, T]) of the per-task gradients of the shared parameters,
        without forming ``G`` (:meth:`_get_gramian_and_product`)."""
        return self._get_gramian_and_product(losses, None, mode)[0]

    def _get_gramian_and_product(
        self, losses: Tensor, vector: Optional[Tensor], mode: str = "backward"
    ) -> tuple[Tensor, Optional[Tensor]]:
        """``(G Gᵀ, G v)`` ([T, T], [T]; ``None`` without ``vector``, a [D] vector over the shared
        parameters) without holding ``G`` whole: by :meth:`gramian_computer_choice` — parameter
        chunks of ``G`` within the budget (in a data-parallel run each chunk averaged over the
        processes: the Gramian of the global batch), or ``task_gramian.GramianEngine`` (one
        backward pass; chunks where it cannot follow the model). The graph is kept for
        :meth:`_combine_task_grads`. ``mode='backward'`` treats the task-specific parameters as
        :meth:`_compute_grad` does and clears the shared ``.grad``."""
        if mode not in ("backward", "autograd"):
            raise ValueError(f"mode must be 'backward' or 'autograd', got {mode!r}")
        losses = _as_loss_vector(losses)
        self._compute_grad_dim()
        params = self._share_param_list()
        engine = self._gramian_engine()
        found = None
        if engine.armed and self.gramian_computer_choice() == "engine":
            try:
                found = engine.gramian(losses, vector)
            except task_gramian.EngineUnsupported as err:
                self._engine_unsupported = True
                warnings.warn(f"{type(self).__name__}: the Gramian engine cannot compute this model's Gramian exactly "
                              f"({_first_line(err)}); it comes from parameter chunks of G from now on.",
                              GramianFallbackWarning, stacklevel=3)
            except RuntimeError as err:
                warnings.warn(f"{type(self).__name__}: the Gramian engine could not follow this step's forward pass "
                              f"({_first_line(err)}); the Gramian comes from parameter chunks of G this step.",
                              GramianFallbackWarning, stacklevel=3)
        engine.disarm()
        if found is None:
            chunks = task_gramian.parameter_chunks(params, len(losses), _grad_dtype(params), self._memory_budget())
            reduce = self._mean_over_processes if distributed.is_active() else None
            found = task_gramian.chunked_gramian(losses, chunks, self._task_grad_slice, reduce, vector)
        gram, product = found
        self._keep_task_gramian(gram)
        if mode == "backward":
            for param in params:
                param.grad = None
            self._backward_task_specific(losses, params, retain_graph=True)
        return gram.detach(), None if product is None else product.detach()

    def _memory_budget(self) -> int:
        """``grad_memory_budget``, or the default from the free memory when first asked (the
        smallest over the processes of a data-parallel run: every process must take the same
        path and chunks), kept for the model's life."""
        budget = self.grad_memory_budget
        if budget is not None:
            return budget
        if getattr(self, "_default_memory_budget", None) is None:  # agreed once per model, then kept
            self._default_memory_budget = distributed.min_over_processes(task_gramian.default_memory_budget(torch.device(self.device)))
        return self._default_memory_budget

    def gramian_computer_choice(self) -> str:
        """``"engine"`` or ``"chunks"``: how this model's Gramian path computes ``G Gᵀ``
        (``gramian_computer``; ``"auto"``, data-parallel runs and models the engine cannot follow
        exactly — a module run twice in one forward pass — use chunks)."""
        choice = self.gramian_computer
        if choice not in GRAMIAN_COMPUTERS:
            raise ValueError(f"gramian_computer must be one of {GRAMIAN_COMPUTERS}, got {choice!r}")
        if distributed.is_active() or choice == "auto" or getattr(self, "_engine_unsupported", False):
            return "chunks"
        return choice

    def _combine_task_grads(self, losses: Tensor, rows: Tensor) -> Tensor:
        """``rows @ G`` ([k, D]) for coefficient rows ([k, T]), one backward pass per row (the
        mean over processes in a data-parallel run); sets which shared parameters were reached."""
        params = self._share_param_list()
        combined, reached = task_gramian.combine_task_grads(_as_loss_vector(losses), params, rows, _grad_dtype(params))
        self._had_grad = distributed.reached_on_any_rank(reached)
        return self._mean_over_processes(combined)

    def _mean_over_processes(self, tensor: Tensor) -> Tensor:
        """``tensor``'s mean over the processes of a data-parallel run (itself in one process):
        linear in ``G``, so the value for the global batch."""
        if not distributed.is_active():
            return tensor
        mean = distributed.start_task_grad_mean(self, tensor.contiguous()).wait()
        assert mean is not None
        return mean

    def _backward_weighted(self, losses: Tensor, weights: "Tensor | Sequence[float]") -> None:
        """The Gramian path's update: the shared parameters' ``.grad`` ← ``Σ_t w_t ∇L_t``."""
        weight = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device).reshape(1, -1)
        self._reset_grad(self._combine_task_grads(losses, weight)[0])
        self._keep_task_update(weight[0])

    def _task_specific_params(self, shared: list[nn.Parameter]) -> list[nn.Parameter]:
        """The model's trainable parameters that are not shared (decoders, task heads...)."""
        shared_ids = {id(p) for p in shared}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in shared_ids]

    def _compute_rep_grad(self, losses: Tensor, mode: str):
        if not hasattr(self, "rep_tasks"):
            raise ValueError("rep_grad=True needs an architecture that stores rep/rep_tasks")
        task_num = len(losses)
        outputs = task_loss_outputs(losses) if isinstance(losses, Tensor) else [(loss, None) for loss in losses]
        per_grads = []
        for tn, task in enumerate(self.task_name):
            rep_task = self.rep_tasks[task]
            output, cotangent = [outputs[tn][0]], None if outputs[tn][1] is None else [outputs[tn][1]]
            if mode == "backward" and not self._defers_heads():
                torch.autograd.backward(output, cotangent, retain_graph=tn + 1 < task_num)
                grad = rep_task.grad
                per_grads.append(torch.zeros_like(rep_task) if grad is None else grad.detach().clone())
            else:
                (grad,) = torch.autograd.grad(output, rep_task, cotangent, retain_graph=True, allow_unused=True)
                per_grads.append(torch.zeros_like(rep_task) if grad is None else grad)
        if mode == "backward" and self._defers_heads():
            self._backward_task_specific(_as_loss_vector(losses), self._share_param_list())
        if isinstance(self.rep, dict):
            return per_grads
        return torch.stack(per_grads)

    def _reset_grad(self, new_grads: Tensor) -> None:
        """Write a [D] vector into the shared parameters' ``.grad`` (one O(D) pass); shared
        parameters that no task reached in the last ``_compute_grad`` are left alone."""
        params = self._share_param_list()
        had_grad = getattr(self, "_had_grad", None)
        if had_grad is None or len(had_grad) != len(params):
            had_grad = [True] * len(params)
        for param, used, beg, end in zip(params, had_grad, self.grad_offsets[:-1], self.grad_offsets[1:]):
            if not used:
                continue
            value = new_grads[beg:end].view_as(param)
            if param.grad is None:
                param.grad = value.to(param.dtype, copy=True)
            else:
                param.grad.copy_(value)
        distributed.mark_shared_grads_written(self)

    def _get_grads(self, losses: Tensor, mode: str = "backward"):
        """LibMTL's ``_get_grads``: [T, D] grads, or ``[per_grads, grads]`` with ``rep_grad``."""
        if self.rep_grad:
            per_grads = self._compute_grad(losses, mode, rep_grad=True)
            if not isinstance(self.rep, dict):
                grads = per_grads.reshape(self.task_num, self.rep.size()[0], -1).sum(1)
            else:
                try:
                    grads = torch.stack(per_grads).sum(1).view(self.task_num, -1)
                except RuntimeError as err:
                    raise ValueError("the representations of different tasks must have the same shape") from err
            grads = distributed.mean_task_grads(grads)
            self._keep_task_grads(grads)
            return [per_grads, grads]
        self._compute_grad_dim()
        self.gradient_path()  # chosen once per setting: whether the matrix fits grad_memory_budget
        if self._matrix_refusal:
            raise MatrixMemoryError(self._matrix_refusal)
        grads = self._compute_grad(losses, mode)
        self._keep_task_grads(grads)
        return grads

    def _keep_task_grads(self, grads: Tensor) -> None:
        """``task_grads``: a copy of ``G`` when ``record_task_grads`` is set (the MER
        diagnostics set it on logged steps: ``gradient_diagnostics.py``)."""
        if getattr(self, "record_task_grads", False):
            self.task_grads = grads.detach().clone()

    def _keep_task_gramian(self, gram: Tensor) -> None:
        """The Gramian path's ``task_grads``: ``task_geometry`` (a :class:`TaskGeometry` of ``K = G Gᵀ``)
        when ``record_task_grads`` is set; the update's products follow (:meth:`_keep_task_update`)."""
        if getattr(self, "record_task_grads", False):
            self.task_geometry = TaskGeometry.from_gramian(gram)

    def _keep_task_update(self, weights: Tensor, ema_weight: Optional[Tensor] = None) -> None:
        """Add the update ``v = Gᵀ w (+ β d_t)`` to a kept ``task_geometry`` (``TaskGeometry.with_update``)."""
        geometry = getattr(self, "task_geometry", None)
        if getattr(self, "record_task_grads", False) and isinstance(geometry, TaskGeometry):
            self.task_geometry = geometry.with_update(weights, ema_weight)

    def _backward_new_grads(
        self, batch_weight: "Tensor | Sequence[float]", per_grads=None, grads: Optional[Tensor] = None
    ) -> None:
        """Apply task weights: to the representation(s) with ``rep_grad``, else to ``grads``."""
        if self.rep_grad:
            if not isinstance(self.rep, dict):
                weight = torch.as_tensor(batch_weight, device=per_grads.device, dtype=per_grads.dtype)
                transformed = torch.einsum("t,t...->...", weight, per_grads)
                self.rep.backward(transformed)
            else:
                for tn, task in enumerate(self.task_name):
                    self.rep[task].backward(batch_weight[tn] * per_grads[tn], retain_graph=tn + 1 < self.task_num)
        else:
            weight = torch.as_tensor(batch_weight, device=grads.device, dtype=grads.dtype)
            self._reset_grad(weight @ grads)

    # --------------------------------------------------------------- options
    @classmethod
    def method_hyperparameters(cls) -> tuple[Hyperparameter, ...]:
        """The hyper-parameters declared by the weighting classes in this class's MRO (the
        architecture's ``arch_args`` are not among them); the first declaration of a name wins."""
        found: dict[str, Hyperparameter] = {}
        for klass in cls.__mro__:
            if isinstance(klass, type) and issubclass(klass, AbsWeighting):
                for hp in vars(klass).get("hyperparameters", ()):
                    found.setdefault(hp.name, hp)
        return tuple(found.values())

    def method_options(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """This method's options (``weight_args``): the values in ``kwargs``, the declared
        ``Hyperparameter`` defaults for the missing ones — the one place a default is written.
        A key that no declared option names raises ``TypeError`` with the closest name."""
        declared = self.method_hyperparameters()
        names = [hp.name for hp in declared]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(names) if names else "none"
                raise TypeError(f"{type(self).__name__}.backward got an unknown option {key!r}{hint}; its options: {known}")
        return {hp.name: kwargs.get(hp.name, hp.default) for hp in declared}

    # --------------------------------------------------------------- method
    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        """Compute gradients for ``losses`` (shape [T]) and return the task weights (length T)."""
        raise NotImplementedError


def _with_head_rule(method):
    """Wrap a weighting's ``backward``: the outermost call collects the task-specific
    parameters' losses deferred by ``mode='backward'`` and, once the weights ``w`` are
    returned, back-propagates ``Σ_t w_t L_t`` into them (``docs/methods.md``, "Task-specific
    parameters")."""

    @functools.wraps(method)
    def backward(self, losses, *args, **kwargs):
        depth = getattr(self, "_backward_depth", 0)
        if depth == 0:
            self._deferred_head_losses = []
        self._backward_depth = depth + 1
        try:
            weights = method(self, losses, *args, **kwargs)
        except BaseException:
            if depth == 0:
                self._deferred_head_losses = []  # frees the graphs
            raise
        finally:
            self._backward_depth = depth
        if depth == 0:
            self._apply_head_rule(weights)
        return weights

    return backward


def _arm_gramian_engine(model: "AbsWeighting", args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: before a training forward pass on the Gramian path, hook the modules
    of the shared parameters for this step (``task_gramian.GramianEngine``; data-parallel runs
    use chunks). A step's first forward pass re-arms (a step that never reached ``backward``,
    e.g. one the non-finite guard skipped, leaves nothing behind); with ``multi_input`` the
    step's forward passes are one per task, the first with the first task's name. An
    evaluation pass (``eval()`` or no grad) disarms: the hooks never outlive a step."""
    if not hasattr(model, "task_num"):
        return
    engine = getattr(model, "_gramian_engine_state", None)
    if not (model.training and torch.is_grad_enabled()):
        if engine is not None:
            engine.disarm()  # an evaluation pass: a training forward pass left without backward is over
        return
    if not model.supports_gramian or model.gramian_computer != "engine":
        return  # two attribute reads on every other model's forward pass: the engine is opt-in
    if model.gradient_path() != "gramian" or model.gramian_computer_choice() != "engine":
        return
    engine = model._gramian_engine()
    task = kwargs.get("task_name", args[1] if len(args) > 1 else None)
    if task is None or task == model.task_name[0]:
        engine.disarm()
    engine.arm(model)


def _readable_bytes(size: int) -> str:
    """``size`` bytes in the largest unit that keeps a digit before the point (B, kB, MB, GB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


def _matrix_refusal(name: str, task_num: int, dim: int, size: int, budget: int, why: str) -> str:
    """The message of :class:`MatrixMemoryError`: what is needed, the budget, and what to do."""
    classes = {n: WEIGHTINGS.get(n) for n in WEIGHTINGS.names()}
    gramian = [n for n, c in classes.items() if getattr(c, "supports_gramian", False)]
    chunked = [n for n, c in classes.items() if getattr(c, "supports_chunked_matrix", False) and n not in gramian]
    reason = f" ({why})" if why else ""
    return (f"{name} needs the whole [{task_num}, {dim}] matrix of per-task gradients of the shared parameters{reason}: "
            f"{_readable_bytes(size)}, over the memory budget of {_readable_bytes(budget)} (grad_memory_budget; default: a quarter "
            f"of the memory free on the device). It is refused now rather than running out of memory. Use a method that "
            f"takes the Gramian path ({', '.join(gramian)}) or the chunked matrix path ({', '.join(chunked) or 'none'}), "
            f"a larger grad_memory_budget if the device has the memory, or a smaller model (fewer shared parameters).")


def _grad_dtype(params: Iterable[nn.Parameter]) -> torch.dtype:
    dtypes = {p.dtype for p in params}
    if not dtypes:
        return torch.get_default_dtype()
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _as_loss_vector(losses: "Tensor | Sequence[Tensor]") -> Tensor:
    """The losses as one [T] tensor that requires grad (clear error otherwise)."""
    if not isinstance(losses, Tensor):
        losses = torch.stack(list(losses))
    if losses.dim() != 1:
        raise ValueError(f"losses must be a [T] tensor (one scalar loss per task), got shape {tuple(losses.shape)}")
    if not losses.requires_grad:
        raise ValueError("losses do not require grad: compute them from the model's outputs with grad enabled")
    return losses


def _flatten_into(out: Tensor, grads: Sequence[Optional[Tensor]], params: Sequence[Tensor]) -> None:
    """``out`` ([D]) ← the concatenation of ``grads`` (``None`` counts as zeros), in one kernel."""
    if not grads:
        return
    parts = [p.new_zeros(p.numel()) if g is None else g.reshape(-1) for g, p in zip(grads, params)]
    torch.cat(parts, out=out)


def task_loss_outputs(losses: Tensor) -> list[tuple[Any, Optional[Tensor]]]:
    """Each task's own loss as ``(output, cotangent)`` for ``torch.autograd.grad``.

    For ``losses = torch.stack(per_task)`` (the Trainer's and LibMTL's ``_compute_loss``) the
    output is the graph edge into ``per_task[t]`` itself, so task ``t``'s backward pass never
    enters the other tasks' branches (row ``t`` of the stacked vector would send zeros through
    every branch that reaches the shared parameters: MTAN's attention, PLE's experts). The
    gradients are the same: ``∂L_t/∂θ`` either way. A dtype cast of the stack (the Trainer's
    bfloat16 → float32 under ``amp``) is looked through. Any other ``[T]`` tensor: row ``t``."""
    node = losses.grad_fn
    while type(node).__name__ == "ToCopyBackward0" and node.next_functions[0][0] is not None:
        node = node.next_functions[0][0]
    edges = getattr(node, "next_functions", ())
    if type(node).__name__ != "StackBackward0" or losses.dim() != 1 or len(edges) != len(losses):
        return [(loss, None) for loss in losses]
    one = torch.ones((), device=losses.device, dtype=losses.dtype)
    return [(loss, None) if edge is None else (GradientEdge(edge, index), one)
            for loss, (edge, index) in zip(losses, edges)]


def _looped_task_grads(losses: Tensor, params: list[nn.Parameter]) -> tuple[Tensor, list[bool]]:
    """T ``torch.autograd.grad`` passes (LibMTL's way): ``([T, D] matrix, reached)``."""
    dim = sum(p.numel() for p in params)
    grads = torch.empty(len(losses), dim, device=losses.device, dtype=_grad_dtype(params))
    reached = [False] * len(params)
    for task, (output, cotangent) in enumerate(task_loss_outputs(losses)):
        task_grads = torch.autograd.grad([output], params, None if cotangent is None else [cotangent],
                                         retain_graph=True, allow_unused=True)
        reached = [r or g is not None for r, g in zip(reached, task_grads)]
        _flatten_into(grads[task], task_grads, params)
    return grads, reached


def _batched_task_grads(
    losses: Tensor, params: list[nn.Parameter], chunk_size: Optional[int], strict: bool = True
) -> tuple[Tensor, list[bool]]:
    """One vmapped backward with the rows of the identity as cotangents: ``([T, D], reached)``.

    ``strict``: raise ``RuntimeError`` when an operation has no batching rule (vmap's slow
    per-sample fallback is switched off, so such a model is detected instead of silently
    slow); otherwise such operations run once per task. Data-dependent operations
    (``.item()``...) raise either way.
    """
    task_num = len(losses)
    dtype = _grad_dtype(params)
    reached = [False] * len(params)

    def vjp(cotangent: Tensor) -> tuple[Tensor, ...]:
        task_grads = torch.autograd.grad(losses, params, cotangent, retain_graph=True, allow_unused=True)
        reached[:] = [g is not None for g in task_grads]
        return tuple(g for g in task_grads if g is not None)

    basis = torch.eye(task_num, device=losses.device, dtype=losses.dtype)
    with _vmap_fallback_disabled() if strict else contextlib.nullcontext():
        found = iter(torch.vmap(vjp, chunk_size=chunk_size)(basis))
    blocks = [next(found).reshape(task_num, -1) if hit else None for hit in reached]
    parts = [losses.new_zeros(task_num, p.numel(), dtype=dtype) if b is None else b for b, p in zip(blocks, params)]
    grads = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return grads.to(dtype), reached


@contextlib.contextmanager
def _vmap_fallback_disabled() -> Iterator[None]:
    """Make vmap raise on operations without a batching rule instead of looping over the batch."""
    functorch = getattr(torch._C, "_functorch", None)
    is_enabled = getattr(functorch, "_is_vmap_fallback_enabled", None)
    set_enabled = getattr(functorch, "_set_vmap_fallback_enabled", None)
    if is_enabled is None or set_enabled is None:  # private switch gone: accept the slow fallback
        yield
        return
    previous = is_enabled()
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
