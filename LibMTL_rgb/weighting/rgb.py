"""``RGB``: Rotation-Based Gradient Balancing (paper §2.2, Algorithm 1, Eq. 1, Eq. 2) as a
LibMTL weighting — a thin adapter around the pure math in :mod:`LibMTL_rgb.rgb`."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.rgb import DEFAULT_INNER_LR, adaptive_num_steps, conflict, ema_dtype, proximity, rgb_step, rgb_step_from_gramian
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

#: Defaults chosen by the toy sweep (docs/toy.md).
DEFAULT_STEPS = 5
DEFAULT_LR = DEFAULT_INNER_LR


@WEIGHTINGS.register
class RGB(AbsWeighting):
    r"""Rotation-Based Gradient Balancing.

    Every step t = 1, 2, ... (Algorithm 1):

    1. per-task gradients ``g_i`` of the shared parameters, ``ḡ_i = g_i / (‖g_i‖ + ε)``;
    2. EMA consensus ``d_t = μ d_{t-1} + (1 − μ) y / (‖y‖ + ε)``, ``y = mean_i ḡ_i``,
       ``d_0 = 0``, updated at *every* step;
    3. if ``t mod rgb_interval == 0``: ``w_i`` (line 7), α from 0 by K steps of
       ``α ← clip(α − rgb_lr ∇L(α), 0, π/2)`` on Eq. 1, ``r_i = r_i(α)/(‖r_i(α)‖ + ε)``;
       otherwise ``r_i = ḡ_i``;
    4. the shared parameters' gradient becomes ``v = mean_i r_i`` (line 13); task-specific
       parameters keep their own task's gradient.

    With ``rgb_adaptive``, ``K_t = round(α_min + (α_max − α_min) s_t / (s_t + k_std))`` by
    Eq. 2 from the relative loss changes (``K_1 = α_min``; ``round`` is half-up; ``std`` is the
    unbiased sample std). The inner loop runs in Gram form on T×T numbers (``docs/rgb_math.md`` §2), so
    its cost does not grow with the number of shared parameters.

    Choices the paper leaves open (also in ``docs/rgb.md``): the inner solver is plain
    projected gradient descent with step ``rgb_lr`` (the paper says "optimize Eq. 1 for
    α_steps iterations"); ``d_0 = 0``; steps count from 1; the inner math runs in float64
    when the gradients are float64, else float32 (``rgb_step``'s default).

    ``backward`` returns ones (RGB changes directions, not weights). ``rep_grad=True`` is
    refused at construction: RGB rotates shared-parameter gradients and has no per-sample
    representation analogue. State (``rgb_ema``, ``rgb_ema_sq_norm``, ``rgb_step_count``,
    ``rgb_prev_losses``)
    lives in buffers, so it is saved and restored with the model's ``state_dict``.

    After each step ``self.rgb_diagnostics`` holds the mean/max rotation angle (radians), the
    K used, and conflict (App. A.8 Eq. 3) and proximity (Eq. 4) of the rotated gradients.

    Example:
        >>> import torch, torch.nn as nn
        >>> from LibMTL_rgb import Trainer
        >>> from LibMTL_rgb.loss import MSELoss
        >>> from LibMTL_rgb.metrics import L1Metric
        >>> tasks = {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]}
        ...          for t in ("a", "b")}
        >>> trainer = Trainer(tasks, "RGB", "HPS", lambda: nn.Linear(4, 8),
        ...                   nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks}), False, False,
        ...                   {"optim": "sgd", "lr": 0.1}, device="cpu", weight_args={"rgb_steps": 10})
        ... # doctest: +ELLIPSIS
        Total params: ...
        >>> x = torch.randn(16, 4)
        >>> out = trainer.model(x)
        >>> losses = torch.stack([out[t].pow(2).mean() for t in tasks])
        >>> trainer.model.backward(losses, rgb_steps=10).tolist()
        [1.0, 1.0]
        >>> trainer.model.rgb_diagnostics["steps"]
        10
    """

    supports_rep_grad = False
    head_rule = True
    supports_gramian = True  # a step reads G through G Gᵀ, G d_{t-1} and [2, T] @ G only
    hyperparameters = (
        Hyperparameter("rgb_mu", 0.9, "μ: EMA factor of the consensus direction d_t (Alg. 1 line 5)", minimum=0.0, maximum=1.0, exclusive_maximum=True),
        Hyperparameter("rgb_lambda", 0.0, "λ: weight of the proximity term of Eq. 1", minimum=0.0),
        Hyperparameter("rgb_steps", DEFAULT_STEPS, "K: inner projected-gradient steps on Eq. 1 (when not --rgb_adaptive)", minimum=0),
        Hyperparameter("rgb_lr", DEFAULT_LR, "step size of the inner projected gradient descent on Eq. 1", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("rgb_interval", 1, "update_interval: rotate at steps t with t mod interval == 0 (Alg. 1 line 6)", minimum=1),
        Hyperparameter("rgb_eps", 1e-8, "ε of Algorithm 1 (normalisations)", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("rgb_adaptive", False, "choose K per step by Eq. 2 from the relative loss changes"),
        Hyperparameter("rgb_min_steps", 5, "α_min of Eq. 2 (fewest inner steps)", minimum=0),
        Hyperparameter("rgb_max_steps", 50, "α_max of Eq. 2 (most inner steps)", minimum=0),
        Hyperparameter("rgb_k_std", 0.1, "k_std of Eq. 2 (> 0): sensitivity to the std of the relative loss changes", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("rgb_solver", "pgd", "inner solver: 'pgd' (K steps, the paper) or 'exact' (Eq. 1 to tolerance)", choices=("pgd", "exact")),
    )

    def init_param(self) -> None:
        self._check_rep_grad_support()
        self._compute_grad_dim()
        params = self._share_param_list()
        dtype = ema_dtype(params[0].dtype if params else torch.get_default_dtype())
        self.register_buffer("rgb_ema", torch.zeros(self.grad_dim, device=self.device, dtype=dtype))
        self.register_buffer("rgb_step_count", torch.zeros((), dtype=torch.long))
        # ‖d_t‖², carried from step to step (saves one pass over D; saved so resuming is exact)
        self.register_buffer("rgb_ema_sq_norm", torch.zeros((), device=self.device, dtype=dtype))
        self.register_buffer("rgb_prev_losses", torch.full((self.task_num,), math.nan, dtype=torch.float64))
        self.register_load_state_dict_post_hook(_sync_step_counter)
        self._rgb_t = 0
        self._rgb_last: dict = {}

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        o = self.method_options(kwargs)
        rgb_mu, rgb_lambda, rgb_steps, rgb_lr = o["rgb_mu"], o["rgb_lambda"], o["rgb_steps"], o["rgb_lr"]
        rgb_interval, rgb_eps, rgb_adaptive, rgb_solver = o["rgb_interval"], o["rgb_eps"], o["rgb_adaptive"], o["rgb_solver"]
        rgb_min_steps, rgb_max_steps, rgb_k_std = o["rgb_min_steps"], o["rgb_max_steps"], o["rgb_k_std"]
        _check_options(rgb_mu, rgb_steps, rgb_interval, rgb_eps, rgb_min_steps, rgb_max_steps, rgb_k_std, rgb_adaptive)
        t = self._rgb_t + 1
        rotate = t % rgb_interval == 0
        steps = rgb_steps
        if rgb_adaptive:
            prev = self.rgb_prev_losses if self._rgb_t > 0 else None  # K_1 = α_min
            steps = adaptive_num_steps(losses.detach(), prev, rgb_min_steps, rgb_max_steps, rgb_k_std, eps=rgb_eps)
        options = dict(mu=rgb_mu, lam=rgb_lambda, steps=steps, lr=rgb_lr, eps=rgb_eps, rotate=rotate, solver=rgb_solver,
                       ema_sq_norm=self.rgb_ema_sq_norm if t > 1 else None)
        ema = self.rgb_ema if t > 1 else None
        if self.gradient_path() == "gramian":
            # G is never formed: G Gᵀ and G d_{t-1} from one backward pass, [2, T] @ G from two
            gram, ema_product = self._get_gramian_and_product(losses, ema, mode="backward")
            result = rgb_step_from_gramian(gram, ema_product, lambda rows: self._combine_task_grads(losses, rows), ema,
                                           **options)
        else:
            result = rgb_step(self._get_grads(losses, mode="backward"), ema, **options)
        self._raise_if_nonfinite(losses, torch.diagonal(result.gram).unsqueeze(1))
        self.rgb_ema.copy_(result.ema)
        self.rgb_step_count.fill_(t)
        self.rgb_prev_losses.copy_(losses.detach())
        self._rgb_t = t
        self.rgb_ema_sq_norm.copy_(result.ema_sq_norm)
        self._reset_grad(result.direction)
        # keep only the small T-sized results: ``direction``/``ema`` share a [2, D] buffer
        self._rgb_last = {
            "rotated": result.rotated, "steps": result.steps, "angles": result.angles,
            "gram": result.gram, "rotated_gram": result.rotated_gram, "rotated_cross": result.rotated_cross,
        }
        return np.ones(self.task_num)

    @property
    def rgb_last_step(self) -> dict:
        """The T-sized tensors of the last step (no host transfer): ``rotated``, ``steps``,
        ``angles`` [T], ``gram`` (P = ḠḠᵀ) [T,T], ``rotated_gram`` (final r_i·r_j) [T,T] and
        ``rotated_cross`` (r_i·ḡ_i) [T]; empty before the first step."""
        return dict(self._rgb_last)

    @property
    def rgb_diagnostics(self) -> dict:
        """Diagnostics of the last step (computed on read; floats): ``angle_mean``,
        ``angle_max`` (radians), ``steps`` (K used), ``rotated``, ``conflict`` (Eq. 3) and
        ``proximity`` (Eq. 4) of the final rotated gradients."""
        last = self._rgb_last
        if not last:
            return {}
        return {
            "step": self._rgb_t,
            "rotated": last["rotated"],
            "steps": last["steps"],
            "angle_mean": float(last["angles"].mean()),
            "angle_max": float(last["angles"].max()),
            "conflict": float(conflict(last["rotated_gram"])),
            "proximity": float(proximity(last["rotated_gram"], last["rotated_cross"], last["gram"])),
        }


def _sync_step_counter(module, incompatible_keys) -> None:
    if hasattr(module, "rgb_step_count"):
        module._rgb_t = int(module.rgb_step_count)


def _check_options(mu, steps, interval, eps, min_steps, max_steps, k_std, adaptive) -> None:
    if not 0.0 <= mu < 1.0:
        raise ValueError(f"rgb_mu must be in [0, 1), got {mu}")
    if steps < 0:
        raise ValueError(f"rgb_steps must be >= 0, got {steps}")
    if interval < 1:
        raise ValueError(f"rgb_interval must be >= 1, got {interval}")
    if eps <= 0:
        raise ValueError(f"rgb_eps must be > 0, got {eps}")
    if adaptive and not (0 <= min_steps <= max_steps):
        raise ValueError(f"need 0 <= rgb_min_steps <= rgb_max_steps, got {min_steps}, {max_steps}")
    if adaptive and k_std <= 0:
        raise ValueError(f"rgb_k_std must be > 0, got {k_std}")
