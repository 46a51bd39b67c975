"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022): task
weights ``α`` solving the bargaining equation ``K α = 1/α`` for the Gramian ``K = G Gᵀ``.

The weights are a function of the ``[T, T]`` Gramian and a small step state only
(:func:`nash_weights`), computed as the authors' code does (and torchjd's ``NashMTL``, its
port): every ``update_weights_every`` steps, ``K̂ = K/ν`` with ``ν = ‖K‖_F`` and
``optim_niter`` iterations of their convex-concave procedure, warm-started from the previous
``α``; each iteration minimises ``1ᵀK̂α + φ'(α_t)ᵀ(α − α_t)/ν`` subject to
``log(ν α_i) + log((K̂α)_i) ≥ 0`` (i.e. ``α_i (Kα)_i ≥ 1``) with cvxpy/ECOS, where
``φ'(α_t) = 1/α_t + K̂ᵀ(1/(K̂α_t))`` linearises the concave part, and stops when
``‖K̂α_t − 1/α_t‖ < 1e-3`` or the iterate moves less than ``1e-6``.

The difference from their code is in how cvxpy is used, not in what is solved: their problem
puts ``φ'(α_t)`` and ``1/ν`` in as products of parameters, which makes it non-DPP, so cvxpy
compiles it again at every solve (≈ 22 of the 23 ms a solve took at T = 11; ECOS itself
< 1 ms). Here ``φ'(α_t)/ν`` is one parameter computed in numpy, the constant
``−φ'(α_t)ᵀα_t/ν`` (on which no minimiser depends) is left out, and the problem, built once
per task count, is DPP: a solve only maps the parameter values into ECOS's data. The weights
agree with torchjd's ``NashMTL`` to ECOS's tolerance (float64, over several steps:
``tests/test_nash_mtl.py``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.torchjd_adapter import TorchJDAggregation

if TYPE_CHECKING:
    from torchjd.aggregation import Aggregator

#: The authors' stopping rule: the bargaining residual ``‖Kα − 1/α‖`` (``1/(α + 1e-10)``) ...
BARGAINING_RESIDUAL_TOLERANCE = 1e-3
#: ... or the step of the iterate.
ITERATE_STEP_TOLERANCE = 1e-6
#: ECOS's iteration limit in the authors' code.
ECOS_MAX_ITERS = 100


class BargainingProblem:
    """One iteration of the authors' convex-concave procedure for ``T`` tasks, a DPP cvxpy
    problem built once: ``min_α 1ᵀKα + cᵀα`` s.t. ``−log(ν α_i) − log((Kα)_i) ≤ 0``,
    ``α ≥ 0``, with parameters ``K`` (normalised Gramian), ``ν`` and ``c = φ'(α_t)/ν``."""

    def __init__(self, task_num: int) -> None:
        import cvxpy as cp

        self.alpha = cp.Variable(shape=(task_num,), nonneg=True)
        self.gram = cp.Parameter(shape=(task_num, task_num), value=np.eye(task_num))
        self.scale = cp.Parameter(shape=(1,), value=np.ones(1))
        self.linear = cp.Parameter(shape=(task_num,), value=np.zeros(task_num))
        gram_alpha = self.gram @ self.alpha
        constraints = [-cp.log(self.alpha[i] * self.scale) - cp.log(gram_alpha[i]) <= 0 for i in range(task_num)]
        self.problem = cp.Problem(cp.Minimize(cp.sum(gram_alpha) + self.linear @ self.alpha), constraints)

    def solve(self, gram: np.ndarray, scale: float, start: np.ndarray, iterations: int) -> np.ndarray:
        """Up to ``iterations`` steps from ``start`` on the normalised Gramian ``gram``
        (``K/ν``, float64) as the authors' ``solve_optimization``: a failed ECOS call keeps the
        iterate; returns the last iterate."""
        import cvxpy as cp

        self.gram.value = gram
        self.scale.value = np.array([scale])
        alpha_t = start
        for _ in range(iterations):
            self.alpha.value = alpha_t
            # φ'(α_t)/ν, the gradient of the concave part linearised at α_t (their prvs_phi_tag)
            self.linear.value = (1.0 / alpha_t + (1.0 / (gram @ alpha_t)) @ gram) / scale
            try:
                self.problem.solve(solver=cp.ECOS, warm_start=True, max_iters=ECOS_MAX_ITERS)
            except (cp.SolverError, ValueError):  # as the authors / torchjd: keep the iterate
                self.alpha.value = alpha_t
            solution = self.alpha.value
            if (solution is None
                    or np.linalg.norm(gram @ alpha_t - 1 / (alpha_t + 1e-10)) < BARGAINING_RESIDUAL_TOLERANCE
                    or np.linalg.norm(solution - alpha_t) < ITERATE_STEP_TOLERANCE):
                break
            alpha_t = solution
        return alpha_t


@functools.lru_cache(maxsize=None)
def bargaining_problem(task_num: int) -> BargainingProblem:
    """The problem for ``task_num`` tasks (built, and compiled by cvxpy, once per process)."""
    return BargainingProblem(task_num)


@dataclass
class NashState:
    """What Nash-MTL carries between steps: the last ``α`` (the warm start, ones at first) and
    the step counter."""

    prev_alpha: np.ndarray
    step: int = 0

    @classmethod
    def initial(cls, task_num: int) -> NashState:
        """The state before the first step: ``α = 1``, step 0 (as the authors' code)."""
        return cls(prev_alpha=np.ones(task_num, dtype=np.float64))


def nash_weights(gram: Tensor, state: NashState, options: Mapping[str, Any]) -> Tensor:
    """Nash-MTL's task weights ``α`` from the ``[T, T]`` Gramian ``K = G Gᵀ`` (Navon et al.,
    Algorithm 1): every ``options['update_weights_every']`` steps (from the first) the
    bargaining solution by ``options['optim_niter']`` iterations from ``state.prev_alpha`` on
    ``K/‖K‖_F`` (normalised in ``K``'s dtype, as their code), else the previous ``α``.
    Updates ``state``; the weights come back in ``gram``'s dtype and device (not clipped:
    ``max_norm`` is applied to the update, by the caller)."""
    if state.step % options["update_weights_every"] == 0:
        host = gram.detach().cpu()  # one transfer: the solver runs on the host
        scale = torch.linalg.norm(host)
        normalised = (host / scale).to(torch.float64).numpy()  # exact widening of their float32
        state.prev_alpha = bargaining_problem(gram.shape[0]).solve(normalised, float(scale), state.prev_alpha, options["optim_niter"])
    state.step += 1
    return torch.from_numpy(np.asarray(state.prev_alpha, dtype=np.float64)).to(device=gram.device, dtype=gram.dtype)


@functools.lru_cache(maxsize=None)
def _nash_weighting_class() -> type:
    """``NashGramWeighting``: a torchjd ``Weighting`` of the Gramian giving :func:`nash_weights`
    (defined on first use, so importing this module does not import torchjd)."""
    from torchjd.aggregation import Weighting

    class NashGramWeighting(Weighting):
        """torchjd ``Weighting`` of the Gramian: Nash-MTL's α, with its step state."""

        def __init__(self, state: NashState, options: Mapping[str, Any]) -> None:
            super().__init__()
            self.state = state
            self.options = dict(options)

        def forward(self, gramian: Tensor, /) -> Tensor:
            return nash_weights(gramian, self.state, self.options)

    return NashGramWeighting


@WEIGHTINGS.register
class Nash_MTL(TorchJDAggregation):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution ``Gᵀ G α = 1/α``
    (:func:`nash_weights`: the authors' cvxpy procedure, ``--optim_niter`` iterations, every
    ``--update_weights_every`` steps), direction the shared gradient's norm clipped to
    ``--max_norm`` (the returned α and the heads' ``α_t ∇L_t`` are not clipped, as in the
    authors' code and LibMTL). The warm start and step counter live in the buffers
    ``nash_prev_alpha`` and ``nash_step``."""

    task_num: int  # set by the model this weighting is mixed into (AbsWeighting)
    nash_prev_alpha: Tensor  # buffers (init_param)
    nash_step: Tensor

    hyperparameters = (
        Hyperparameter("update_weights_every", 1, "Nash_MTL: recompute the weights every this many steps", minimum=1),
        Hyperparameter("optim_niter", 20, "Nash_MTL: iterations of the bargaining solver", minimum=1),
        Hyperparameter("max_norm", 1.0, "Nash_MTL: clip the norm of the update to this (0 disables)", minimum=0.0),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("nash_prev_alpha", torch.ones(self.task_num, dtype=torch.float64))
        self.register_buffer("nash_step", torch.zeros((), dtype=torch.long))
        self._nash_state = NashState.initial(self.task_num)  # the working copy of the buffers

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        from torchjd.aggregation import GramianWeightedAggregator

        # the weights are the bargaining solution α; the clipping is applied to the shared
        # gradient only (after_update), as the authors' code and LibMTL clip after Σ α_t L_t
        return GramianWeightedAggregator(_nash_weighting_class()(self._nash_state, options))

    def after_update(self, options: dict[str, Any]) -> None:
        if options["max_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(self._share_param_list(), options["max_norm"])

    def load_aggregator_state(self, aggregator: Aggregator, grads: Tensor) -> None:
        self._nash_state.prev_alpha = self.nash_prev_alpha.cpu().numpy().copy()
        self._nash_state.step = int(self.nash_step)

    def store_aggregator_state(self, aggregator: Aggregator) -> None:
        self.nash_prev_alpha.copy_(torch.from_numpy(np.asarray(self._nash_state.prev_alpha, dtype=np.float64)))
        self.nash_step.fill_(self._nash_state.step)
