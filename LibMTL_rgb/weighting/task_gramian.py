"""The Gramian ``G Gᵀ`` of the per-task gradients of the shared parameters, without the ``[T, D]`` matrix.

Most gradient methods only read inner products of the task gradients: their weights are a
function of the T×T Gramian ``K = G Gᵀ``, and their update is ``wᵀ G``, one backward pass of
``Σ_t w_t L_t``. RGB also reads ``G d`` for its consensus direction ``d`` (paper, Algorithm 1).
This module computes those three quantities from the loss vector's graph:

* :class:`GramianEngine` — ``K`` (and ``G v`` for a given vector ``v``) by torchjd's autogram
  engine (Algorithm 3 of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization"):
  forward hooks on the modules that own the shared parameters; one backward pass with T
  cotangents in which each module's ``[T, p_m]`` Jacobian ``J_m`` is formed, turned into
  ``J_m J_mᵀ`` (and ``J_m v_m``) and freed. Peak memory: the largest module's Jacobian, not
  ``T × D``. Shared parameters that are not the whole parameter set of a module
  (Cross-stitch's stitching units) add their small block from a slice of ``G``: ``K`` and
  ``G v`` are sums over any partition of the parameters.
* :func:`chunked_gramian` — ``K`` (and ``G v``) from ``[T, D_c]`` slices of ``G``, one parameter
  chunk within the memory budget at a time (T backward passes per chunk). The default
  computer (``AbsWeighting.gramian_computer``): exact for any model, its memory bounded by the
  budget; the slices can be averaged over processes one by one (the Gramian of the global
  batch). The engine is opt-in: on the CPU conv nets of ``docs/performance.md`` it is slower
  than T passes and needs more memory than the matrix.
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


class _Products:
    """``G v`` accumulated module by module: each module's Jacobian times its slice of ``v``."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.offsets: dict[int, int] = {}
        offset = 0
        for param in params:
            self.offsets[id(param)] = offset
            offset += param.numel()
        self.vector: Optional[Tensor] = None
        self.total: Optional[Tensor] = None

    def add(self, module_params: Sequence[nn.Parameter], jacobian: Tensor) -> None:
        if self.vector is None:
            return
        vector = self.vector
        part = torch.cat([vector[self.offsets[id(p)]: self.offsets[id(p)] + p.numel()] for p in module_params])
        product = jacobian @ part.to(jacobian.dtype)
        self.total = product if self.total is None else self.total + product


def _engine_class() -> type:
    """torchjd's ``Engine`` whose per-module step also accumulates ``J_m v_m`` (:class:`_Products`):
    RGB's ``G d`` comes from the same backward pass as ``G Gᵀ``."""
    from torchjd.autogram import Engine
    from torchjd.autogram._gramian_computer import GramianComputer
    from torchjd.autogram._jacobian_computer import AutogradJacobianComputer

    class ModuleGramian(GramianComputer):
        """One module's ``J_m J_mᵀ`` once every forward call of it has sent its Jacobian back."""

        def __init__(self, module: nn.Module, products: _Products) -> None:
            self.jacobians = AutogradJacobianComputer(module)
            self.module_params = list(self.jacobians.rg_params.values())
            self.products = products
            self.pending = 0
            self.summed: Optional[Tensor] = None

        def track_forward_call(self) -> None:
            self.pending += 1

        def reset(self) -> None:
            self.pending, self.summed = 0, None

        def has_pending_jacobian(self) -> bool:
            return self.summed is not None

        def __call__(self, rg_outputs, grad_outputs, args, kwargs):
            jacobian = self.jacobians(rg_outputs, grad_outputs, args, kwargs)
            self.summed = jacobian if self.summed is None else self.summed + jacobian
            self.pending -= 1
            if self.pending > 0:
                return None
            jacobian, self.summed = self.summed, None
            self.products.add(self.module_params, jacobian)
            return jacobian @ jacobian.transpose(0, 1)

    class ProductEngine(Engine):
        def __init__(self, *modules: nn.Module, products: _Products) -> None:
            self.products = products
            self.computers: list[ModuleGramian] = []
            super().__init__(*modules, batch_dim=None)

        def _make_gramian_computer(self, module: nn.Module) -> GramianComputer:
            computer = ModuleGramian(module, self.products)
            self.computers.append(computer)
            return computer

        def modules_called_again(self) -> list[str]:
            """The hooked modules that ran more than once in this forward pass."""
            return [type(c.jacobians.module).__name__ for c in self.computers if c.pending > 1]

    return ProductEngine


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
        self._products = _Products(self.params)

    @property
    def armed(self) -> bool:
        return self._engine is not None

    def __getstate__(self) -> dict:
        """Copies and pickles of the model leave the hooks of a forward pass behind (disarmed)."""
        state = dict(self.__dict__)
        state["_engine"] = None
        return state

    def arm(self, root: nn.Module) -> None:
        """Hook the shared modules of ``root`` for the next forward pass (no-op when armed)."""
        if self._engine is not None:
            return
        modules, self._leftover = module_cover(root, self.params)
        self._products = _Products(self.params)
        self._engine = _engine_class()(*modules, products=self._products) if modules else _NoModules()

    def disarm(self) -> None:
        """Remove the hooks (the torchjd engine removes them when it is released)."""
        self._engine = None

    def gramian(self, losses: Tensor, vector: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """``(G Gᵀ, G v)`` ([T, T], [T]; ``None`` without ``vector``, [D] flattened like the shared
        parameters) for ``losses`` ([T]); the graph is kept. Raises ``RuntimeError`` when the
        hooked forward pass does not match the losses (not armed, or a hooked module whose
        output did not reach them)."""
        engine, self._engine = self._engine, None
        if engine is None:
            raise RuntimeError("the Gramian engine was not armed before the forward pass")
        repeated = [] if isinstance(engine, _NoModules) else engine.modules_called_again()  # type: ignore[attr-defined]
        if repeated:
            # torchjd's module Jacobian differentiates a call's output through everything behind it:
            # when a later call's input depends on an earlier call of the same module (a GRU cell
            # iterated, an expert fed its own output) its parameters would be counted twice
            raise EngineUnsupported(f"module(s) {sorted(set(repeated))} ran more than once in one forward pass")
        self._products.vector, self._products.total = vector, None
        try:
            gram = None if isinstance(engine, _NoModules) else engine.compute_gramian(losses)  # type: ignore[attr-defined]
        except ValueError as err:  # torchjd: a module's forward without a backward, ...
            raise RuntimeError(str(err)) from err
        product = self._products.total
        self._products.vector = self._products.total = None
        if self._leftover:
            block = self.leftover_grads(losses, self._leftover)[0]
            gram = _add(gram, _slice_gramian(block))
            if vector is not None:
                product = _add(product, block @ _gather(vector, self.params, self._leftover).to(block.dtype))
        if gram is None:
            gram = losses.new_zeros(len(losses), len(losses))
        if vector is not None and product is None:
            product = losses.new_zeros(len(losses))
        return gram, product


def _add(total: Optional[Tensor], part: Tensor) -> Tensor:
    return part if total is None else total + part.to(total.dtype)


def _gather(vector: Tensor, params: Sequence[nn.Parameter], subset: Sequence[nn.Parameter]) -> Tensor:
    """The entries of ``vector`` (flattened like ``params``) that belong to ``subset``, in its order."""
    offsets, offset = {}, 0
    for param in params:
        offsets[id(param)] = offset
        offset += param.numel()
    return torch.cat([vector[offsets[id(p)]: offsets[id(p)] + p.numel()] for p in subset])


class EngineUnsupported(RuntimeError):
    """The engine cannot compute this model's Gramian exactly (use parameter chunks)."""


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
    vector: Optional[Tensor] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """``(G Gᵀ, G v)`` as sums over parameter chunks ``c`` of ``G_c G_cᵀ`` and ``G_c v_c`` (one
    ``task_grads`` call per chunk; the graph is kept; ``G v`` is ``None`` without ``vector``,
    [D] flattened like the concatenated chunks). ``reduce`` maps each slice before it is used
    (the mean over processes: the Gramian of the global batch)."""
    gram: Optional[Tensor] = None
    product: Optional[Tensor] = None
    offset = 0
    for chunk in chunks:
        block, _ = task_grads(losses, list(chunk))
        if reduce is not None:
            block = reduce(block)
        gram = _add(gram, _slice_gramian(block))
        if vector is not None:
            product = _add(product, block @ vector[offset: offset + block.shape[1]].to(block.dtype))
        offset += block.shape[1]
    if gram is None:
        gram = losses.new_zeros(len(losses), len(losses))
    if vector is not None and product is None:
        product = losses.new_zeros(len(losses))
    return gram, product


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
