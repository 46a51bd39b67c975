"""Literal, slow implementation of Algorithm 1 of the RGB paper, for tests only.

Works on explicit D-dimensional vectors, one task (or one pair of tasks) at a
time, with the paper's formulas written out as they appear and epsilon exactly
where the paper puts it. The gradient of Eq. 1 comes from autograd.
"""

from __future__ import annotations

import math

import torch


def normalise(g, eps):
    """gbar = g / (||g|| + eps)."""
    return g / (torch.linalg.norm(g) + eps)


def orthogonal_state(gbar, d, eps):
    """w = (d - (gbar^T d) gbar) / (||d - (gbar^T d) gbar|| + eps)."""
    num = d - torch.dot(gbar, d) * gbar
    return num / (torch.linalg.norm(num) + eps)


def rotate(alpha_i, gbar, w):
    """r(alpha) = cos(alpha) gbar + sin(alpha) w."""
    return torch.cos(alpha_i) * gbar + torch.sin(alpha_i) * w


def objective(alpha, gbars, ws, lam):
    """Eq. 1 with the UNnormalised r_i(alpha); the conflict term is 0 for T = 1."""
    T = len(gbars)
    rs = [rotate(alpha[i], gbars[i], ws[i]) for i in range(T)]
    conflict = torch.zeros((), dtype=gbars[0].dtype)
    if T > 1:
        for i in range(T):
            for j in range(i + 1, T):
                conflict = conflict + (1 - torch.dot(rs[i], rs[j]))
        conflict = conflict / (T * (T - 1))
    prox = torch.zeros((), dtype=gbars[0].dtype)
    for i in range(T):
        diff = rs[i] - gbars[i]
        prox = prox + torch.dot(diff, diff)
    return conflict + lam / (4 * T) * prox


def objective_grad(alpha, gbars, ws, lam):
    """Gradient of Eq. 1 by autograd."""
    a = alpha.detach().clone().requires_grad_(True)
    val = objective(a, gbars, ws, lam)
    (grad,) = torch.autograd.grad(val, a)
    return grad


class ReferenceRGB:
    """Algorithm 1 with its state (the EMA direction)."""

    def __init__(self, mu=0.9, lam=0.0, eps=1e-8, steps=5, lr=0.1):
        self.mu = mu
        self.lam = lam
        self.eps = eps
        self.steps = steps
        self.lr = lr
        self.d = None

    def step(self, grads, rotate_now=True):
        T, D = grads.shape
        eps = self.eps
        # line 3
        gbars = [normalise(grads[i], eps) for i in range(T)]
        # line 4
        y = torch.zeros(D, dtype=grads.dtype)
        for i in range(T):
            y = y + gbars[i]
        y = y / T
        # line 5 (d_0 = 0)
        d_prev = torch.zeros(D, dtype=grads.dtype) if self.d is None else self.d
        d = self.mu * d_prev + (1 - self.mu) * y / (torch.linalg.norm(y) + eps)
        self.d = d
        alpha = torch.zeros(T, dtype=grads.dtype)
        ws = None
        if rotate_now:
            # line 7
            ws = [orthogonal_state(gbars[i], d, eps) for i in range(T)]
            # line 8: K projected gradient steps from alpha = 0 on [0, pi/2]^T
            for _ in range(self.steps):
                g = objective_grad(alpha, gbars, ws, self.lam)
                alpha = torch.clamp(alpha - self.lr * g, 0.0, math.pi / 2)
            # line 9
            rs = []
            for i in range(T):
                r = rotate(alpha[i], gbars[i], ws[i])
                rs.append(r / (torch.linalg.norm(r) + eps))
        else:
            # line 11
            rs = list(gbars)
        # line 13
        v = torch.zeros(D, dtype=grads.dtype)
        for i in range(T):
            v = v + rs[i]
        v = v / T
        return {"v": v, "d": d, "alpha": alpha, "rs": rs, "gbars": gbars, "ws": ws}
