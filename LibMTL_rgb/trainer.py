"""``Trainer``: LibMTL's training/evaluation loop on the step protocol of ``callbacks.py``.

``train`` and ``test`` read top to bottom here and call named hooks on ``trainer.callbacks``;
every feature beyond LibMTL's loop is a component on them: data parallel
(``distributed/run.py``), the non-finite guard (``nonfinite.py``), run logging and
diagnostics (``run_logger.py``), the run directory (``run_directory.py``), and any component a
user passes (``callbacks=[...]``). Options are typed (``trainer_options.py``). LibMTL's surface
(``process_preds``, ``_compute_loss``, ``forward4loss``, ``_process_data``...) stays.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from LibMTL_rgb.batch_format import check_labels
from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.checkpoint import (
    check_compatible, check_same_config, grow_loss_buffer, load_model_state, read_model_weights, read_training_state,
    run_metadata,
)
from LibMTL_rgb.distributed import DistributedRun
from LibMTL_rgb.libmtl_compat import check_method_class, move_created_state
from LibMTL_rgb.meter import PerformanceMeter
from LibMTL_rgb.progress import progress_bar
from LibMTL_rgb.nonfinite import NonFiniteGuard
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS
from LibMTL_rgb.run_directory import HISTORY_CSV, RunDirectory
from LibMTL_rgb.run_logger import LoggingOptions, RunLogger
from LibMTL_rgb.trainer_options import TrainerOptions, check_method_args
from LibMTL_rgb.utils import count_parameters, resolve_device
from LibMTL_rgb.weighting.bilevel import BilevelLoop

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS = {
    "exp": torch.optim.lr_scheduler.ExponentialLR,
    "step": torch.optim.lr_scheduler.StepLR,
    "multistep": torch.optim.lr_scheduler.MultiStepLR,
    "cos": torch.optim.lr_scheduler.CosineAnnealingLR,
    "reduce": torch.optim.lr_scheduler.ReduceLROnPlateau,
}
__all__ = ["Trainer", "build_mtl_model", "OPTIMIZERS", "SCHEDULERS", "HISTORY_CSV"]


def build_mtl_model(
    weighting: "str | type",
    architecture: "str | type",
    task_name: list[str],
    encoder_class,
    decoders,
    rep_grad: bool,
    multi_input: bool,
    device: torch.device,
    arch_args: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """LibMTL's composition ``class MTLmodel(Architecture, Weighting)``, then ``init_param()``.

    Either class may subclass LibMTL's own base class instead of ours (``libmtl_compat``).
    What ``init_param`` creates follows to ``device`` (``libmtl_compat.move_created_state``)."""
    weighting_class = WEIGHTINGS.get(weighting)
    architecture_class = ARCHITECTURES.get(architecture)
    check_method_class(weighting_class, "weighting")
    check_method_class(architecture_class, "architecture")

    class MTLmodel(architecture_class, weighting_class):
        def __init__(self) -> None:
            super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **(arch_args or {}))
            self.to(device)
            self.init_param()
            move_created_state(self, device)

    MTLmodel.__name__ = f"MTLmodel[{architecture_class.__name__}+{weighting_class.__name__}]"
    return MTLmodel()


class Trainer(nn.Module):
    """LibMTL's ``Trainer``.

    Args:
        task_dict: ``{task: {'metrics': [...], 'metrics_fn': AbsMetric, 'loss_fn': AbsLoss,
            'weight': [1 if higher is better else 0, ...]}}``.
        weighting: a registered weighting name (``'RGB'``, ``'EW'``...) or class.
        architecture: a registered architecture name (``'HPS'``...) or class.
        encoder_class: zero-argument callable building the shared encoder.
        decoders: ``nn.ModuleDict`` with one decoder per task.
        rep_grad: weight representation gradients instead of shared-parameter gradients.
        multi_input: each task has its own input (dataloaders are dicts per task).
        optim_param: ``{'optim': 'adam', 'lr': ..., ...}``.
        scheduler_param: ``{'scheduler': 'step', ...}`` or None.
        save_path: the run directory (``run_directory.py``): ``best.pt`` (model weights of the
            best epoch), ``last.pt`` (everything needed to resume), ``history.csv`` (every
            epoch's metrics) and ``summary.json``; locked while a run writes to it.
        load_path: a ``.pt`` file or a directory holding ``best.pt`` to load weights from.
        **kwargs: the typed options of :class:`~LibMTL_rgb.trainer_options.TrainerOptions`
            (an unknown key is refused with a suggestion): ``weight_args``, ``arch_args``
            (checked against the methods' declared options and ranges), ``device``,
            ``base_result``, ``stl_task``, ``amp``, ``grad_method``, ``nonfinite``
            ('raise'/'skip'), ``command``, logging (``diagnostics``, ``diagnostics_every``,
            ``tensorboard``, ``log_dir``), data parallel (``sync_bn``, ``distributed_check``, ``seed``),
            ``callbacks`` (components on the step protocol), ``overwrite``, ``run_config``.
    """

    def __init__(
        self,
        task_dict: Mapping[str, Mapping[str, Any]],
        weighting: "str | type",
        architecture: "str | type",
        encoder_class,
        decoders,
        rep_grad: bool,
        multi_input: bool,
        optim_param: Mapping[str, Any],
        scheduler_param: Optional[Mapping[str, Any]] = None,
        save_path: Optional[str] = None,
        load_path: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_task_dict(task_dict)
        options = TrainerOptions.from_kwargs(kwargs)  # unknown keys refused here, before any work
        check_method_args(WEIGHTINGS.get(weighting), options.weight_args, "weight_args")
        check_method_args(ARCHITECTURES.get(architecture), options.arch_args, "arch_args")
        task_dict, decoders, base_result = _restrict_to_task(task_dict, decoders, options.stl_task, options.base_result)
        self.options = options
        self.device = resolve_device(options.device)
        #: LibMTL's attribute: the method options (``weight_args`` go to every ``backward``).
        self.kwargs: dict[str, Any] = {"weight_args": options.weight_args, "arch_args": options.arch_args}
        self.task_dict = task_dict
        self.task_num = len(task_dict)
        self.task_name = list(task_dict.keys())
        self.rep_grad = rep_grad
        self.multi_input = multi_input
        self.optim_param = dict(optim_param)
        self.scheduler_param = None if scheduler_param is None else dict(scheduler_param)
        self.save_path = save_path
        self.load_path = load_path
        self.start_epoch = 0
        self.epochs = 0
        # bfloat16 autocast of forward passes and losses; gradients stay in the parameters'
        # dtype and RGB's inner math runs in float32/float64 whatever the autocast dtype.
        self.amp = options.amp
        self.metadata = run_metadata(weighting, architecture, self.task_name, options.command)

        # the built-in components (data parallel, non-finite guard); the users' run after all built-in ones
        self.distributed = DistributedRun(self.device, options.sync_bn, options.distributed_check, options.seed)
        self.is_main_process = self.distributed.is_main
        self.nonfinite = NonFiniteGuard(options.nonfinite)
        users: list[Callback] = list(options.callbacks)

        model = build_mtl_model(weighting, architecture, self.task_name, encoder_class, decoders,
                                rep_grad, multi_input, self.device, options.arch_args)
        if options.grad_method is not None:
            model.grad_method = options.grad_method  # per-task gradients: 'auto', 'batched', 'loop' or 'gramian'
        if options.grad_memory_budget is not None:
            model.grad_memory_budget = options.grad_memory_budget
        if model.gradient_path() != "matrix":  # chosen now: a method that cannot take it is refused before any work
            print(f"Gradient path: {model.gradient_path()} ({model.gradient_path_reason})")
        for callback in [self.distributed, self.nonfinite, *users]:
            model = callback.transform_model(self, model)
        self.model = model
        if load_path is not None:
            self.load_weights(load_path)
        total, trainable = count_parameters(self.model, verbose=options.log_format == "libmtl")  # LibMTL's lines
        if options.log_format != "libmtl":
            print(f"Total params: {total}  Trainable params: {trainable}  Device: {self.device}")
        self._prepare_optimizer(self.optim_param, self.scheduler_param)
        self.meter = PerformanceMeter(task_dict, multi_input, base_result)
        self.meter.csv_written = save_path is not None
        self.meter.log_format = options.log_format

        logging = LoggingOptions(options.diagnostics, options.diagnostics_every, options.tensorboard, options.log_dir)
        # None unless diagnostics/tensorboard/log_dir is asked for (main process only)
        self.run_logger = (RunLogger.from_options(logging, self.model, save_path, options.weight_args)
                           if self.is_main_process else None)
        run_directory = RunDirectory(options.overwrite, options.save_every) if self.is_main_process else None  # writes into ``save_path``
        #: The components whose hooks the loop calls, in this order.
        self.callbacks: list[Callback] = [c for c in (self.distributed, self.nonfinite, self.run_logger, run_directory)
                                          if c is not None] + users

    # ------------------------------------------------------------ building
    def _prepare_optimizer(self, optim_param: Mapping[str, Any], scheduler_param) -> None:
        optim_param = dict(optim_param)
        name = optim_param.pop("optim", "adam")
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
        self.optimizer = OPTIMIZERS[name](self.model.parameters(), **optim_param)
        self.scheduler = None
        if scheduler_param is not None:
            scheduler_param = dict(scheduler_param)
            sname = scheduler_param.pop("scheduler")
            if sname not in SCHEDULERS:
                raise ValueError(f"unknown scheduler {sname!r}; known: {sorted(SCHEDULERS)}")
            self.scheduler = SCHEDULERS[sname](self.optimizer, **scheduler_param)

    # ---------------------------------------------------------------- hooks
    def _call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every component, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _transform_loaders(self, loaders: Any, train: bool) -> Any:
        for callback in self.callbacks:
            loaders = callback.transform_loaders(self, loaders, train)
        return loaders

    def _transform_losses(self, losses: Any) -> Any:
        for callback in self.callbacks:
            losses = callback.transform_losses(self, losses)
        return losses

    # ---------------------------------------------------------------- data
    def loader_iterators(self, dataloaders):
        """``(loader, batches)``: LibMTL's ``[dataloader, iterator]`` pair (a dict of them by
        task with ``multi_input``) and the number of batches (per task with ``multi_input``)."""
        return self._prepare_dataloaders(dataloaders)

    def next_batch(self, loader):
        """``(inputs, labels)`` of the next batch of a :meth:`loader_iterators` pair, on the
        device (the iterator restarts at the end of the loader)."""
        return self._process_data(loader)

    def record_losses(self, preds, gts, task_name: Optional[str] = None):
        """The losses of ``preds`` (recorded by each task's ``loss_fn``): ``_compute_loss``."""
        if task_name is None:
            return self._compute_loss(preds, gts)
        return self._compute_loss(preds, gts, task_name)

    def _prepare_dataloaders(self, dataloaders):
        if not self.multi_input:
            return [dataloaders, iter(dataloaders)], len(dataloaders)
        missing = [t for t in self.task_name if t not in dataloaders]
        if missing:
            raise ValueError(f"multi_input=True needs one dataloader per task; missing {missing}")
        loader = {task: [dataloaders[task], iter(dataloaders[task])] for task in self.task_name}
        return loader, [len(dataloaders[task]) for task in self.task_name]

    def _process_data(self, loader):
        try:
            data, label = next(loader[1])
        except StopIteration:
            loader[1] = iter(loader[0])
            data, label = next(loader[1])
        data = _to_device(data, self.device)
        if not self.multi_input:
            check_labels(label, self.task_name)
            label = {task: _to_device(label[task], self.device) for task in self.task_name}
        else:
            label = _to_device(label, self.device)
        return data, label

    def process_preds(self, preds, task_name: Optional[str] = None):
        """Hook to post-process predictions before losses and metrics (identity by default)."""
        return preds

    def _compute_loss(self, preds, gts, task_name: Optional[str] = None):
        if not self.multi_input:
            losses = [self.meter.losses[task]._update_loss(preds[task], gts[task]) for task in self.task_name]
            return torch.stack(losses)
        return self.meter.losses[task_name]._update_loss(preds, gts)

    def forward4loss(self, model, inputs, gts, return_preds: bool = False):
        """LibMTL's ``forward4loss``: ``model``'s predictions (through ``process_preds``) and
        the losses [T] (recorded by each task's ``loss_fn``); ``(losses, preds)`` with
        ``return_preds``. With ``multi_input``, ``inputs`` and ``gts`` are dicts by task."""
        if not self.multi_input:
            preds = self.process_preds(model(inputs))
            losses = self._compute_loss(preds, gts)
        else:
            preds, per_task = {}, []
            for task in self.task_name:
                preds[task] = self.process_preds(model(inputs[task], task)[task], task)
                per_task.append(self._compute_loss(preds[task], gts[task], task))
            # bfloat16 (amp) losses stack as float32, float64 ones stay float64
            losses = torch.stack([loss.to(torch.promote_types(loss.dtype, torch.float32)) for loss in per_task])
        return (losses, preds) if return_preds else losses

    def _forward_batch(self, loader):
        """One batch of every task: predictions are recorded in the meter; returns the losses
        [T] (float32, or float64 for a float64 model). With ``amp``, forward and losses run
        under bfloat16 autocast."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if not self.multi_input:
                inputs, gts = self._process_data(loader)
            else:
                batches = {task: self._process_data(loader[task]) for task in self.task_name}
                inputs = {task: batch[0] for task, batch in batches.items()}
                gts = {task: batch[1] for task, batch in batches.items()}
            losses, preds = self.forward4loss(self.model, inputs, gts, return_preds=True)
            if not self.multi_input:
                self.meter.update(preds, gts)
            else:
                for task in self.task_name:
                    self.meter.update(preds[task], gts[task], task)
        return losses.to(torch.promote_types(losses.dtype, torch.float32))  # bfloat16 (amp) -> float32

    def _forward_task_batch(self, loader, task: str) -> None:
        """One evaluation batch of one task (``multi_input``), recorded in the meter."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            inputs, gt = self._process_data(loader)
            pred = self.process_preds(self.model(inputs, task)[task], task)
            self._compute_loss(pred, gt, task)
            self.meter.update(pred, gt, task)

    def _forward_samples(self, loader):
        """The losses of one training step: ``[T]``, or a tuple of ``S`` such vectors from ``S``
        batches for a weighting that asks for several (``loss_samples_per_step``: MoDo,
        SDMGrad; LibMTL stacks them into ``[S, T]``, which shares one graph between them)."""
        samples = int(getattr(self.model, "loss_samples_per_step", 1))
        if samples == 1:
            return self._forward_batch(loader)
        return tuple(self._forward_batch(loader) for _ in range(samples))

    # ---------------------------------------------------------------- loops
    def train(self, train_dataloaders, test_dataloaders, epochs: int, val_dataloaders=None, return_weight: bool = False,
              **kwargs):
        """Train for ``epochs`` epochs (continuing from a resumed epoch), evaluating after each.

        ``**kwargs``: LibMTL main's signature; its training loops take no extra argument (any
        raises ``TypeError`` there), so any raises here too."""
        if kwargs:
            raise TypeError(f"Trainer.train() got unexpected keyword arguments {sorted(kwargs)}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.epochs = epochs
        train_dataloaders = self._transform_loaders(train_dataloaders, train=True)
        train_loader, train_batch = self.loader_iterators(train_dataloaders)
        train_batch = max(train_batch) if self.multi_input else train_batch
        if train_batch == 0:
            raise ValueError("the training dataloader is empty")
        self.batch_weight = np.zeros([self.task_num, epochs, train_batch])
        # per-epoch training losses (DWA's input); a resumed history is kept and grown to ``epochs``
        self.model.train_loss_buffer = grow_loss_buffer(getattr(self.model, "train_loss_buffer", None), self.task_num, epochs)
        self.model.epochs = epochs
        self.meter.has_val = val_dataloaders is not None
        bilevel = BilevelLoop.for_trainer(self, train_dataloaders)  # None unless MOML / FORUM / AutoLambda
        if bilevel is not None and self.distributed.active:
            raise ValueError(f"{type(self.model).__name__}: the bilevel methods (MOML, FORUM, AutoLambda) run their "
                             "own forward/backward passes and updates, which are not yet averaged across processes; "
                             "train them in a single process")
        self._call("on_fit_start")
        try:
            for epoch in range(self.start_epoch, epochs):
                self.model.epoch = epoch
                self.model.train()
                self._call("on_train_epoch_start", epoch)
                self.meter.record_time("begin")
                weights = []
                for batch in progress_bar(range(train_batch), desc=f"epoch {epoch}", leave=False,
                                          disable=not self.is_main_process):
                    self._call("on_train_batch_start", epoch, batch)
                    if bilevel is not None:  # the bilevel method runs the whole step (inner/outer updates)
                        w = self.nonfinite.guarded_step(lambda: bilevel.step(train_loader), self.model,
                                                        self.optimizer, epoch, batch)
                        finite = w is not None
                    else:
                        finite, w = self.training_step(train_loader, epoch, batch)
                    if not finite:  # --nonfinite skip: the guard has undone the batch
                        continue
                    weights.append(w)
                    self._call("on_train_batch_end", epoch, batch, w)
                self._store_weights(weights, epoch)
                self._call("on_train_epoch_end", epoch)
                self.meter.record_time("end")
                self._call("on_before_scores", "train")
                self.meter.get_score()
                self.model.train_loss_buffer[:, epoch] = self.meter.loss_item
                self.meter.display(epoch=epoch, mode="train")
                self.meter.reinit()

                val_improvement = None
                if val_dataloaders is not None:
                    val_improvement = self.test(val_dataloaders, epoch, mode="val", return_improvement=True)
                self.test(test_dataloaders, epoch, mode="test")
                if self.scheduler is not None:
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        if val_improvement is None:
                            raise ValueError("the 'reduce' scheduler needs val_dataloaders")
                        self.scheduler.step(val_improvement)
                    else:
                        self.scheduler.step()
                self._call("on_epoch_end", epoch)  # the run directory commits the epoch here
            self._call("on_fit_end")
        except BaseException as error:
            self._call("on_exception", error)
            raise
        self.meter.display_best_result()
        if return_weight:
            return self.batch_weight

    def training_step(self, train_loader, epoch: int, batch: int) -> tuple[bool, Any]:
        """One training step: forward, the weighting's ``backward`` between the non-finite
        checks of the losses and of the gradients, ``optimizer.step()``, with their hooks.
        ``(False, None)`` for a batch the guard skipped (``--nonfinite skip``; 'raise' raises),
        else ``(True, weights)`` (what ``backward`` returned)."""
        losses = self._transform_losses(self._forward_samples(train_loader))  # [T] (a tuple: several batches)
        self.optimizer.zero_grad(set_to_none=False)
        problem = self.nonfinite.losses_problem(losses, self.task_name)
        weights = None
        if problem is None:
            self._call("on_before_backward", losses)
            try:
                weights = self.model.backward(losses, **self.kwargs["weight_args"])
            except FloatingPointError as err:  # a weighting's own per-task gradient check
                problem = str(err)
        if problem is None:
            self._call("on_after_backward")
            problem = self.nonfinite.gradients_problem(self.model, self.task_name)
        if problem is not None:
            self.nonfinite.handle(problem, epoch, batch)  # raises ('raise') or undoes the batch ('skip')
            return False, None
        self._call("on_before_optimizer_step")
        self.optimizer.step()
        self._call("on_after_optimizer_step")
        return True, weights

    def _store_weights(self, weights: list, epoch: int) -> None:
        for index, w in enumerate(weights):
            if w is not None:
                self.batch_weight[:, epoch, index] = w.detach().cpu().numpy() if torch.is_tensor(w) else w

    def test(self, test_dataloaders, epoch: Optional[int] = None, mode: str = "test", return_improvement: bool = False):
        """Evaluate on ``test_dataloaders``; prints the row and tracks the best epoch."""
        test_loader, test_batch = self.loader_iterators(self._transform_loaders(test_dataloaders, train=False))
        self.model.eval()
        self.meter.record_time("begin")
        with torch.no_grad():
            if not self.multi_input:
                for _ in range(test_batch):
                    self._forward_batch(test_loader)
            else:  # LibMTL's order: each task's whole loader once, task after task
                for task, batches in zip(self.task_name, test_batch):
                    for _ in range(batches):
                        self._forward_task_batch(test_loader[task], task)
        self.meter.record_time("end")
        self._call("on_before_scores", mode)
        self.meter.get_score()
        self.meter.display(epoch=epoch, mode=mode)
        improvement = self.meter.improvement
        self._call("on_evaluation_end", mode, epoch)
        self.meter.reinit()
        if return_improvement:
            return improvement

    # ---------------------------------------------------------- checkpoints
    def training_config(self) -> dict[str, Any]:
        """What ``resume`` requires to be unchanged: optimiser, scheduler, method options and
        the caller's ``run_config`` (an example's flags)."""
        return {
            "optim_param": self.optim_param,
            "scheduler_param": self.scheduler_param,
            "weight_args": dict(self.kwargs["weight_args"]),
            "arch_args": dict(self.kwargs["arch_args"]),
            "run_config": None if self.options.run_config is None else dict(self.options.run_config),
        }

    def training_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after ``epoch`` exactly as an uninterrupted run: the
        loop's own state, then each component's entry (``on_save_checkpoint``)."""
        state = {
            "epoch": epoch,
            "metadata": self.metadata,
            "config": self.training_config(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "best_result": self.meter.best_result,
            "base_result": self.meter.base_result,
            "history": self.meter.history,
            "train_loss_buffer": getattr(self.model, "train_loss_buffer", None),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
        }
        self._call("on_save_checkpoint", state)
        return state

    def resume(self, path: str) -> int:
        """Load a ``last.pt`` (file or its directory); ``train`` then continues after its epoch.
        A file that is not a training state, one of another weighting/architecture/task set,
        or one trained with another configuration (``training_config``; ``epochs`` may grow)
        raises ``checkpoint.CheckpointError`` saying so, before anything is loaded."""
        state = read_training_state(path, self.device)
        check_compatible(state.get("metadata"), self.metadata, state["path"])
        check_same_config(state.get("config"), self.training_config(), state["path"])
        load_model_state(self.model, state["model"], state["path"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.meter.best_result = state["best_result"]
        self.meter.base_result = state["base_result"]
        self.meter.history = list(state["history"])
        self.model.train_loss_buffer = state["train_loss_buffer"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        np.random.set_state(state["numpy_rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self._call("on_load_checkpoint", state)
        return self.start_epoch

    def load_weights(self, path: str) -> None:
        """Load model weights from a file or from ``best.pt`` in a directory (one
        ``checkpoint.CheckpointError`` naming what differs when they do not fit)."""
        state, metadata, path = read_model_weights(path, self.device)
        check_compatible(metadata, self.metadata, path)
        load_model_state(self.model, state, path)

def _to_device(value, device: torch.device):
    if hasattr(value, "to"):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _restrict_to_task(task_dict, decoders, stl_task: Optional[str], base_result):
    """``(task_dict, decoders, base_result)`` of the single task ``stl_task`` (unchanged when
    None): the single-task (STL) baseline of an example, with its data, model and settings."""
    if stl_task is None:
        return task_dict, decoders, base_result
    if stl_task not in task_dict:
        raise ValueError(f"stl_task {stl_task!r} is not a task of task_dict; tasks: {list(task_dict)}")
    if base_result is not None:
        base_result = {stl_task: base_result[stl_task]}
    return {stl_task: task_dict[stl_task]}, nn.ModuleDict({stl_task: decoders[stl_task]}), base_result


def _check_task_dict(task_dict: Mapping[str, Mapping[str, Any]]) -> None:
    if not task_dict:
        raise ValueError("task_dict is empty: give at least one task")
    required = ("metrics", "metrics_fn", "loss_fn", "weight")
    for task, spec in task_dict.items():
        missing = [key for key in required if key not in spec]
        if missing:
            raise ValueError(f"task_dict[{task!r}] is missing {missing}; each task needs {list(required)}")
        if len(spec["metrics"]) != len(spec["weight"]):
            raise ValueError(
                f"task_dict[{task!r}]: 'metrics' has {len(spec['metrics'])} names but 'weight' has "
                f"{len(spec['weight'])} entries (one 1/0 per metric: 1 = higher is better)"
            )
