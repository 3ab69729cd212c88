"""One streaming loader for training and evaluation over the image shards (`heartbeit render` output).

Pipeline per (rank, worker):
  shard list (index.json, name order) -> per-epoch shard shuffle (seed, epoch) -> node split
  (urls[rank::world_size], rank from webdataset's `pytorch_worker_info`: RANK/WORLD_SIZE or
  torch.distributed) -> worker split (urls[w::num_workers], the islice semantics of `wds.split_by_node` /
  `wds.split_by_worker`) -> samples from the tar (`read_tar_samples`, members grouped by key as
  `wds.tarfile_to_samples` does) -> filter (fraction / task label present) -> buffer shuffle seeded by
  (seed, epoch, rank, worker) -> skip already-consumed samples (resume) -> decode -> batch in the worker.

Speed (bench/loader.py): the per-sample work outside PNG decoding is kept small. Shards are plain ustar
files written by `heartbeit render`, read with a direct header parser (webdataset's generic tar pipeline
and `tarfile` cost about a third of a decode per sample); each sample's JSON is parsed once; images are
decoded straight into one preallocated uint8 batch array (in shared memory inside a DataLoader worker, so
handing the batch to the trainer copies nothing) and labels into one float array; the DataLoader gets an
identity collate so it does not walk the batch. Per-sample metadata dicts (`meta`) are the one part that
is pickled between processes: training passes `with_meta=False`; evaluation keeps them. `decode_threads` > 1
decodes each batch in that many threads of the process that reads it (libpng holds no GIL while decoding) and
runs one batch ahead: a batch goes to the decode threads as soon as it is assembled, and the reading thread
assembles the next one and decodes what is left of the current one before handing it out, so decoding goes on
while the consumer works (a trainer waiting on its accelerator). On a small node this beats worker processes,
whose fresh shared-memory batches and trainer-side receiving cost more than they save (bench/loader.py
measures both set-ups, and the overlap with a consumer).

Modalities: `modality="wave"` reads the sibling `<shard>.wave.tar` of each image shard and yields the stored
filtered waveforms (float32 mV [B, 12, L]) instead of images, for signal-domain models; same splits, same
sample order. `subset` (ecg_uids) restricts a split to an explicit set, e.g. a repeated training draw.

Coverage: with at least as many shards as (rank, worker) slots, shards are dealt whole to exactly one slot
per epoch; with fewer (4 ranks x 2 workers over 3 shards), samples are dealt one by one over the epoch's
shard order and each slot reads only its own samples' bytes through the shards' member-offset index
(heartbeit.data.members; `slot_reads`). Either way an epoch yields every sample of the split exactly once
across all ranks x workers (evaluation gathers predictions from all ranks).

Subsets: a fraction, task or explicit `subset` filter is resolved against manifest.parquet once per stream
(`SplitSelection`, heartbeit.data.loading.dealing; the manifest is read once per process); a shard the filter does not
keep whole is read by byte range, only the kept samples (a 1 % cell reads ~1 % of the split). The stream is
the one a whole-shard read would give after filtering, so batches are identical. Shards rendered before the
index existed are read whole.

Uneven splits in training: ranks may hold different sample counts. The shard assignment is a known
function of (epoch, seed, world size, workers), so the selection's `plan` gives every (rank, worker)'s sample
count without reading a tar; `make_loader(..., equalize=True)` (the training default) stops every rank after
the smallest rank's batch count, so all ranks take the same number of optimizer steps. The surplus of larger
ranks is skipped that epoch only: shard order is reshuffled every epoch, so different samples are skipped.

Epochs, persistent workers and exact resume: `ImageLoader` (heartbeit.data.loading.epoch_loader).
"""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import torch
import webdataset as wds

from heartbeit.config.matrix import TASKS

from heartbeit.data import members
from heartbeit.data.loading.batch_arrays import BatchDecode, as_tensors, batch_array
from heartbeit.data.loading.dealing import SplitSelection, epoch_shards, read_index, shard_names, shard_totals, slot_reads
from heartbeit.data.loading.epoch_loader import ImageLoader
from heartbeit.data.shard_format import MODALITIES, decode_member, decode_wave_into, member_shape


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    r, w, _, _ = wds.utils.pytorch_worker_info()
    return (int(rank) if rank is not None else r), (int(world_size) if world_size is not None else w)


class SampleFilter:
    """Keep samples in `task`'s training `fraction` or in `subset` (a set of ecg_uids, e.g. a repeated
    training draw) with a label for `task` (picklable, so DataLoader workers started by spawn/forkserver can
    receive it). Fractions are per task, so a fraction needs its task."""

    def __init__(self, fraction: float | None, task: str | None, subset: frozenset | None = None,
                 tasks: tuple[str, ...] = TASKS):
        if task is not None and task not in tasks:
            raise ValueError(f"unknown task {task!r}; these images are labelled for {list(tasks)} "
                             "(your own tasks: render.tasks, then re-render)")
        if fraction is not None and task is None:
            raise ValueError("training fractions are per task: pass the task with the fraction")
        self.fraction, self.task = fraction, task
        self.subset = None if subset is None else frozenset(subset)

    def __call__(self, meta: dict) -> bool:
        if self.fraction is not None and not any(abs(f - self.fraction) < 1e-9
                                                 for f in (meta.get("fractions") or {}).get(self.task, [])):
            return False
        if self.subset is not None and meta["ecg_uid"] not in self.subset:
            return False
        return self.task is None or meta["labels"].get(self.task) is not None


def _deterministic_shuffle(samples: Iterator[tuple], bufsize: int, rng: np.random.Generator) -> Iterator[tuple]:
    buf: list[tuple] = []
    for sample in samples:
        if len(buf) < bufsize:
            buf.append(sample)
            continue
        i = int(rng.integers(len(buf)))
        out, buf[i] = buf[i], sample
        yield out
    while buf:
        yield buf.pop(int(rng.integers(len(buf))))


class ImageStream(torch.utils.data.IterableDataset):
    """Batches of decoded images for one rank. Use through `make_loader` (or iterate with num_workers=0)."""

    def __init__(self, images_dir: str | Path, split: str, fraction: float | None = None, task: str | None = None,
                 epoch: int = 0, seed: int = 0, shuffle: bool = True, with_tokens: bool = False,
                 batch_size: int = 32, drop_last: bool = False, shuffle_buffer: int = 1000,
                 rank: int | None = None, world_size: int | None = None, with_meta: bool = True,
                 modality: str = "image", subset: frozenset | None = None, decode_threads: int = 1,
                 batch_extras=None):
        self.images_dir = Path(images_dir)
        self.batch_extras = batch_extras  # (ecg_uids, epoch) -> {name: array}, per batch in the worker (MIM masks)
        if decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1, got {decode_threads}")
        self.decode_threads = int(decode_threads)
        self._executor = None  # per process, made on first use (a thread pool does not cross a fork)
        self.index = read_index(images_dir)
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if modality == "wave" and not self.index.get("wave_hz"):
            raise ValueError(f"{self.images_dir}: these shards hold no waveforms (rendered with wave_hz 0); "
                             "re-render with render.wave_hz > 0 for signal-domain models")
        self.modality = modality
        self.split, self.fraction, self.task = split, fraction, task
        self.names = shard_names(self.index, split)
        self.epoch, self.seed, self.shuffle = int(epoch), int(seed), shuffle
        self.with_tokens, self.batch_size, self.drop_last = with_tokens, int(batch_size), drop_last
        self.shuffle_buffer = int(shuffle_buffer)
        self.with_meta = with_meta
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.tasks = tuple(self.index.get("tasks") or TASKS)  # the tasks these shards are labelled for
        self.keep = SampleFilter(fraction, task, subset, self.tasks)
        self._selection: SplitSelection | None = None  # the filter resolved against the manifest, on first use
        # shard -> keys the filter keeps, for shards it does not keep whole (from the manifest, once here)
        filtered = fraction is not None or task is not None or subset is not None
        self.wanted = self.selection.wanted if filtered else {}
        self.skip: dict[int, int] = {}  # logical worker -> samples to skip (resume)
        self.rotation = 0  # physical worker p plays logical worker (p + rotation) % num_workers
        # [epoch, rotation, skip per logical worker] in shared memory when an ImageLoader keeps its workers
        # (heartbeit.data.loading.epoch_loader): a worker's copy of this stream reads it as each iteration starts
        self.control: torch.Tensor | None = None

    @property
    def selection(self) -> SplitSelection:
        """What the filter keeps of the split, per shard (heartbeit.data.loading.dealing): resolved once."""
        if self._selection is None:
            self._selection = SplitSelection(self.images_dir, self.split, self.fraction, self.task, self.keep.subset)
        return self._selection

    def publish(self) -> None:
        """Copy this stream's epoch and resume position into `control`, for the workers' copies."""
        if self.control is not None:
            self.control[0], self.control[1] = self.epoch, self.rotation
            self.control[2:] = torch.tensor([self.skip.get(w, 0) for w in range(len(self.control) - 2)])

    def _read_control(self) -> None:
        """In a persistent worker: take the epoch and resume position the loader published."""
        if self.control is not None and torch.utils.data.get_worker_info() is not None:
            values = self.control.tolist()
            self.epoch, self.rotation = int(values[0]), int(values[1])
            self.skip = {w: int(n) for w, n in enumerate(values[2:]) if n}

    def replica(self) -> "ImageStream":
        """Another stream over the same split and selection (resolved once, shared) with its own epoch and
        position: e.g. a cell's BatchNorm recalibration beside its training loader."""
        twin = copy.copy(self)
        twin.control, twin.skip, twin.rotation, twin._executor = None, {}, 0, None
        return twin

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.skip, self.rotation = {}, 0

    def __getstate__(self) -> dict:
        # the selection stays in the main process (workers need only `wanted`); thread pools do not cross
        return {**self.__dict__, "_executor": None, "_selection": None}

    def _pool(self):
        """This process's decode thread pool (`decode_threads` - 1 threads: the thread that reads the shards
        decodes too, once the next batch is assembled), made on first use."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        if self._executor is None or getattr(self, "_executor_pid", None) != os.getpid():
            self._executor = ThreadPoolExecutor(self.decode_threads - 1, thread_name_prefix="heartbeit-decode")
            self._executor_pid = os.getpid()
        return self._executor

    def _samples(self, reads: list[tuple[str, np.ndarray | None]], logical: int) -> Iterator[tuple[dict, dict]]:
        """(raw sample, parsed meta) in stream order, filtered, shuffled and past the resume point;
        decoding waits for the batch, so skipped samples are never decoded."""
        if not reads:  # nothing for this slot this epoch
            return
        stream = ((raw, orjson.loads(raw["json"])) for u, dealt in reads for raw in self._shard_samples(u, dealt))
        stream = (item for item in stream if self.keep(item[1]))
        if self.shuffle and self.shuffle_buffer > 1:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, logical, 0xB0F])
            stream = _deterministic_shuffle(stream, self.shuffle_buffer, rng)
        skip = self.skip.get(logical, 0)
        for position, item in enumerate(stream):
            if position >= skip:
                yield item

    def _shard_samples(self, url: str, dealt: np.ndarray | None) -> Iterator[dict]:
        """The samples of one shard this slot reads, in tar order: all of them in one read when the filter
        keeps the whole shard and the slot has it whole; otherwise only the dealt samples that the filter
        keeps, by the shard's member index (one read per run of consecutive samples). Without a current
        index (shards rendered before it existed) a whole shard is read and filtered as it streams."""
        wanted = self.wanted.get(url)
        if self.modality == "wave":
            from heartbeit.data.shard_format import wave_relpath

            url = wave_relpath(url)
        tar = self.images_dir / url
        if dealt is None and wanted is None:
            yield from members.read_tar_samples(tar)
            return
        index = members.load_member_index(tar)
        if index is None:
            if dealt is not None:
                raise ValueError(f"{tar}: no current member index ({members.index_path(tar).name}); "
                                 f"{self.world_size} rank(s) x workers outnumber the {len(self.names)} "
                                 f"{self.split} shards, which are then shared sample by sample through it. Run "
                                 "`heartbeit render` again: it adds the index to complete shards without "
                                 "re-rendering them")
            yield from members.read_tar_samples(tar)
            return
        positions = dealt if dealt is not None else np.arange(len(index["keys"]))
        if wanted is not None:
            where = index["position"]
            missing = [k for k in wanted if k not in where]
            if missing:
                raise ValueError(f"{tar}: {len(missing)} sample(s) of manifest.parquet are not in the shard's "
                                 "member index (run `heartbeit render` again)")
            positions = np.intersect1d(positions, np.fromiter((where[k] for k in wanted), np.int64, len(wanted)))
        yield from members.read_indexed_samples(tar, index, positions.tolist())

    def _assemble(self, items: list[tuple[dict, dict]], worker: int) -> tuple[dict, "BatchDecode"]:
        """A batch's arrays and labels, and the decoding still to be done: its images (uint8 [n, 1, H, W]) or
        waveforms (float32 mV [n, 12, L], modality "wave") go straight into one preallocated array."""
        ext = self.index.get("image_ext", "png") if self.modality == "image" else "wave.npy"
        for raw, _ in items:
            if ext not in raw:
                raise ValueError(f"{raw['__url__']}: sample {raw['__key__']} has no .{ext} member")
            if self.with_tokens and "tokens.npy" not in raw:
                raise ValueError(f"{raw['__url__']}: sample {raw['__key__']} has no .tokens.npy member "
                                 "(run `heartbeit tokenizer encode` first)")
        n = len(items)
        if self.modality == "image":
            first = items[0][0]
            try:
                shape = member_shape(first[ext], ext)
            except ValueError as exc:
                raise ValueError(f"{first['__url__']}: sample {first['__key__']}: {exc}") from None
            inputs = batch_array((n, 1, *shape), torch.uint8)
            values = inputs.numpy()[:, 0]
        else:
            inputs = batch_array((n, 12, int(self.index["wave_samples"])), torch.float32)
            values = inputs.numpy()
        image = self.modality == "image"

        def decode(i: int) -> None:
            raw = items[i][0]
            try:
                if image:
                    decode_member(raw[ext], ext, values[i])
                else:
                    decode_wave_into(raw[ext], values[i])
            except ValueError as exc:  # the message is built here, on error only: it names shard and sample
                raise ValueError(f"{raw['__url__']}: sample {raw['__key__']}: {exc}") from None

        metas = [meta for _, meta in items]
        labels = np.array([[meta["labels"].get(task) for task in self.tasks] for meta in metas], dtype=np.float32)
        out = {self.modality: inputs, "labels": labels, "ecg_uid": [m["ecg_uid"] for m in metas],
               "worker": worker, "count": n}
        if self.with_meta:
            out["meta"] = metas
        if self.task is not None:
            out["label"] = np.array([int(m["labels"][self.task]) for m in metas], dtype=np.int64)
        if self.with_tokens:
            out["tokens"] = np.stack([np.load(io.BytesIO(raw["tokens.npy"]), allow_pickle=False)
                                      for raw, _ in items]).astype(np.int64)
        if self.batch_extras is not None:
            out.update(self.batch_extras(out["ecg_uid"], self.epoch))
        return out, BatchDecode(decode, n)

    @staticmethod
    def _deliver(out: dict) -> dict:
        # Small arrays travel from a worker pickled by value (one shared-memory handle per tensor costs a
        # socket round trip in the trainer); they become tensors on the trainer's side (`as_tensors`).
        return out if torch.utils.data.get_worker_info() is not None else as_tensors(out)

    def _decoded_batches(self, batches: Iterator[list[tuple]], worker: int) -> Iterator[dict]:
        """Assembled and decoded batches, in order. With one decode thread: each batch in this thread. With
        more: a batch's decoding is handed to the pool as soon as it is assembled, and this thread goes on to
        read and assemble the next one (tar parsing, JSON, labels: the GIL-bound part) while the pool decodes
        without the GIL; before a batch is handed out this thread decodes what is left of it itself. So the
        next batch decodes while the consumer works on this one, and bookkeeping no longer waits for decoding."""
        if self.decode_threads <= 1:
            for items in batches:
                out, job = self._assemble(items, worker)
                job.drain()
                yield self._deliver(out)
            return
        in_flight: list[tuple[dict, BatchDecode]] = []  # at most two: the one to hand out, the next
        try:
            for items in batches:
                out, job = self._assemble(items, worker)
                job.start(self._pool(), self.decode_threads - 1)
                in_flight.append((out, job))
                if len(in_flight) > 1:
                    in_flight[0][1].finish()
                    yield self._deliver(in_flight.pop(0)[0])
            while in_flight:
                in_flight[0][1].finish()
                yield self._deliver(in_flight.pop(0)[0])
        finally:
            for _, job in in_flight:  # closed early or failed: no thread may still write into a dropped batch
                job.cancel()

    def __iter__(self) -> Iterator[dict]:
        self._read_control()
        info = torch.utils.data.get_worker_info()
        physical, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logical = (physical + self.rotation) % num_workers
        reads = slot_reads(epoch_shards(self.names, self.seed, self.epoch, self.shuffle),
                           shard_totals(self.index, self.split), self.rank, self.world_size, logical, num_workers)
        yield from self._decoded_batches(self._item_batches(reads, logical), logical)

    def _item_batches(self, reads: list[tuple], logical: int) -> Iterator[list[tuple]]:
        batch: list[tuple] = []
        for item in self._samples(reads, logical):
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch


def make_image_dataset(images_dir: str | Path, split: str, fraction: float | None = None, task: str | None = None,
                       epoch: int = 0, seed: int = 0, shuffle: bool = True, with_tokens: bool = False,
                       batch_size: int = 32, drop_last: bool = False, shuffle_buffer: int = 1000,
                       rank: int | None = None, world_size: int | None = None,
                       with_meta: bool = True, modality: str = "image",
                       subset: frozenset | None = None, decode_threads: int = 1, batch_extras=None) -> ImageStream:
    """The streaming dataset of one split (batches assembled in the worker; see module docstring).
    `with_meta=False` leaves out each sample's metadata dict (`batch["meta"]`): training needs only images,
    labels and ecg_uid, and the dicts are the one part of a batch pickled between processes.
    `modality="wave"` yields the stored filtered waveforms (`batch["wave"]`, float32 mV) instead of images.
    `subset` (ecg_uids) restricts the split to those ECGs, e.g. a repeated training draw
    (heartbeit.data.splits.training_draw). `decode_threads` > 1 decodes each batch in that many threads."""
    if fraction is not None and split != "train":
        raise ValueError(f"fractions subset the train split; got split={split!r} with fraction={fraction}")
    return ImageStream(images_dir, split, fraction, task, epoch, seed, shuffle, with_tokens, batch_size, drop_last,
                       shuffle_buffer, rank, world_size, with_meta, modality, subset, decode_threads, batch_extras)


def make_loader(images_dir: str | Path, split: str, batch_size: int = 32, num_workers: int = 0,
                train: bool | None = None, fraction: float | None = None, task: str | None = None,
                epoch: int = 0, seed: int = 0, with_tokens: bool = False, shuffle_buffer: int = 1000,
                rank: int | None = None, world_size: int | None = None, pin_memory: bool = False,
                multiprocessing_context: str | None = None, with_meta: bool = True,
                modality: str = "image", decode_threads: int = 1, batch_extras=None,
                persistent: bool = False) -> ImageLoader:
    """Training (train=True, default for split 'train'): shuffled, full batches only, every rank stops
    after the same number of steps. Evaluation: in order, partial last batches, every sample once.
    `multiprocessing_context` ("fork", "spawn", "forkserver") starts the DataLoader workers; None keeps
    the process default (a process started by torch.multiprocessing.spawn defaults to spawn, which
    re-imports torch in every worker: pass "fork" there on Linux). `persistent`: keep the worker processes
    from one iteration to the next (a loader iterated epoch after epoch; heartbeit.data.loading.epoch_loader)."""
    train = (split == "train") if train is None else train
    ds = make_image_dataset(images_dir, split, fraction, task, epoch, seed, shuffle=train, with_tokens=with_tokens,
                            batch_size=batch_size, drop_last=train, shuffle_buffer=shuffle_buffer, rank=rank,
                            world_size=world_size, with_meta=with_meta, modality=modality,
                            decode_threads=decode_threads, batch_extras=batch_extras)
    return ImageLoader(ds, num_workers=num_workers, equalize=train, pin_memory=pin_memory,
                       multiprocessing_context=multiprocessing_context, persistent=persistent)
