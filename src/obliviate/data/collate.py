"""Turning QA records into padded tensors with answer-only labels (prompt and padding = -100)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from obliviate.data.schema import QARecord
from obliviate.models.tokenizer import encode_pair

IGNORE = -100


def pad_pairs(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``(ids, n_prompt)`` pairs into ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(encoded):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[i, : len(ids)] = t
        attention[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = t[n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def encode_qa(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], max_length: int
) -> dict[str, torch.Tensor]:
    return pad_pairs(
        [encode_pair(tokenizer, q, a, max_length) for q, a in pairs], tokenizer.pad_token_id
    )


def qa_batches(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_length: int,
    batch_size: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """``pairs`` in order, ``batch_size`` at a time, encoded with answer-only labels
    (:func:`encode_qa`): the batches SSD's Fisher passes and WAGLE's retain gradient read."""
    for start in range(0, len(pairs), batch_size):
        yield encode_qa(tokenizer, pairs[start : start + batch_size], max_length)


class QADataset(Dataset):
    """Plain supervised QA (fine-tuning)."""

    def __init__(self, records: Sequence[QARecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> QARecord:
        return self.records[i]


class SFTCollator:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, records: list[QARecord]) -> dict[str, torch.Tensor]:
        return encode_qa(self.tokenizer, [(r.question, r.answer) for r in records], self.max_length)


class UnlearnDataset(Dataset):
    """One item per forget record, paired with a retain record and a refusal answer.

    Each access draws a fresh retain record and refusal from a seeded generator, so over several
    epochs the retain term sees much more of the (usually larger) retain set, as open-unlearning's
    forget/retain dataset does; the sequence of draws is fixed by ``seed``.

    In a multi-process launch (:meth:`shard`) each process draws what a one-process run with the
    launch's global batch would draw for the same items: the processes split each global batch of
    the shared sampler order, and a process takes the draws of its slice of that batch from the one
    seeded stream. Items the sampler repeats to even out an epoch's last batches (they exist only
    in the launch) draw from their own seeded generator.
    """

    def __init__(
        self,
        forget: Sequence[QARecord],
        retain: Sequence[QARecord],
        refusals: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        if not forget:
            raise ValueError("empty forget set")
        self.seed = seed
        self.rng = random.Random(seed)
        self.forget = list(forget)
        self.retain = list(retain)
        self.idk = list(refusals)
        self.layout: ShardLayout | None = None
        self._drawn = 0  # draws taken from ``rng`` so far (sharded mode)
        self._accesses = 0  # training accesses of this process so far (sharded mode)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.layout is None:
            retain, idk = self._draw()
        else:
            retain, idk = self._sharded_draw(self.layout.draw_index(self._accesses))
            self._accesses += 1
        return {"forget": self.forget[i], "retain": retain, "idk": idk}

    def _draw(self) -> tuple[QARecord | None, str | None]:
        return self._draw_from(self.rng)

    def _draw_from(self, rng: random.Random) -> tuple[QARecord | None, str | None]:
        retain = rng.choice(self.retain) if self.retain else None
        idk = rng.choice(self.idk) if self.idk else None
        return retain, idk

    def advance(self, n: int) -> None:
        """Skip the draws of ``n`` accesses (a resumed run catching up with the interrupted one);
        sharded: ``n`` of this process's training accesses (:func:`~obliviate.training.guard.items_consumed`
        with the launch's world size)."""
        if self.layout is not None:
            self._accesses += n
            return
        for _ in range(n):
            self._draw()

    def first_batch(self, batch_size: int) -> list[dict[str, Any]]:
        """The items of the first batch (a method's ``prepare`` sample), drawing as a one-process
        run does: items ``0 .. batch_size-1`` with the stream's first draws. Sharded: this
        process's slice of the one-process run's first global batch, with that slice's draws; the
        training draws then start after the whole global batch's."""
        n = len(self.forget)
        if self.layout is None:
            return [self[i] for i in range(min(n, batch_size))]
        lay = self.layout
        first = lay.rank * lay.batch_size
        items = list(range(first, min(n, first + lay.batch_size)))
        if not items:  # fewer forget records than processes' batches: a repeat, like the sampler's
            return [
                {"forget": self.forget[i], **self._pair(self._pad_draw(("first", i)))}
                for i in range(min(n, lay.batch_size))
            ]
        return [{"forget": self.forget[i], **self._pair(self._sharded_draw(i))} for i in items]

    @staticmethod
    def _pair(draw: tuple[QARecord | None, str | None]) -> dict[str, Any]:
        return {"retain": draw[0], "idk": draw[1]}

    def shard(self, rank: int, world: int, batch_size: int) -> None:
        """Draw as process ``rank`` of ``world``, each taking batches of ``batch_size`` (before
        any access): see the class docstring."""
        start = min(len(self.forget), batch_size * world)  # the one-process first batch's draws
        self.layout = ShardLayout(rank, world, batch_size, len(self.forget), start)

    def _sharded_draw(self, index: int | tuple) -> tuple[QARecord | None, str | None]:
        """Draw number ``index`` of the one seeded stream (indices only grow within a
        process), or, for a tuple, a repeated item's own draw."""
        if isinstance(index, tuple):
            return self._pad_draw(index)
        if index < self._drawn:
            raise RuntimeError(f"draw {index} requested after draw {self._drawn - 1}")
        while self._drawn < index:
            self._draw()
            self._drawn += 1
        self._drawn += 1
        return self._draw()

    def _pad_draw(self, key: tuple) -> tuple[QARecord | None, str | None]:
        return self._draw_from(random.Random(f"{self.seed}:repeat:{key}"))


@dataclass(frozen=True)
class ShardLayout:
    """Which items of the shared sampler order a process of a launch gets (accelerate's
    ``BatchSamplerShard``: consecutive batches of ``batch_size`` go to processes 0, 1, …, and an
    epoch's last batches are filled up with repeats from its start so that every process gets
    the same number of full batches) and which draw of a one-process run each one corresponds to.
    """

    rank: int
    world: int
    batch_size: int
    n: int
    """Items in an epoch (forget records)."""
    start: int
    """Draws taken before training (the one-process run's first batch, for ``prepare``)."""

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process gets in an epoch."""
        return math.ceil(math.ceil(self.n / self.batch_size) / self.world)

    def position(self, k: int) -> tuple[int, int]:
        """``(epoch, position in the epoch's global order)`` of this process's ``k``-th training
        access; a position ≥ ``n`` is a repeat that only the launch has."""
        per_epoch = self.batches_per_epoch * self.batch_size
        epoch, k = divmod(k, per_epoch)
        b, j = divmod(k, self.batch_size)
        return epoch, (b * self.world + self.rank) * self.batch_size + j

    def draw_index(self, k: int) -> int | tuple:
        """The one-process run's draw number for this process's ``k``-th training access (the
        ``epoch * n + position``-th after the first batch's), or a repeat's key."""
        epoch, p = self.position(k)
        if p >= self.n:
            return ("repeat", epoch, p)
        return self.start + epoch * self.n + p


class UnlearnCollator:
    """Builds only the sub-batches a method requires (see :mod:`obliviate.methods.base`)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, requirements: frozenset[str], max_length: int
    ) -> None:
        self.tokenizer = tokenizer
        self.req = requirements
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        enc = lambda pairs: encode_qa(self.tokenizer, pairs, self.max_length)  # noqa: E731
        f = [it["forget"] for it in items]
        r = [it["retain"] for it in items]
        idk = [it["idk"] for it in items]
        batch: dict[str, dict[str, torch.Tensor]] = {}
        if "forget" in self.req:
            batch["forget"] = enc([(x.question, x.answer) for x in f])
        if "retain" in self.req:
            batch["retain"] = enc([(x.question, x.answer) for x in r])
        if "forget_idk" in self.req:
            batch["forget_idk"] = enc([(x.question, a) for x, a in zip(f, idk, strict=True)])
        if "retain_idk" in self.req:
            batch["retain_idk"] = enc([(x.question, a) for x, a in zip(r, idk, strict=True)])
        return batch
