"""The Cityscapes label definitions (Cordts et al., 2016; cityscapesScripts' ``labels.py``):
label id -> train id (19 evaluated classes) and which classes have instances ("things").

``train_id_lookup()`` turns a ``*_gtFine_labelIds.png`` array into train ids with ``-1`` for
every class that is not evaluated (void, and the rare classes parking, rail track, guard rail,
bridge, tunnel, polegroup, caravan, trailer, license plate).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE = -1


class Label(NamedTuple):
    name: str
    id: int
    train_id: int  # IGNORE: not evaluated
    has_instances: bool


LABELS = (
    Label("unlabeled", 0, IGNORE, False),
    Label("ego vehicle", 1, IGNORE, False),
    Label("rectification border", 2, IGNORE, False),
    Label("out of roi", 3, IGNORE, False),
    Label("static", 4, IGNORE, False),
    Label("dynamic", 5, IGNORE, False),
    Label("ground", 6, IGNORE, False),
    Label("road", 7, 0, False),
    Label("sidewalk", 8, 1, False),
    Label("parking", 9, IGNORE, False),
    Label("rail track", 10, IGNORE, False),
    Label("building", 11, 2, False),
    Label("wall", 12, 3, False),
    Label("fence", 13, 4, False),
    Label("guard rail", 14, IGNORE, False),
    Label("bridge", 15, IGNORE, False),
    Label("tunnel", 16, IGNORE, False),
    Label("pole", 17, 5, False),
    Label("polegroup", 18, IGNORE, False),
    Label("traffic light", 19, 6, False),
    Label("traffic sign", 20, 7, False),
    Label("vegetation", 21, 8, False),
    Label("terrain", 22, 9, False),
    Label("sky", 23, 10, False),
    Label("person", 24, 11, True),
    Label("rider", 25, 12, True),
    Label("car", 26, 13, True),
    Label("truck", 27, 14, True),
    Label("bus", 28, 15, True),
    Label("caravan", 29, IGNORE, True),
    Label("trailer", 30, IGNORE, True),
    Label("train", 31, 16, True),
    Label("motorcycle", 32, 17, True),
    Label("bicycle", 33, 18, True),
)
NUM_CLASSES = 19
#: ``instanceIds`` values ``>= INSTANCE_BASE`` are ``label_id * 1000 + instance number``;
#: smaller values are a plain label id (stuff, or a crowd of things without instances).
INSTANCE_BASE = 1000
CLASS_NAMES = tuple(label.name for label in sorted((lb for lb in LABELS if lb.train_id != IGNORE), key=lambda lb: lb.train_id))


def train_id_lookup() -> np.ndarray:
    """``lookup[label_id]`` = train id (``-1`` if not evaluated), for label ids 0..255."""
    lookup = np.full(256, IGNORE, dtype=np.int64)
    for label in LABELS:
        lookup[label.id] = label.train_id
    return lookup


def thing_label_ids() -> np.ndarray:
    """Label ids of the evaluated classes that have instances (person ... bicycle)."""
    return np.array([label.id for label in LABELS if label.has_instances and label.train_id != IGNORE], dtype=np.int64)
