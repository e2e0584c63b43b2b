"""Pruning baselines for PuRL: Global MP (the reference every agent is judged against) and friends.

Each allocator lives in its own module and cites its paper; all share one interface
(:class:`~baselines.base.Allocator`) and one registry (:data:`ALLOCATORS`):

==============  ===============================================================
``global-mp``   Global Magnitude Pruning (Gupta et al. 2022); MT via ``Constraints``
``uniform``     same sparsity in every layer (Zhu & Gupta 2017; Gale et al. 2019)
``uniform-plus``  Uniform+ (Gale et al. 2019): first layer dense, last <= 80 %
``erk``         Erdős–Rényi-Kernel densities (Evci et al. 2020, RigL)
``lamp``        LAMP scores + global threshold (Lee et al. 2021)
``random``      random masks at uniform per-layer sparsity
``layerwise``   an explicit per-layer sparsity map (how an RL policy is applied)
==============  ===============================================================

``baselines`` builds on the ``purl`` core. ``purl`` reaches it only at run time: importing ``baselines``
registers the ``baseline`` method in :data:`purl.methods.METHODS` (``purl.methods.load_methods`` and the CLI
do that import); no ``purl`` module imports ``baselines`` at import time.
"""

from purl.baselines.base import (
    ALLOCATORS,
    Allocator,
    LayerCollapseWarning,
    PruningResult,
    collapsed_layers,
    get_allocator,
    list_allocators,
    register_allocator,
)
from purl.baselines.erk import ERK
from purl.baselines.global_mp import GlobalMagnitude, global_magnitude_prune
from purl.baselines.lamp import LAMP, lamp_scores
from purl.baselines.layerwise import Layerwise
from purl.baselines.random_pruning import RandomPruning
from purl.baselines.run import BaselineMethod  # registers the "baseline" method (purl.methods.METHODS)
from purl.baselines.schedule import CubicSchedule, GradualPruner, make_gradual_schedule
from purl.baselines.uniform import Uniform
from purl.baselines.uniform_plus import UniformPlus
from purl.pruning.constraints import Constraints

__all__ = [
    "ALLOCATORS",
    "BaselineMethod",
    "ERK",
    "LAMP",
    "Allocator",
    "Constraints",
    "CubicSchedule",
    "GlobalMagnitude",
    "GradualPruner",
    "LayerCollapseWarning",
    "Layerwise",
    "PruningResult",
    "RandomPruning",
    "Uniform",
    "UniformPlus",
    "collapsed_layers",
    "get_allocator",
    "global_magnitude_prune",
    "lamp_scores",
    "list_allocators",
    "make_gradual_schedule",
    "register_allocator",
]
