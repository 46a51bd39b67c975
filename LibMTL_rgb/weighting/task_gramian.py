"""The Gramian ``G Gᵀ`` of the per-task gradients of the shared parameters, without the ``[T, D]`` matrix.

Most gradient methods only read inner products of the task gradients: their weights are a
function of the T×T Gramian ``K = G Gᵀ``, and their update is ``wᵀ G``, one backward pass of
``Σ_t w_t L_t``. RGB also reads ``G d`` for its consensus direction ``d`` (paper, Algorithm 1).
This module computes those three quantities from the loss vector's graph:

* :class:`GramianEngine` — ``K`` by torchjd's autogram engine (Algorithm 3 of Quinton & Rey,
  "Jacobian Descent for Multi-Objective Optimization"): forward hooks on the modules that
  own the shared parameters; one backward pass with T cotangents in which each module's
  ``[T, p_m]`` Jacobian is formed, turned into ``J_m J_mᵀ`` and freed. Peak memory: the
  largest module's Jacobian, not ``T × D``. Shared parameters that are not the whole parameter
  set of a module (Cross-stitch's stitching units) add their small block from
  :func:`chunked_gramian`: the Gramian is a sum over any partition of the parameters.
* :func:`chunked_gramian` — ``K`` from ``[T, D_c]`` slices of ``G``, one parameter chunk at a
  time (a backward pass per chunk). Used where the engine cannot run (the slices are exact
  and can be averaged over processes one by one: the Gramian of the global batch).
* :func:`task_grads_dot` — ``G v`` for a vector ``v`` over the shared parameters: the
  double-backward identity ``G v = ∂/∂u ⟨(∂L/∂θ)ᵀu, v⟩``.
* :func:`combine_task_grads` — ``C G`` for a few rows of coefficients ``C`` ([k, T]): k backward
  passes with the rows as cotangents.

The choice between this path and the matrix path is :class:`~LibMTL_rgb.weighting.abstract_weighting.AbsWeighting`'s
(``grad_method``, ``grad_memory_budget``); ``docs/performance.md`` has the measurements.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

#: Per-task gradient functions: ``(losses, params) -> ([T, D_params] matrix, reached flags)``.
TaskGradsFn = Callable[[Tensor, list], "tuple[Tensor, list[bool]]"]


def matrix_bytes(task_num: int, dim: int, dtype: torch.dtype) -> int:
    """Bytes of a ``[task_num, dim]`` matrix of ``dtype``."""
    return int(task_num) * int(dim) * torch.empty((), dtype=dtype).element_size()


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: CUDA's free memory, else the host's
    ``MemAvailable`` (``/proc/meminfo``; physical pages × page size where it is missing)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 1 << 62


def default_memory_budget(device: torch.device) -> int:
    """The default budget for the ``[T, D]`` matrix: a quarter of the memory free on ``device``
    (the matrix path holds the matrix, the batched backward's T cotangents and the method's
    own ``[T, D]`` temporaries at once)."""
    return available_memory(device) // 4


def module_cover(root: nn.Module, params: Sequence[nn.Parameter]) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The largest submodules of ``root`` whose trainable parameters are all in ``params``, and
    the parameters of ``params`` that no such module holds (used directly by a parent module,
    as Cross-stitch's units). No module returned is inside another."""
    wanted = {id(p) for p in params}
    modules: list[nn.Module] = []
    covered: set[int] = set()

    def visit(module: nn.Module) -> None:
        trainable = [p for p in module.parameters() if p.requires_grad]
        if trainable and all(id(p) in wanted for p in trainable):
            modules.append(module)
            covered.update(id(p) for p in trainable)
            return
        for child in module.children():
            visit(child)

    visit(root)
    return modules, [p for p in params if id(p) not in covered]


class GramianEngine:
    """``G Gᵀ`` over ``params`` for the losses of the forward pass that follows :meth:`arm`.

    ``arm(root)`` hooks the modules of :func:`module_cover` (call it before the forward pass; a
    pass with several model calls, e.g. ``multi_input``, arms once); :meth:`gramian` then
    computes the Gramian and disarms. ``leftover_grads`` computes the ``[T, D_rest]`` slice of
    ``G`` for the parameters no module covers."""

    def __init__(self, params: Sequence[nn.Parameter], leftover_grads: TaskGradsFn) -> None:
        self.params = list(params)
        self.leftover_grads = leftover_grads
        self._engine: Optional[object] = None
        self._leftover: list[nn.Parameter] = []

    @property
    def armed(self) -> bool:
        return self._engine is not None

    def arm(self, root: nn.Module) -> None:
        """Hook the shared modules of ``root`` for the next forward pass (no-op when armed)."""
        if self._engine is not None:
            return
        from torchjd.autogram import Engine

        modules, self._leftover = module_cover(root, self.params)
        self._engine = Engine(*modules, batch_dim=None) if modules else _NoModules()

    def disarm(self) -> None:
        """Remove the hooks (the torchjd engine removes them when it is released)."""
        self._engine = None

    def gramian(self, losses: Tensor) -> Tensor:
        """``G Gᵀ`` ([T, T]) for ``losses`` ([T]); the graph is kept. Raises ``RuntimeError``
        when the hooked forward pass does not match the losses (not armed, or a hooked module
        whose output did not reach them)."""
        engine, self._engine = self._engine, None
        if engine is None:
            raise RuntimeError("the Gramian engine was not armed before the forward pass")
        try:
            gram = None if isinstance(engine, _NoModules) else engine.compute_gramian(losses)  # type: ignore[attr-defined]
        except ValueError as err:  # torchjd: a module's forward without a backward, ...
            raise RuntimeError(str(err)) from err
        if self._leftover:
            rest = _slice_gramian(self.leftover_grads(losses, self._leftover)[0])
            gram = rest if gram is None else gram + rest.to(gram.dtype)
        if gram is None:
            gram = losses.new_zeros(len(losses), len(losses))
        return gram


class _NoModules:
    """Placeholder engine when every shared parameter is used directly by a parent module."""


def _slice_gramian(block: Tensor) -> Tensor:
    return block @ block.transpose(0, 1)


def parameter_chunks(params: Sequence[nn.Parameter], task_num: int, dtype: torch.dtype, budget: int) -> list[list[nn.Parameter]]:
    """Consecutive groups of ``params`` whose ``[T, D_c]`` slice fits ``budget`` bytes (a
    parameter larger than the budget is a group of its own)."""
    chunks: list[list[nn.Parameter]] = [[]]
    used = 0
    for param in params:
        size = matrix_bytes(task_num, param.numel(), dtype)
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(param)
        used += size
    return [chunk for chunk in chunks if chunk]


def chunked_gramian(
    losses: Tensor,
    chunks: Sequence[Sequence[nn.Parameter]],
    task_grads: TaskGradsFn,
    reduce: Optional[Callable[[Tensor], Tensor]] = None,
) -> tuple[Tensor, list[bool]]:
    """``G Gᵀ`` as ``Σ_c G_c G_cᵀ`` over parameter chunks (one ``task_grads`` call per chunk; the
    graph is kept). ``reduce`` maps each slice before it is used (the mean over processes: the
    Gramian of the global batch). Returns the Gramian and, per parameter, whether a task reached it."""
    gram: Optional[Tensor] = None
    reached: list[bool] = []
    for chunk in chunks:
        block, hit = task_grads(losses, list(chunk))
        if reduce is not None:
            block = reduce(block)
        part = _slice_gramian(block)
        gram = part if gram is None else gram + part
        reached.extend(hit)
    if gram is None:
        gram = losses.new_zeros(len(losses), len(losses))
    return gram, reached


def _flat_views(vector: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor]:
    views, offset = [], 0
    for param in params:
        views.append(vector[offset: offset + param.numel()].view_as(param))
        offset += param.numel()
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the shared parameters {offset}")
    return views


def task_grads_dot(losses: Tensor, params: Sequence[nn.Parameter], vector: Tensor) -> Tensor:
    """``G v`` ([T]) for ``v`` ([D], flattened like the shared parameters), without ``G``:
    ``G v = ∂/∂u ⟨Σ_t u_t ∇L_t, v⟩`` (a backward pass that builds its own graph, then its
    backward pass; every operation of the model needs a second derivative). The graph is kept."""
    cotangent = torch.zeros_like(losses, requires_grad=True)
    grads = torch.autograd.grad(losses, list(params), cotangent, create_graph=True, allow_unused=True)
    terms = [(g * v.to(g.dtype)).sum() for g, v in zip(grads, _flat_views(vector, params)) if g is not None]
    if not terms:
        return losses.new_zeros(len(losses)).detach()
    (product,) = torch.autograd.grad(torch.stack(terms).sum(), cotangent, allow_unused=True)
    return losses.new_zeros(len(losses)).detach() if product is None else product.detach()


def combine_task_grads(
    losses: Tensor, params: Sequence[nn.Parameter], rows: Tensor, dtype: torch.dtype
) -> tuple[Tensor, list[bool]]:
    """``rows @ G`` ([k, D]) for coefficient rows ([k, T]), one backward pass per row with the row
    as cotangent (the graph is kept); also, per parameter, whether a task reached it."""
    rows = rows.detach().to(device=losses.device, dtype=losses.dtype)
    out = torch.zeros(rows.shape[0], sum(p.numel() for p in params), device=losses.device, dtype=dtype)
    reached = [False] * len(params)
    for index, row in enumerate(rows):
        grads = torch.autograd.grad(losses, list(params), row, retain_graph=True, allow_unused=True)
        offset = 0
        for position, (param, grad) in enumerate(zip(params, grads)):
            if grad is not None:
                out[index, offset: offset + param.numel()] = grad.reshape(-1)
                reached[position] = True
            offset += param.numel()
    return out, reached
