"""Export a pruned model so it runs without PuRL: a ``torch.export`` program (``.pt2``) and ONNX (``.onnx``).

Both artefacts load in a fresh Python process that has only PyTorch and ONNX Runtime::

    import torch, onnxruntime as ort
    model = torch.export.load("model.pt2").module()          # an nn.Module-like callable
    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x.numpy()})[0]

The batch dimension is dynamic in both (any batch from 1 up), the other input dimensions are those of the
example input. ``torch.export`` is used instead of TorchScript because ``torch.jit`` is deprecated in the
PyTorch releases PuRL supports; ONNX goes through ``torch.onnx.export``'s default (``torch.export``-based)
exporter, at its default opset, which needs the ``onnxscript`` package.

**Granularity matters for what you get.**

* ``granularity="channel"``: the model passed in should be the physically slimmed one
  (:func:`purl.pruning.channels.prune_channels`); its artefacts are smaller and, on dense kernels, faster.
* ``granularity="weight"``: the artefact is the *masked dense* model. Pruned weights are stored as zeros
  at full shape, so the file is as large as the dense one and it is **not faster**: every dense kernel
  (PyTorch, ONNX Runtime, cuDNN) multiplies the zeros like any other weight. The metadata file says so.

Files are written to temporary files in the same folder, checked, and renamed into place (with every
output's mode, 0666 minus the umask) only once every requested artefact succeeded, so an export that fails
leaves earlier artefacts of the same name intact; a folder that cannot be written raises
:class:`~purl.errors.OutputError`, an unexportable model :class:`ExportError` (a
:class:`~purl.errors.PurlError`), both with a one-line message.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from purl.checkpoint import default_file_mode
from purl.errors import ConfigError, OutputError, PurlError

__all__ = ["FORMATS", "GRANULARITIES", "ExportError", "ExportResult", "export_model", "load_onnx", "load_program"]

#: artefact formats written by :func:`export_model`
FORMATS: tuple[str, ...] = ("pt2", "onnx")
GRANULARITIES: tuple[str, ...] = ("weight", "channel")

WEIGHT_NOTE = (
    "masked dense model (weight granularity): pruned weights are stored as zeros at full shape; it is NOT "
    "faster than the dense model, since dense kernels multiply the zeros like any other weight"
)
CHANNEL_NOTE = "physically slimmed model (channel granularity): pruned channels are removed, shapes are smaller"


class ExportError(PurlError):
    """The model cannot be exported (tracing failed, or the artefact does not reproduce the model)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the artefacts are and what they contain (also written as ``<name>.json`` next to them)."""

    paths: dict[str, str]  # format -> file path
    granularity: str
    note: str
    input_shape: list[int]  # example input shape; the batch dimension (0) is dynamic
    params: int
    max_abs_diff: dict[str, float]  # format -> max |artefact - model| on the example input (check=True)
    torch_version: str


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Callable[[Path], Path]]:
    """Temporary files next to their targets; all are removed on exit (the committed ones were renamed)."""
    temps: list[Path] = []

    def stage(path: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=out)
        os.close(fd)
        temps.append(Path(name))
        return Path(name)

    try:
        yield stage
    finally:
        for tmp in temps:
            for leftover in (tmp, tmp.with_name(tmp.name + ".data")):  # .data: ONNX external data, if any
                with contextlib.suppress(OSError):
                    leftover.unlink()


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and deprecation chatter (errors still propagate)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
        io.StringIO()
    ):
        warnings.simplefilter("ignore")
        yield


def _dynamic_batch(example: Tensor) -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 20)},) if example.dim() > 0 else ({},)


def _probe(example: Tensor) -> Tensor:
    """A batch of a different size than the example (checks the batch dimension is really dynamic)."""
    n = int(example.shape[0]) if example.dim() > 0 else 1
    gen = torch.Generator().manual_seed(0)
    return torch.randn((n + 1, *example.shape[1:]), generator=gen).to(example.dtype)


def load_program(path: str | os.PathLike[str]) -> Callable[..., Any]:
    """Load a ``.pt2`` artefact written by :func:`export_model` (needs only PyTorch)."""
    return torch.export.load(str(path)).module()


def load_onnx(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for a ``.onnx`` artefact, ``threads`` intra-op threads (1: quiet timing)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def export_model(
    model: nn.Module,
    example_input: Tensor,
    out_dir: str | os.PathLike[str],
    *,
    name: str = "model",
    granularity: str = "channel",
    formats: Sequence[str] = FORMATS,
    check: bool = True,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (in eval mode) as ``out_dir/<name>.pt2`` and/or ``.onnx``, plus ``<name>.json``.

    ``granularity`` only labels the artefact honestly: ``"weight"`` marks it as the masked dense model,
    which is not faster (see the module docstring). With ``check`` each artefact is reloaded and run on
    the example input and on a batch of another size, and must match the in-memory model within
    ``atol`` (else :class:`ExportError`). The model is not modified (its train/eval flags are restored).
    """
    formats = _check_request(granularity, formats, example_input, name)
    out = _writable_dir(out_dir)
    example = example_input.detach()
    probe = _probe(example)
    paths: dict[str, str] = {}
    diffs: dict[str, float] = {}
    with _eval(model), torch.no_grad():
        reference = {"example": model(example), "probe": model(probe)}
    with _eval(model), _staged(out) as stage:
        program = _trace(model, example)
        staged: dict[Path, Path] = {}  # final path -> checked temporary file; renamed only when all succeeded
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            tmp = stage(path)
            _write_artefact(fmt, program, model, example, path, tmp)
            if check:
                diffs[fmt] = _check(fmt, tmp, example, probe, reference, atol)
            staged[path] = tmp
            paths[fmt] = str(path)
        result = ExportResult(
            paths=paths,
            granularity=granularity,
            note=WEIGHT_NOTE if granularity == "weight" else CHANNEL_NOTE,
            input_shape=[int(d) for d in example.shape],
            params=int(sum(p.numel() for p in model.parameters())),
            max_abs_diff=diffs,
            torch_version=torch.__version__,
        )
        _publish(stage, staged, out / f"{name}.json", result)
    return result


def _check_request(granularity: str, formats: Sequence[str], example_input: Any, name: str) -> list[str]:
    """The formats to write (deduplicated), after refusing a bad granularity, format, example or name."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"export granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"export formats must be a non-empty subset of {', '.join(FORMATS)}, got {formats!r}")
    if not isinstance(example_input, Tensor):
        raise ConfigError(f"export needs one example input tensor, got {type(example_input).__name__}")
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ConfigError(f"export name must be a plain file name stem, got {name!r}")
    return formats


def _writable_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir``, created if missing; an OutputError when it cannot be written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied", str(out))
    except OSError as exc:
        raise OutputError(f"cannot write exports to '{out}': {exc.strerror or exc}", exc) from exc
    return out


def _trace(model: nn.Module, example: Tensor) -> Any:
    """``torch.export`` program of ``model`` with a dynamic batch dimension (an ExportError if it cannot trace)."""
    try:
        with _quiet():
            return torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch(example))
    except Exception as exc:
        raise ExportError(f"torch.export cannot trace the model: {type(exc).__name__}: {_first_line(exc)}") from exc


def _write_artefact(fmt: str, program: Any, model: nn.Module, example: Tensor, path: Path, tmp: Path) -> None:
    """Write one format to the staged ``tmp`` (``path`` names it in errors)."""
    try:
        if fmt == "pt2":
            torch.export.save(program, str(tmp))
        else:
            _write_onnx(model, example, tmp)
    except PurlError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write '{path}': {exc.strerror or exc}", exc) from exc
    except Exception as exc:
        raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def _publish(stage: Callable[[Path], Path], staged: dict[Path, Path], meta: Path, result: ExportResult) -> None:
    """Write the metadata, then rename every checked artefact into place (all or nothing)."""
    try:
        tmp = stage(meta)
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
        staged[meta] = tmp
        mode = default_file_mode()  # the staged files are mkstemp's 0600; give them every output's mode
        for path, tmp in staged.items():
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write '{meta}': {exc.strerror or exc}", exc) from exc



def export_pruned(model: nn.Module, input_shape: Sequence[int], out_dir: str | os.PathLike[str], *,
                  name: str = "pruned", granularity: str = "channel") -> ExportResult:
    """Export a pruned model for inference (a CPU copy in eval mode, the model itself untouched) with a
    batch-2 example input: ``torch.export`` would specialise a batch dimension of size 1 to a constant.
    Used by ``purl prune`` and by compare's channel cells (``cells/<cell>/pruned.pt2``/``.onnx``)."""
    import copy

    cpu = copy.deepcopy(model).cpu().eval()
    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    return export_model(cpu, example, out_dir, name=name, granularity=granularity)

def export_fields(model: nn.Module, input_shape: Sequence[int], out_dir: str | os.PathLike[str], *,
                  granularity: str) -> dict[str, Any]:
    """:func:`export_pruned` as results fields: ``exports`` (format -> path) and ``export_note``, or, when the
    model cannot be exported, ``export_error`` (one line) so a finished pruning run is never lost to it.
    A folder that cannot be written still raises :class:`~purl.errors.OutputError`."""
    try:
        exported = export_pruned(model, input_shape, out_dir, granularity=granularity)
    except ExportError as exc:
        return {"exports": None, "export_note": None, "export_error": str(exc)}
    return {"exports": exported.paths, "export_note": exported.note}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _write_onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (torch.onnx's default exporter needs it)
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs the 'onnxscript' package; install it with: pip install onnxscript"
        ) from exc
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=_dynamic_batch(example),
            external_data=False,
        )


def _check(fmt: str, path: Path, example: Tensor, probe: Tensor, reference: dict[str, Any], atol: float) -> float:
    """Reload artefact ``path`` and return its max abs difference to the model (ExportError above atol)."""
    worst = 0.0
    if fmt == "pt2":
        loaded = load_program(path)
        with torch.no_grad():
            outs = {"example": loaded(example), "probe": loaded(probe)}
    else:
        sess = load_onnx(path)
        feed = sess.get_inputs()[0].name
        outs = {k: torch.from_numpy(sess.run(None, {feed: x.cpu().numpy()})[0]) for k, x in
                (("example", example), ("probe", probe))}
    for key, ref in reference.items():
        got, want = outs[key], ref
        if isinstance(got, (tuple, list)):
            got = got[0]
        if isinstance(want, (tuple, list)):
            want = want[0]
        diff = float((got.float().cpu() - want.float().cpu()).abs().max()) if want.numel() else 0.0
        worst = max(worst, diff)
    if not worst <= atol:  # also catches NaN
        raise ExportError(
            f"the exported {fmt} model differs from the model by {worst:.3g} (> {atol:g}); nothing was written"
        )
    return worst
