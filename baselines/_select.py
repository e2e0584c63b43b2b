"""Exact global k-smallest selection over many tensors without sorting (or ``kthvalue``-ing) them all.

Used by Global MP (keys = ``|w|``) and LAMP (keys = LAMP scores). Given per-layer non-negative
key tensors and a count ``k``, :func:`select_smallest` returns, for every layer, a :class:`Cut`
saying exactly which weights are among the ``k`` globally smallest keys; ties at the threshold
are taken in layer order, then by increasing flat index, so the result is deterministic and the
count exact. NaN keys count as larger than every number (never pruned unless nothing else is left).

Algorithm (a sample-bracketed selection -- the float analogue of a two-level radix select):

1. Draw a fixed-seed, size-proportional random sample of ``SAMPLE_SIZE`` keys and take two sample
   quantiles ``x < y`` around the target rank ``k / total`` with a ``±4σ`` binomial margin.
2. One streaming pass over the keys in cache-sized groups (small layers concatenated, large ones
   split, ``GROUP_SIZE`` keys each, into reused scratch buffers): ``key < x`` and ``key < y`` as
   boolean masks, per-layer ``count_nonzero`` of the first, and the positions of the band
   ``[x, y)`` (≈1 % of the keys) from the xor of both, found by a word-level ``nonzero``.
3. If the counts bracket ``k``, the exact threshold is the ``(k - #below x)``-th smallest key of
   the small band: one ``kthvalue`` on ~1 % of the data. Per-layer counts below the threshold and
   the tied keys follow from the band.

Step 2 is a handful of vectorised elementwise ops per key; nothing of the size of all keys is ever
allocated. The result never depends on the sample: a bracket that misses (probability ~1e-4) or a
band that is too large (masses of tied keys, e.g. the zeros of an already pruned model) is handled
by one wider bracket, an equality probe, then bisection on the float bit patterns -- each one more
pass, always exact.

On ResNet-50 (25.5 M weights, 2 CPU cores) this costs about 10 elementwise passes and is 60x faster
than ``torch.nn.utils.prune.global_unstructured`` (``topk`` over the concatenated vector); see
``benchmarks/bench_global_mp.py``. A histogram radix pass (``bincount`` on the top 16 bits of
``|w|``) was measured first: ``bincount`` is single-threaded on CPU and alone cost ~10 passes, so
the sample takes the place of the first radix level.

Threads (:func:`cpu_threads`): every op here is a memory-bound streaming pass, and with torch's
OpenMP pool each one is a parallel region that waits for its slowest thread. On a machine where
another process keeps a core busy, a descheduled worker stalls every region (ResNet-50 at 90 %:
~2 s with 2 threads next to busy processes on 2 cores, 0.08 s with one thread, identical masks).
So the selection runs with one thread when the keys are few (``PARALLEL_MIN_NUMEL``) or when no
spare core is free at the time of the call (Linux: runnable threads of other processes, from
``/proc/loadavg``), and with torch's thread count otherwise; torch's setting is restored on exit.
Results never depend on the thread count (counts, comparisons and ``kthvalue`` are exact).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from purl.errors import PruningError

#: Below this many keys in total, the band is simply all keys (one small ``kthvalue``).
EXACT_CUTOFF = 1 << 18
#: Keys sampled to place the bracket.
SAMPLE_SIZE = 1 << 16
#: Bracket margin around the target rank in the sample: ``MARGIN_SIGMAS`` binomial σ + ``MARGIN_EXTRA`` ranks.
MARGIN_SIGMAS = 4.0
MARGIN_EXTRA = 8
#: A layer's band is extracted only if it holds at most ``max(n // BAND_DIVISOR, BAND_MIN)`` keys.
BAND_DIVISOR = 16
BAND_MIN = 4096
#: Safety stop for the refinement loop (bisection needs at most ~64 rounds on float64 bits).
MAX_ROUNDS = 100
_SAMPLE_SEED = 0x5EED
#: Below this many keys per call the selection always runs on one CPU thread (sync costs dominate).
PARALLEL_MIN_NUMEL = 1 << 21
#: Force the CPU thread count of the selection (``None``: automatic, see :func:`cpu_threads`).
SELECT_THREADS: int | None = None


# ------------------------------------------------------------------------------------- threads
def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _own_running_threads() -> int:
    """Threads of this process currently runnable (state ``R``), e.g. OpenMP workers still spinning."""
    running = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
            if stat[stat.rfind(")") + 2:].startswith("R"):
                running += 1
    except OSError:
        return 1
    return max(running, 1)


def free_cpus() -> int:
    """CPUs usable by this process that no other process's runnable thread occupies right now (>= 1).

    Reads the instantaneous runnable-thread count of ``/proc/loadavg`` (Linux) minus this process's own
    runnable threads; elsewhere returns the CPUs available to the process (no contention assumed).
    """
    cpus = _available_cpus()
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cpus
    others = max(0, running - _own_running_threads())
    return max(1, cpus - others)


def choose_threads(numel: int, current: int | None = None) -> int:
    """CPU threads for a selection over ``numel`` keys: 1 below :data:`PARALLEL_MIN_NUMEL`, else
    ``min(current, free_cpus())`` (``current``: torch's thread count); :data:`SELECT_THREADS` overrides."""
    current = torch.get_num_threads() if current is None else current
    if SELECT_THREADS is not None:
        return max(1, SELECT_THREADS)
    if numel < PARALLEL_MIN_NUMEL or current <= 1:
        return 1
    return max(1, min(current, free_cpus()))


@contextmanager
def cpu_threads(numel: int) -> Iterator[int]:
    """Run the block with :func:`choose_threads` ``(numel)`` torch CPU threads; torch's count is restored after.

    Why: a pass split over threads waits for the slowest one, and next to a busy process that is the one
    sharing its core. The choice only changes speed, never results.
    """
    previous = torch.get_num_threads()
    n = choose_threads(numel, previous)
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != previous:
            torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------- keys
class KeySource:
    """Per-layer flat non-negative keys of a common floating dtype (``float32`` or ``float64``)."""

    dtype: torch.dtype

    def numel(self, i: int) -> int:
        raise NotImplementedError

    def full(self, i: int) -> Tensor:
        """All keys of layer ``i`` (may be a scratch view, valid until the next call)."""
        raise NotImplementedError

    def gather(self, i: int, index: Tensor) -> Tensor:
        """Keys of layer ``i`` at flat positions ``index``."""
        raise NotImplementedError

    def device(self, i: int) -> torch.device:
        raise NotImplementedError

    def fill(self, pieces: Sequence[tuple[int, int, int]], out: Tensor) -> Tensor:
        """Write the keys of ``pieces`` ``(layer, start, end)``, concatenated, into ``out`` (flat)."""
        pos = 0
        for i, a, b in pieces:
            out[pos:pos + b - a].copy_(self.full(i)[a:b])
            pos += b - a
        return out


def key_dtype(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    """float64 if any tensor is float64, else float32 (half/bfloat16 upcast exactly)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


class AbsKeys(KeySource):
    """Keys ``|w|`` of weight tensors, computed on the fly into one reused scratch buffer."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.flats = [t.detach().reshape(-1) for t in tensors]
        self.dtype = key_dtype([t.dtype for t in tensors])
        self._scratch: dict[torch.device, Tensor] = {}

    def numel(self, i: int) -> int:
        return self.flats[i].numel()

    def device(self, i: int) -> torch.device:
        return self.flats[i].device

    def full(self, i: int) -> Tensor:
        flat = self.flats[i]
        n = flat.numel()
        buf = self._scratch.get(flat.device)
        if buf is None or buf.numel() < n:
            size = max((f.numel() for f in self.flats if f.device == flat.device), default=n)
            buf = torch.empty(size, dtype=self.dtype, device=flat.device)
            self._scratch[flat.device] = buf
        out = buf[:n]
        if flat.dtype == self.dtype:
            return torch.abs(flat, out=out)
        return out.copy_(flat).abs_()

    def gather(self, i: int, index: Tensor) -> Tensor:
        flat = self.flats[i]
        return flat.index_select(0, index.to(flat.device)).abs().to(self.dtype)

    def fill(self, pieces: Sequence[tuple[int, int, int]], out: Tensor) -> Tensor:
        parts = [self.flats[i][a:b] for i, a, b in pieces]
        if len(parts) == 1 and parts[0].dtype == self.dtype:
            return torch.abs(parts[0], out=out)
        if all(p.dtype == self.dtype for p in parts):
            torch.cat(parts, out=out)  # one copy for the whole group, then one in-place abs
        else:
            pos = 0
            for p in parts:
                out[pos:pos + p.numel()].copy_(p)
                pos += p.numel()
        return out.abs_()


class TensorKeys(KeySource):
    """Precomputed per-layer key tensors (e.g. LAMP scores)."""

    def __init__(self, keys: Sequence[Tensor]) -> None:
        self.dtype = key_dtype([k.dtype for k in keys])
        self.keys = [k.detach().reshape(-1).to(self.dtype) for k in keys]

    def numel(self, i: int) -> int:
        return self.keys[i].numel()

    def device(self, i: int) -> torch.device:
        return self.keys[i].device

    def full(self, i: int) -> Tensor:
        return self.keys[i]

    def gather(self, i: int, index: Tensor) -> Tensor:
        return self.keys[i].index_select(0, index.to(self.keys[i].device))

    def fill(self, pieces: Sequence[tuple[int, int, int]], out: Tensor) -> Tensor:
        return torch.cat([self.keys[i][a:b] for i, a, b in pieces], out=out)


# ---------------------------------------------------------------------------------------- cuts
@dataclass
class Cut:
    """Which weights of one layer are pruned: keys ``< threshold``, plus the first ``ties_pruned``
    (in flat-index order) of the ``ties`` keys equal to ``threshold``. ``count`` is the total."""

    numel: int
    count: int
    threshold: float = 0.0
    ties: int = 0
    ties_pruned: int = 0
    tie_index: Tensor | None = field(default=None, repr=False)  # sorted flat indices of the ties, if known

    @property
    def partial_ties(self) -> bool:
        """True when some tied keys are kept (the mask is not a plain ``key > threshold``)."""
        return 0 < self.count < self.numel and self.ties_pruned < self.ties

    def split(self, key: Tensor) -> int:
        """Flat position ``p``: tied keys at index ``< p`` are pruned, the others kept."""
        if self.ties_pruned == 0:
            return 0
        if self.ties_pruned == self.ties:
            return self.numel
        index = self.tie_index if self.tie_index is not None else torch.nonzero(key == self.threshold).squeeze(1)
        return int(index[self.ties_pruned - 1]) + 1

    def keep_mask(self, key: Tensor) -> Tensor:
        """Flat boolean keep-mask from the layer's flat keys."""
        if self.count == 0:
            return torch.ones(self.numel, dtype=torch.bool, device=key.device)
        if self.count == self.numel:
            return torch.zeros(self.numel, dtype=torch.bool, device=key.device)
        keep = torch.le(key, self.threshold).logical_not_()  # NaN keys are kept, as in the selection
        if self.ties_pruned < self.ties:
            p = self.split(key)
            keep[p:] |= key[p:] == self.threshold
        return keep


# ---------------------------------------------------------------------------------- bit helpers
_INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64}


def _bits(value: float, dtype: torch.dtype) -> int:
    return int(torch.tensor(value, dtype=dtype).view(_INT_OF[dtype]).item())


def _from_bits(bits: int, dtype: torch.dtype) -> float:
    return float(torch.tensor(bits, dtype=_INT_OF[dtype]).view(dtype).item())


# ----------------------------------------------------------------------------------------- scan
@dataclass
class _Scan:
    below_x: list[int]
    below_y: list[int]
    band_index: list[Tensor | None]  # sorted layer-local positions of the band keys (None: not extracted,
    band_values: list[Tensor | None]  # or, for the index only, the whole layer); None: band too large

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.band_values)


class _Scanner:
    """Streams the keys in groups of at most ``GROUP_SIZE``: small layers are concatenated into one
    scratch buffer, large ones split into pieces, so every vectorised op is large (few kernel launches
    and thread-pool synchronisations) while the working set stays cache-sized and memory bounded."""

    def __init__(self, src: KeySource, ids: Sequence[int], unlimited: bool) -> None:
        self.src = src
        self.ids = list(ids)
        self.unlimited = unlimited
        self.sizes = [src.numel(i) for i in self.ids]
        size = max(1, GROUP_SIZE)
        self.groups: list[list[tuple[int, int, int]]] = []  # pieces (position in ids, start, end)
        current: list[tuple[int, int, int]] = []
        used = 0
        for j, n in enumerate(self.sizes):
            if current and src.device(self.ids[j]) != src.device(self.ids[current[0][0]]):
                self.groups.append(current)
                current, used = [], 0
            a = 0
            while a < n:
                b = min(n, a + size - used)
                current.append((j, a, b))
                used += b - a
                a = b
                if used >= size:
                    self.groups.append(current)
                    current, used = [], 0
        if current:
            self.groups.append(current)
        self._buffers: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _scratch(self, device: torch.device, m: int) -> tuple[Tensor, Tensor, Tensor]:
        bufs = self._buffers.get(device)
        padded = -(-m // 8) * 8
        if bufs is None or bufs[1].numel() < padded:
            size = -(-max(sum(b - a for _, a, b in g) for g in self.groups) // 8) * 8
            bufs = (
                torch.empty(size, dtype=self.src.dtype, device=device),
                torch.zeros(size, dtype=torch.bool, device=device),
                torch.zeros(size, dtype=torch.bool, device=device),
            )
            self._buffers[device] = bufs
        return bufs[0][:m], bufs[1][:padded], bufs[2][:padded]

    def scan(self, x: float, y: float | None, extract: bool = True) -> _Scan:
        """Count keys ``< x`` and ``< y`` per layer (``y=None``: +infinity) and extract the band ``[x, y)``.

        With ``extract``, a layer's band is kept unless it holds more than
        ``max(n // BAND_DIVISOR, BAND_MIN)`` keys (then it is dropped: memory stays bounded); without,
        only counts are taken (for bands expected to be huge, e.g. masses of tied keys).
        """
        n_ids = len(self.ids)
        below_x, below_y = [0] * n_ids, [0] * n_ids
        index_parts: list[list[Tensor]] = [[] for _ in range(n_ids)]
        value_parts: list[list[Tensor]] = [[] for _ in range(n_ids)]
        dropped = [not extract] * n_ids
        for group in self.groups:
            m = sum(b - a for _, a, b in group)
            device = self.src.device(self.ids[group[0][0]])
            buf, bx, by = self._scratch(device, m)
            keys = self.src.fill([(self.ids[j], a, b) for j, a, b in group], buf)
            offsets = [0]
            for _, a, b in group:
                offsets.append(offsets[-1] + b - a)
            mx = torch.lt(keys, x, out=bx[:m])
            cx = [int(torch.count_nonzero(mx[offsets[g]:offsets[g + 1]])) for g in range(len(group))]
            index: Tensor | None = None
            if y is None:
                cy = [b - a for _, a, b in group]
                if extract:
                    torch.logical_not(mx, out=by[:m])
                    by[m:] = False
                    index = _flatnonzero(by)
            else:
                my = torch.lt(keys, y, out=by[:m])
                if extract:
                    my.logical_xor_(mx)  # x <= key < y
                    by[m:] = False
                    index = _flatnonzero(by)
                else:
                    cy = [int(torch.count_nonzero(my[offsets[g]:offsets[g + 1]])) for g in range(len(group))]
            if index is not None:
                bounds = torch.searchsorted(index, torch.tensor(offsets, device=index.device)).tolist()
                cy = [cx[g] + bounds[g + 1] - bounds[g] for g in range(len(group))]
            for g, (j, a, _) in enumerate(group):
                below_x[j] += cx[g]
                below_y[j] += cy[g]
                if index is not None and not dropped[j] and bounds[g + 1] > bounds[g]:
                    local = index[bounds[g]:bounds[g + 1]]
                    value_parts[j].append(keys.index_select(0, local))
                    index_parts[j].append(local + (a - offsets[g]))
                    n = self.sizes[j]
                    limit = n if self.unlimited else max(n // BAND_DIVISOR, BAND_MIN)
                    if sum(v.numel() for v in value_parts[j]) > limit:  # too many: drop, probe further
                        dropped[j] = True
                        value_parts[j], index_parts[j] = [], []
        return self._assemble(below_x, below_y, index_parts, value_parts, dropped)

    def _assemble(self, below_x: list[int], below_y: list[int], index_parts: list[list[Tensor]],
                  value_parts: list[list[Tensor]], dropped: list[bool]) -> _Scan:
        """The scan's result: per layer its counts and its band (empty when none, None when dropped)."""
        n_ids = len(self.ids)
        out = _Scan(below_x, below_y, [None] * n_ids, [None] * n_ids)
        for j in range(n_ids):
            if below_y[j] == below_x[j]:
                device = self.src.device(self.ids[j])
                out.band_index[j] = torch.empty(0, dtype=torch.long, device=device)
                out.band_values[j] = torch.empty(0, dtype=self.src.dtype, device=device)
            elif not dropped[j]:
                out.band_index[j] = torch.cat(index_parts[j]) if len(index_parts[j]) > 1 else index_parts[j][0]
                out.band_values[j] = torch.cat(value_parts[j]) if len(value_parts[j]) > 1 else value_parts[j][0]
        return out


#: Keys per scratch group (at least the largest layer): bounds the scratch memory of a scan.
GROUP_SIZE = 1 << 22


def _flatnonzero(mask: Tensor) -> Tensor:
    """Sorted positions of the True values of a flat bool ``mask`` whose length is a multiple of 8.

    Scans 64-bit words first (8x fewer elements than ``torch.nonzero`` on the bools), then expands
    only the non-zero words: ~2x faster for sparse masks.
    """
    words = torch.nonzero(mask.view(torch.int64)).squeeze(1)
    candidates = (words.unsqueeze(1) * 8 + torch.arange(8, device=mask.device)).view(-1)
    return candidates[mask.index_select(0, candidates)]


# ------------------------------------------------------------------------------------- sampling
class _Sample:
    """A fixed-seed, size-proportional random sample of the keys (only used to place brackets)."""

    def __init__(self, src: KeySource, ids: Sequence[int], total: int) -> None:
        gen = torch.Generator().manual_seed(_SAMPLE_SEED)
        parts = []
        for i in ids:
            n = src.numel(i)
            m = int(round(SAMPLE_SIZE * n / total))
            if m:
                parts.append(src.gather(i, torch.randint(n, (m,), generator=gen)).to("cpu"))
        self.values = torch.cat(parts) if parts else torch.zeros(1, dtype=src.dtype)
        self.size = self.values.numel()

    def bracket(self, q: float, widen: float) -> tuple[float, float | None]:
        s = self.size
        margin = widen * (MARGIN_SIGMAS * math.sqrt(s * q * (1.0 - q)) + MARGIN_EXTRA)
        lo_rank = math.floor(q * s - margin)
        hi_rank = math.ceil(q * s + margin)
        x = float(self.values.kthvalue(lo_rank + 1).values) if lo_rank >= 0 else 0.0
        y = float(self.values.kthvalue(hi_rank + 1).values) if hi_rank < s else None
        return x, y

    def band_fraction(self, x: float, y: float | None) -> float:
        """Fraction of the sample in ``[x, y)``: the expected share of all keys the band will hold."""
        inside = self.values >= x if y is None else (self.values >= x) & (self.values < y)
        return int(inside.sum()) / self.size


def _clip_probe(x: float, y: float | None, lb: int, ub: int, dtype: torch.dtype) -> tuple[float, float | None]:
    """Clip a probe pair into the known bit interval ``[lb, ub]`` and make ``y > x``."""
    inf_bits = _bits(math.inf, dtype)
    xb = min(max(_bits(x, dtype), lb), ub)
    if y is None:
        yb = None
    else:
        yb = min(_bits(y, dtype), ub + 1)
        if yb <= xb:
            yb = xb + 1
        if yb > inf_bits:
            yb = None
    return _from_bits(xb, dtype), (None if yb is None else _from_bits(yb, dtype))


# ------------------------------------------------------------------------------------ selection
def _finish(ids: list[int], sizes: list[int], k: int, t: float, below: list[int], ties: list[int],
            tie_index: list[Tensor | None]) -> dict[int, Cut]:
    need = k - sum(below)
    if need < 0 or need > sum(ties):
        raise PruningError("internal error in global selection (inconsistent counts); please report")
    cuts: dict[int, Cut] = {}
    for j, i in enumerate(ids):
        take = min(ties[j], need)
        need -= take
        cuts[i] = Cut(sizes[j], below[j] + take, t, ties[j], take, tie_index[j])
    return cuts


def select_smallest(src: KeySource, ids: Sequence[int], k: int) -> dict[int, Cut]:
    """The ``k`` smallest keys over layers ``ids`` (ties: layer order, then flat index), as per-layer cuts."""
    ids = list(ids)
    sizes = [src.numel(i) for i in ids]
    total = sum(sizes)
    if not 0 <= k <= total:
        raise PruningError(f"cannot prune {k} of {total} weights")
    if k == 0 or k == total:
        return {i: Cut(n, 0 if k == 0 else n) for i, n in zip(ids, sizes, strict=True)}
    with cpu_threads(total):  # one thread for few keys or on a busy machine (speed only; same result)
        return _select_smallest(src, ids, sizes, total, k)


def _select_smallest(src: KeySource, ids: list[int], sizes: list[int], total: int, k: int) -> dict[int, Cut]:
    dtype = src.dtype
    small = total <= EXACT_CUTOFF
    scanner = _Scanner(src, ids, unlimited=small)
    lb, ub = 0, _bits(math.inf, dtype)  # invariant: the threshold's bit pattern lies in [lb, ub]
    sample: _Sample | None = None
    if small:
        x, y = 0.0, None
        extract = True
    else:
        sample = _Sample(src, ids, total)
        x, y = _clip_probe(*sample.bracket(k / total, 1.0), lb, ub, dtype)
        extract = sample.band_fraction(x, y) <= 0.5 / BAND_DIVISOR  # else: masses of ties, count only
    misses = 0
    probed_tie = False
    for _ in range(MAX_ROUNDS):
        scan = scanner.scan(x, y, extract)
        below_x, below_y = sum(scan.below_x), sum(scan.below_y)
        xb = _bits(x, dtype)
        yb = None if y is None else _bits(y, dtype)
        if k <= below_x:  # threshold < x
            ub = xb - 1
            misses += 1
        elif k <= below_y:  # threshold in [x, y)
            if yb == xb + 1:  # the band holds only the value x: resolve from counts
                ties = [cy - cx for cx, cy in zip(scan.below_x, scan.below_y, strict=True)]
                return _finish(ids, sizes, k, x, scan.below_x, ties, scan.band_index)
            if scan.complete:
                return _resolve_band(scan, ids, sizes, k)
            lb, ub = xb, (ub if yb is None else yb - 1)
            if not probed_tie:  # masses of equal keys (e.g. zeros): is the threshold exactly x?
                probed_tie = True
                x, y = _clip_probe(x, _from_bits(xb + 1, dtype), lb, ub, dtype)
                extract = False
                continue
        else:  # threshold >= y
            if yb is None:
                raise PruningError("cannot select a magnitude threshold: the weights contain NaN")
            lb = yb
            misses += 1
        if lb > ub:
            raise PruningError("cannot select a magnitude threshold: the weights contain NaN")
        if sample is not None and misses == 1 and not probed_tie:
            x, y = _clip_probe(*sample.bracket(k / total, 8.0), lb, ub, dtype)  # one much wider retry
            extract = sample.band_fraction(x, y) <= 0.5 / BAND_DIVISOR
            misses += 1
        elif lb == ub:  # a single candidate value: counts decide
            x, y = _from_bits(lb, dtype), (None if lb == _bits(math.inf, dtype) else _from_bits(lb + 1, dtype))
            extract = False
        else:  # bisection on the bit pattern, band [mid, ub]
            mid = (lb + ub + 1) // 2
            x = _from_bits(mid, dtype)
            y = None if ub >= _bits(math.inf, dtype) else _from_bits(ub + 1, dtype)
            extract = True
        x, y = _clip_probe(x, y, lb, ub, dtype)
    raise PruningError("cannot select a magnitude threshold (did not converge; do the weights contain NaN?)")


def _resolve_band(scan: _Scan, ids: list[int], sizes: list[int], k: int) -> dict[int, Cut]:
    values = [v for v in scan.band_values if v is not None]
    device = values[0].device
    lengths = [v.numel() for v in values]
    band = torch.cat([v.to(device) for v in values])
    rank = k - sum(scan.below_x)
    t = float(band.kthvalue(rank).values)
    if math.isnan(t):
        raise PruningError("cannot select a magnitude threshold: the weights contain NaN")
    layer_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    below_add = torch.bincount(layer_of[band < t], minlength=len(lengths)).tolist()
    tie_pos = torch.nonzero(band == t).squeeze(1)
    tie_layer = layer_of.index_select(0, tie_pos).tolist()
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    ties = [0] * len(ids)
    tie_index: list[Tensor | None] = [None] * len(ids)
    for j in sorted(set(tie_layer)):
        local = tie_pos[tie_pos.new_tensor(tie_layer) == j] - offsets[j]
        idx = scan.band_index[j]
        ties[j] = local.numel()
        tie_index[j] = local if idx is None else idx.index_select(0, local)
    below = [scan.below_x[j] + below_add[j] for j in range(len(ids))]
    return _finish(ids, sizes, k, t, below, ties, tie_index)


def select_with_caps(src: KeySource, ids: Sequence[int], k: int, caps: Sequence[int]) -> dict[int, Cut]:
    """:func:`select_smallest` where layer ``ids[j]`` may lose at most ``caps[j]`` weights.

    Layers whose share at the global threshold would exceed their cap are clamped to the cap (their
    ``cap`` smallest keys), and the threshold is recomputed on the remaining layers for the remaining
    budget, until no layer exceeds its cap. Exact by count; requires ``k <= sum(caps)``.
    """
    ids = list(ids)
    cap_of = dict(zip(ids, caps, strict=True))
    if k > sum(cap_of.values()):
        raise PruningError(f"cannot prune {k} weights: the per-layer caps allow {sum(cap_of.values())}")
    cuts: dict[int, Cut] = {}
    active = []
    for i in ids:
        if cap_of[i] <= 0:
            cuts[i] = Cut(src.numel(i), 0)
        else:
            active.append(i)
    budget = k
    while True:
        found = select_smallest(src, active, budget) if active else {}
        over = [i for i in active if found[i].count > cap_of[i]]
        if not over:
            cuts.update(found)
            break
        for i in over:
            cuts[i] = select_smallest(src, [i], cap_of[i])[i]
            budget -= cap_of[i]
        active = [i for i in active if i not in over]
    return {i: cuts[i] for i in ids}
