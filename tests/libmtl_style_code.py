"""Research code written against LibMTL, in the style of LibMTL's docs and examples.

tests/test_libmtl_dropin.py runs these classes as they are (built on LibMTL's base classes)
and a copy whose only change is ``from LibMTL`` -> ``from LibMTL_rgb`` (``load_variant``).
Nothing here may know about LibMTL_rgb.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from LibMTL.architecture.abstract_arch import AbsArchitecture
from LibMTL.loss import AbsLoss
from LibMTL.metrics import AbsMetric
from LibMTL.weighting.abstract_weighting import AbsWeighting


class MAEMetric(AbsMetric):
    """examples/qm9/utils.py's pattern: NumPy arrays in ``record`` (needs ``torch.no_grad``)."""

    def __init__(self, scale=1.0):
        super(MAEMetric, self).__init__()
        self.scale = scale

    def update_fun(self, pred, gt):
        abs_err = torch.abs(pred - gt).view(pred.size()[0], -1).sum(-1)
        self.record.append(abs_err.cpu().numpy())

    def score_fun(self):
        return [np.concatenate(self.record).mean() * self.scale]


class AccuracyMetric(AbsMetric):
    """LibMTL's AccMetric pattern: numbers in ``record``, batch sizes in ``bs``."""

    def update_fun(self, pred, gt):
        pred = F.softmax(pred, dim=-1).max(-1)[1]
        self.record.append(gt.eq(pred).sum().item())
        self.bs.append(pred.size()[0])

    def score_fun(self):
        return [sum(self.record) / sum(self.bs)]


class ClassShareMetric(AbsMetric):
    """examples/nyu/utils.py SegMetric's pattern: ``record`` is a tensor, ``reinit`` overridden.
    Score: the fraction of predictions of class 0, and the number of samples seen."""

    def __init__(self, num_classes):
        super(ClassShareMetric, self).__init__()
        self.num_classes = num_classes
        self.record = torch.zeros(num_classes, dtype=torch.int64)

    def update_fun(self, pred, gt):
        self.record = self.record.to(pred.device)
        self.record += torch.bincount(pred.argmax(1), minlength=self.num_classes)

    def score_fun(self):
        return [(self.record[0] / self.record.sum()).item(), self.record.sum().item()]

    def reinit(self):
        self.record = torch.zeros(self.num_classes, dtype=torch.int64)


class HuberLoss(AbsLoss):
    def __init__(self):
        super(HuberLoss, self).__init__()
        self.loss_fn = nn.SmoothL1Loss()

    def compute_loss(self, pred, gt):
        return self.loss_fn(pred, gt)


class CrossEntropyLoss(AbsLoss):
    def compute_loss(self, pred, gt):
        return F.cross_entropy(pred, gt)


class InverseNormWeighting(AbsWeighting):
    """Task weights ∝ 1/‖g_t‖ (summing to T), from epoch 2 on multiplied by DWA's
    T·softmax(loss ratio / temperature) read from ``train_loss_buffer``. Works on parameter
    or representation gradients (``_get_grads`` / ``_backward_new_grads``)."""

    def __init__(self):
        super(InverseNormWeighting, self).__init__()

    def backward(self, losses, **kwargs):
        temperature = kwargs["temperature"]
        if self.rep_grad:
            per_grads, grads = self._get_grads(losses, mode="backward")
        else:
            grads = self._get_grads(losses, mode="backward")
        inverse = 1.0 / (grads.norm(dim=1) + 1e-8)
        weight = self.task_num * inverse / inverse.sum()
        if self.epoch > 1:
            ratio = self.train_loss_buffer[:, self.epoch - 1] / self.train_loss_buffer[:, self.epoch - 2]
            dwa = self.task_num * F.softmax(torch.tensor(ratio / temperature), dim=-1)
            weight = weight * dwa.to(self.device, weight.dtype)
        if self.rep_grad:
            self._backward_new_grads(weight, per_grads=per_grads)
        else:
            self._backward_new_grads(weight, grads=grads)
        return weight.detach().cpu().numpy()


class ProjectConflicts(AbsWeighting):
    """PCGrad-like, in a fixed order: each task gradient loses its component along the other
    task gradients it conflicts with. Uses ``_compute_grad_dim``, ``_compute_grad`` in
    ``autograd`` mode, ``_grad2vec``, ``zero_grad_share_params`` and ``_reset_grad``."""

    def backward(self, losses, **kwargs):
        self._compute_grad_dim()
        grads = self._compute_grad(losses, mode="autograd")
        losses.sum().backward()
        summed = self._grad2vec()
        self.zero_grad_share_params()
        assert torch.allclose(summed.to(grads.device, grads.dtype), grads.sum(0))
        projected = grads.clone()
        for i in range(self.task_num):
            for j in range(self.task_num):
                dot = projected[i] @ grads[j]
                if i != j and dot < 0:
                    projected[i] = projected[i] - dot * grads[j] / grads[j].norm().pow(2)
        self._reset_grad(projected.sum(0))
        return np.ones(self.task_num)


class GatedSharing(AbsArchitecture):
    """One shared encoder; each task multiplies the representation by its own learned gate
    (``arch_args``: ``rep_dim``)."""

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super(GatedSharing, self).__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self.encoder = self.encoder_class()
        self.gates = nn.ParameterDict({task: nn.Parameter(torch.ones(kwargs["rep_dim"])) for task in task_name})

    def forward(self, inputs, task_name=None):
        out = {}
        s_rep = self.encoder(inputs)
        for task in self.task_name:
            if task_name is not None and task != task_name:
                continue
            ss_rep = self._prepare_rep(s_rep, task, same_rep=not self.multi_input)
            out[task] = self.decoders[task](ss_rep * self.gates[task])
        return out
