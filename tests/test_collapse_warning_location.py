"""LayerCollapseWarning points at the user's call site, not at torch's no_grad decorator or our internals."""

from __future__ import annotations

import warnings

from purl.baselines import global_magnitude_prune
from purl.baselines.base import LayerCollapseWarning, get_allocator, user_stacklevel
from purl.pruning import MaskState, find_prunable_layers


def _collapse_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, LayerCollapseWarning)]


def test_global_mp_function_warns_at_callers_line(make_collapse_prone_model) -> None:
    model = make_collapse_prone_model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line() + 1
        global_magnitude_prune(model, 0.95)
    hits = _collapse_warnings(record)
    assert len(hits) == 1
    assert hits[0].filename == __file__, hits[0].filename
    assert hits[0].lineno == line


def test_allocator_methods_warn_at_callers_file(make_collapse_prone_model) -> None:
    """Through apply (torch.no_grad-decorated fast path), prune (MaskState) and prune_model."""
    for call in ("apply", "prune", "prune_model"):
        model = make_collapse_prone_model()
        alloc = get_allocator("global-mp")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            if call == "apply":
                alloc.apply(find_prunable_layers(model), 0.95)
            elif call == "prune":
                alloc.prune(MaskState(model), 0.95)
            else:
                alloc.prune_model(model, 0.95)
        hits = _collapse_warnings(record)
        assert len(hits) == 1, call
        assert hits[0].filename == __file__, (call, hits[0].filename)


def test_generic_allocator_path_warns_at_callers_file(make_collapse_prone_model) -> None:
    """The base-class apply (no torch decorator) of another allocator: uniform at 100 % collapses all."""
    model = make_collapse_prone_model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        get_allocator("uniform").prune_model(model, 1.0)
    hits = _collapse_warnings(record)
    assert hits and hits[0].filename == __file__, [w.filename for w in hits]


def test_user_stacklevel_is_one_outside_the_library() -> None:
    assert user_stacklevel() == 1


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno
