"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``) that is exact
for every weighting.

Plain ``DistributedDataParallel`` all-reduces the *summed* gradient during ``backward()``; a
gradient-balancing method needs the per-task gradients of the *global* batch. Here every
process

1. replaces its local task losses by their mean over the processes (the value a weighting sees
   is the global-batch loss for equal shards; the gradient still flows to the local losses);
2. computes its local ``[T, D]`` per-task gradients of the shared parameters, which
   :func:`start_task_grad_mean` averages over the processes (a bucketed asynchronous
   all-reduce that overlaps with the task-specific backward pass) *before* the weighting runs;
3. runs the same aggregation on the same numbers, so the shared parameters' new ``.grad`` is
   identical everywhere without another message;
4. averages every other gradient (decoders, gates, a loss weighting's shared gradient, UW's
   log-variances...) with :func:`average_remaining_grads`;
5. reduces the epoch's loss/metric accumulators (:func:`reduce_accumulator`) so that
   ``train_loss_buffer`` (DWA) and the evaluation equal a single-process run.

Each rank seeds its own generators from ``(seed, epoch, rank)`` at each epoch start (dropout
differs per rank, as over one process's batch); a weighting's draws (PCGrad's order, RLW's
weights, GradDrop's mask) come from a stream that every rank holds identically
(:class:`SharedStream`). Loaders from :func:`seeded_loader` shuffle and augment as a function of
``(seed, epoch, sample)``, so a resumed run reads what an uninterrupted one reads at any
``num_workers``. Nothing else here acts when ``torch.distributed`` is not initialised: a single
process behaves exactly as before.
``docs/distributed.md`` has the commands, the cost model and the limits.

Modules: ``process_group`` (torchrun, rank, flags), ``collectives`` (bucketed all-reduce,
broadcasts, byte counter), ``gradients`` (steps 1-4), ``accumulators`` (step 5), ``data``
(samplers), ``replicas`` (``--distributed_check``), ``seeds`` (seeded loaders, per-rank and shared
streams), ``run`` (``DistributedRun``, a ``Callback`` on the Trainer's step protocol).
"""
from LibMTL_rgb.distributed.accumulators import accumulator_names, interleave_batches, reduce_accumulator, reduce_meter
from LibMTL_rgb.distributed.collectives import (BUCKET_BYTES, COUNTER, CommunicationCounter, PendingMean,
                                                broadcast_model, parameter_buckets, start_mean)
from LibMTL_rgb.distributed.data import (LOADER_CONTRACT, StridedBatches, set_epoch, shard_loader, shard_loaders,
                                         wrapped_loader)
from LibMTL_rgb.distributed.gradients import (average_norm_statistics, average_remaining_grads, global_losses,
                                              mark_shared_grads_written, mean_task_grads, min_over_processes,
                                              reached_on_any_rank, start_task_grad_mean)
from LibMTL_rgb.distributed.process_group import (TORCHRUN_VARIABLES, add_distributed_args, describe,
                                                  distributed_kwargs, init_from_env, is_active, is_main_process,
                                                  is_peer_failure, launched_by_torchrun, rank, shared_seed, silence_non_main_stdout,
                                                  teardown, world_size)
from LibMTL_rgb.distributed.replicas import check_replicas, state_digests
from LibMTL_rgb.distributed.seeds import (SeededSampler, SeededSamples, SharedStream, derive_seed, seed_process,
                                          seeded_loader)
from LibMTL_rgb.distributed.run import DistributedRun, convert_sync_batchnorm

__all__ = [
    "DistributedRun", "init_from_env", "teardown", "is_active", "is_main_process", "rank", "world_size",
    "launched_by_torchrun", "is_peer_failure", "add_distributed_args", "distributed_kwargs", "silence_non_main_stdout", "describe",
    "shared_seed", "TORCHRUN_VARIABLES", "BUCKET_BYTES", "COUNTER", "CommunicationCounter", "PendingMean",
    "start_mean", "parameter_buckets", "broadcast_model", "start_task_grad_mean",
    "mark_shared_grads_written", "reached_on_any_rank", "min_over_processes", "mean_task_grads", "global_losses", "average_remaining_grads",
    "average_norm_statistics", "StridedBatches", "shard_loader", "shard_loaders", "set_epoch",
    "reduce_accumulator", "reduce_meter", "interleave_batches", "accumulator_names", "state_digests",
    "check_replicas", "convert_sync_batchnorm", "LOADER_CONTRACT", "wrapped_loader", "SeededSampler",
    "SeededSamples", "SharedStream", "derive_seed", "seed_process", "seeded_loader",
]
