"""Data parallelism over MLX's own distributed layer (`mx.distributed`): the processes that
`mlx.launch` (or `mpirun`) starts form one group, each process a rank of it; a process
started alone is a group of one, for which every function here does nothing."""

import mlx.core as mx
import numpy as np


def world() -> mx.distributed.Group:
    """The group of all processes of this run (ring, MPI or NCCL, as the launcher set up)."""
    return mx.distributed.init()


def total(x: mx.array, group: mx.distributed.Group) -> mx.array:
    """x summed over the processes of the group."""
    return x if group.size() == 1 else mx.distributed.all_sum(x, group=group)


def wait_for_all(group: mx.distributed.Group):
    """Returns once every process of the group has reached it."""
    if group.size() > 1:
        mx.eval(total(mx.array(0), group))


def gather(value: int, group: mx.distributed.Group) -> list:
    """Each process's `value`, by rank."""
    return mx.distributed.all_gather(mx.array([value]), group=group).tolist() if group.size() > 1 else [value]


def rows_of(group: mx.distributed.Group, *arrays: np.ndarray) -> tuple:
    """This process's share of a batch: arrays (B, ...) padded with zero rows to a multiple of
    the group's size, then cut into equal consecutive parts -> its part of each (B', ...)."""
    size, rank = group.size(), group.rank()
    if size == 1:
        return arrays
    rows = -(-arrays[0].shape[0] // size)
    padded = [np.concatenate([a, np.zeros((rows * size - a.shape[0], *a.shape[1:]), a.dtype)]) for a in arrays]
    return tuple(a[rank * rows:(rank + 1) * rows] for a in padded)
