"""The one interface every pruning method implements, and the registry ``purl`` reaches them through.

A *method* turns one cell of a comparison (the task, the merged config, the target
sparsity, the seed and the cell's folder) into one results row (the fields of
:func:`purl.pipeline.finetune_and_measure` plus the method's own). ``purl compare``,
``purl train`` (one run and ``--grid/--seeds``) and the Ray executor run methods through
:func:`get_method`, so the baselines and the agent are interchangeable; ``purl prune`` and
single-run ``purl train`` are one cell of the same template (:class:`PruningMethod`: ``prune`` then the shared
tail ``finish``), and save what they return with :func:`save_pruned`, the one save path.

``purl`` never imports the packages that implement methods at module level: they
register themselves into :data:`METHODS` when imported (``baselines`` registers
``baseline``, ``agents`` registers ``agent``), and :func:`load_methods` imports the
packages named in :data:`METHOD_PACKAGES` on first use (in the CLI and in every Ray
worker). A user method is a ``package.module:name`` in ``compare.methods`` that
names an instance with the :class:`Method` protocol, or one registered with
``METHODS.add("name", obj)`` by a package the user imports.

Which compare method name runs which method: a name registered in :data:`METHODS`
(``agent``) runs that method; any other name is an allocator (``global-mp``,
``pkg.mod:Allocator``) and runs the ``baseline`` method.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from purl.registry import Registry, import_object

if TYPE_CHECKING:
    from torch import nn

    from purl.config import ExperimentConfig, MethodSpec
    from purl.pruning import MaskState
    from purl.task import Task

# Packages that register methods when imported (imported lazily by load_methods, never by purl at import time).
METHOD_PACKAGES: tuple[str, ...] = ("purl.baselines", "purl.agents")
# The method that runs every compare name that is not itself a registered method (an allocator name).
ALLOCATOR_METHOD = "baseline"


@dataclass(frozen=True)
class MethodCell:
    """One cell as a method sees it: what goes in (the row comes out of :meth:`Method.run`).

    ``config`` is the cell's merged config (:func:`purl.config.merge_config`: base, the method's
    overrides, the cell's target); ``task`` holds the shared dense model, data and the grid's
    config (fine-tuning and evaluation come from it, identical for every method).
    """

    task: Task
    config: ExperimentConfig
    spec: MethodSpec
    target_sparsity: float | None
    seed: int
    folder: Path
    progress: bool = False
    resume: bool = True  # continue from a checkpoint in ``folder`` if the method keeps one (the agent's search)
    # the folder of the same label and seed's cell at the grid's previous target (None: the first target, or no
    # grid): a method may start from what that cell left there (the agent's agent.warm_start)
    previous: Path | None = None


@dataclass(frozen=True)
class Pruned:
    """What :meth:`Method.prune` returns: the results row and the pruned, fine-tuned model with its masks
    (what ``purl prune`` and ``purl train`` save as ``pruned.pt``)."""

    row: dict[str, Any]
    model: nn.Module
    masks: MaskState | None  # None at channel granularity (the slimmed model has no masks)


def refuse_weight_threshold_at_channel(config: ExperimentConfig, spec: MethodSpec | None = None) -> None:
    """The Minimum Threshold is a percentage of weights: at channel granularity it is one ConfigError line
    pointing to ``prune.min_channels`` (every channel method checks it before any work: the baselines here, the
    channel env in its granularity's ``check``). ``spec``: its label prefixes the line and its MT counts too."""
    if (spec is not None and spec.min_threshold is not None) or config.constraints.min_threshold is not None:
        from purl.errors import ConfigError

        where = f"method '{spec.label}': " if spec is not None else ""
        raise ConfigError(f"{where}the Minimum Threshold (min_threshold) is a percentage of weights; at "
                          "prune.granularity=channel set prune.min_channels (channels each group keeps)")


def save_pruned(out: Path, config: ExperimentConfig, pruned: Pruned, input_shape: tuple[int, ...],
                meta: dict[str, Any]) -> dict[str, Any]:
    """The pruned model as ``purl prune`` and ``purl train`` leave it; the row fields naming what was written.

    ``pruned.pt`` (``torch.load(..., weights_only=True)``): at weight granularity the masked model and its
    masks; at channel granularity the slimmed state_dict and the keep plan (``meta.channel_keep``: the dense
    architecture pruned to those counts, :func:`purl.pruning.channels.prune_channels`, has its shapes). Then
    ``pruned.pt2`` / ``pruned.onnx`` (reload with only torch / onnxruntime; at weight granularity the masked
    dense model, labelled NOT faster). Returns ``checkpoint``, ``exports`` and ``export_note`` (or
    ``export_error``: a model that cannot be exported never loses the finished run).
    """
    from purl.checkpoint import save_checkpoint
    from purl.export import export_fields

    granularity = config.prune.granularity
    model = pruned.model  # both writers take CPU copies themselves (the checkpoint's state_dict, the export's model)
    meta = dict(meta)
    if granularity == "channel":
        meta.update({"granularity": "channel", "budget_metric": config.budget_metric(),
                     "channel_norm": config.prune.channel_norm, "channel_keep": pruned.row["channel_keep"]})
    masks = pruned.masks.state_dict() if pruned.masks is not None else None
    # the checkpoint first: a folder that cannot be written fails before any export is left in it
    checkpoint = save_checkpoint(Path(out) / "pruned.pt", model, config=config.to_dict(), masks=masks, meta=meta)
    return {"checkpoint": str(checkpoint), **export_fields(model, input_shape, out, granularity=granularity)}


def finish_channel_cell(cell: MethodCell, pruned: Pruned, *, export: bool = True) -> dict[str, Any]:
    """A channel-granularity cell's deployable model and (opt-in) latency, the same for every method.

    Exports the slimmed model to the cell's folder (``pruned.pt2``, ``pruned.onnx``: reloadable with only
    torch / onnxruntime; ``export=False`` when the caller saves it itself, :func:`save_pruned`) and, with
    ``compare.measure_latency``, adds ``latency_ratio`` (slimmed / dense, CPU eager, batch 1, median of
    interleaved runs), ``latency_dense_ms`` and ``latency_pruned_ms`` to the row.
    """
    from purl.export import export_pruned

    row = pruned.row
    if export:
        export_pruned(pruned.model, cell.task.data.input_shape, cell.folder)
    if cell.config.compare.measure_latency:
        from purl.latency import latency_ratios

        (result,) = latency_ratios(cell.task.model, pruned.model, cell.task.data.input_shape, batches=(1,),
                                   repeats=30)
        row.update({"latency_ratio": result.ratio, "latency_dense_ms": result.dense_ms,
                    "latency_pruned_ms": result.pruned_ms})
    return row


@runtime_checkable
class Method(Protocol):
    """A pruning method: validate a spec before any work, then turn one cell into one results row."""

    def cell_config(self, base: ExperimentConfig, spec: MethodSpec, target_sparsity: float | None,
                    ) -> ExperimentConfig:
        """The cell's config: ``base`` with the method's overrides and the target
        (:func:`purl.config.merge_config`, validated once)."""
        ...

    def validate(self, config: ExperimentConfig, spec: MethodSpec) -> None:
        """Method-specific checks of a cell config, before any heavy work: raise a one-line
        :class:`~purl.errors.PurlError` naming the problem and what is allowed."""
        ...

    def run(self, cell: MethodCell) -> dict[str, Any]:
        """Prune, fine-tune and measure one cell; the measured row (no status/attempt fields)."""
        ...


class PruningMethod(ABC):
    """The template every built-in method fills in (a :class:`Method`): :meth:`run` is validate-free
    (the edge validated the cell with :meth:`validate`), :meth:`prune` is the method's own part (prune,
    fine-tune, measure: the shared :func:`purl.pipeline.finetune_and_measure` tail), :meth:`finish` the part
    every method shares (at channel granularity the exported slimmed model and opt-in latency,
    :func:`finish_channel_cell`)."""

    @abstractmethod
    def cell_config(self, base: ExperimentConfig, spec: MethodSpec, target_sparsity: float | None,
                    ) -> ExperimentConfig:
        """See :meth:`Method.cell_config`."""

    @abstractmethod
    def validate(self, config: ExperimentConfig, spec: MethodSpec) -> None:
        """See :meth:`Method.validate`."""

    @abstractmethod
    def prune(self, cell: MethodCell) -> Pruned:
        """This method's part: the pruned, fine-tuned, measured model of one cell and its row."""

    def finish(self, cell: MethodCell, pruned: Pruned, *, export: bool = True) -> dict[str, Any]:
        """The tail every method shares: the row (at channel granularity with the exported slimmed model and,
        with ``compare.measure_latency``, its latency). ``export=False``: a one-cell run saves and exports the
        model itself, checkpoint first (:func:`save_pruned`)."""
        if cell.config.prune.granularity == "channel":
            return finish_channel_cell(cell, pruned, export=export)
        return pruned.row

    def run(self, cell: MethodCell) -> dict[str, Any]:
        """One cell as a results row: :meth:`prune`, then :meth:`finish`."""
        return self.finish(cell, self.prune(cell))


METHODS: Registry[Method] = Registry("method")


def load_methods() -> None:
    """Import every package in :data:`METHOD_PACKAGES` so that it registers its methods (idempotent)."""
    for package in METHOD_PACKAGES:
        importlib.import_module(package)


def method_name(name: str) -> str:
    """The registry name of the method that runs compare method ``name`` (``agent`` or ``baseline``).

    A ``package.module:name`` that is a :class:`Method` is its own method; every other name that is
    not registered is an allocator, run by the ``baseline`` method.
    """
    load_methods()
    if name in METHODS:
        return name.lower()
    if ":" in name:
        try:
            obj = import_object(name)
        except Exception:  # noqa: BLE001 - not importable here: the baseline method reports it clearly
            return ALLOCATOR_METHOD
        if isinstance(obj, Method) and not isinstance(obj, type):
            return name
    return ALLOCATOR_METHOD


def get_method(name: str) -> Method:
    """The method that runs compare method ``name`` (see :func:`method_name`)."""
    return METHODS.get(method_name(name))


def validate_methods(config: ExperimentConfig) -> None:
    """Fail before any work when a ``compare.methods`` entry is unknown or its overrides are not allowed."""
    target = config.compare.sparsities[0] if config.compare.sparsities else None
    for spec in config.compare.method_specs():
        method = get_method(spec.method)
        method.validate(method.cell_config(config, spec, target), spec)
