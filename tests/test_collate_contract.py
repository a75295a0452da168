"""The collator's contract: exact padded tensors, answer-only labels, seeded pairing of records.

A stub whitespace tokenizer with a hand-written vocabulary makes every id known:
``encode_pair(tok, q, a)`` = [<s>] + ids("Question: " + q + " Answer:") + ids(a) + [</s>].
"""

from __future__ import annotations

import random

import pytest
import torch

from obliviate.data.collate import (
    IGNORE,
    UnlearnCollator,
    UnlearnDataset,
    encode_qa,
    pad_pairs,
)
from obliviate.data.schema import QARecord
from obliviate.models.tokenizer import encode_pair

WORDS = ["<pad>", "<s>", "</s>", "Question:", "Answer:", "who", "wrote", "it", "Ann", "did"]
WORDS += [f"q{i}" for i in range(30)] + [f"a{i}" for i in range(30)] + [f"r{i}" for i in range(6)]


class StubTokenizer:
    """Whitespace tokenizer over WORDS (id = index); unknown words raise."""

    vocab = {w: i for i, w in enumerate(WORDS)}
    bos_token, eos_token, pad_token = "<s>", "</s>", "<pad>"
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        assert add_special_tokens is False
        return {"input_ids": [self.vocab[w] for w in text.split()]}


def _words(ids) -> str:
    return " ".join(WORDS[int(i)] for i in ids)


def _answer(batch: dict[str, torch.Tensor], row: int) -> str:
    """The labelled (non −100) tokens of ``row``, EOS dropped, as text."""
    labels = batch["labels"][row]
    ids = labels[labels != IGNORE].tolist()
    assert ids[-1] == StubTokenizer.eos_token_id
    return _words(ids[:-1])


def _question(batch: dict[str, torch.Tensor], row: int) -> str:
    """The prompt (unlabelled, attended) tokens of ``row`` between the template words."""
    keep = (batch["labels"][row] == IGNORE) & (batch["attention_mask"][row] == 1)
    words = _words(batch["input_ids"][row][keep]).split()
    assert words[:2] == ["<s>", "Question:"] and words[-1] == "Answer:"
    return " ".join(words[2:-1])


# --------------------------------------------------------------------------------------------
# pad_pairs / encode_pair


def test_pad_pairs_exact_tensors() -> None:
    # row 0: 5 ids, prompt = first 2 -> labels on positions 2, 3, 4
    # row 1: 4 ids, prompt = first 3 -> label on position 3 only; position 4 is padding
    # row 2: 2 ids, prompt = first 1 -> label on position 1; positions 2-4 padding
    encoded = [([1, 7, 8, 9, 2], 2), ([1, 7, 9, 2], 3), ([1, 2], 1)]
    out = pad_pairs(encoded, pad_id=5)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert out["input_ids"].tolist() == [[1, 7, 8, 9, 2], [1, 7, 9, 2, 5], [1, 2, 5, 5, 5]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]
    assert out["labels"].tolist() == [
        [-100, -100, 8, 9, 2],
        [-100, -100, -100, 2, -100],
        [-100, 2, -100, -100, -100],
    ]
    for t in out.values():
        assert t.dtype == torch.long


def test_encode_pair_and_labels_through_stub_tokenizer() -> None:
    tok = StubTokenizer()
    # "Question: who wrote it\nAnswer: " -> Question: who wrote it Answer: = [3, 5, 6, 7, 4]
    # BOS first, answer "Ann did" = [8, 9], then EOS
    ids, n_prompt = encode_pair(tok, "who wrote it", "Ann did")
    assert (ids, n_prompt) == ([1, 3, 5, 6, 7, 4, 8, 9, 2], 6)
    batch = encode_qa(tok, [("who wrote it", "Ann did"), ("who did it", "Ann")], max_length=64)
    assert batch["input_ids"].tolist() == [
        [1, 3, 5, 6, 7, 4, 8, 9, 2],
        [1, 3, 5, 9, 7, 4, 8, 2, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 8 + [0]]
    # labels = the answer ids + EOS at exactly the answer positions, −100 elsewhere
    assert batch["labels"].tolist() == [
        [-100] * 6 + [8, 9, 2],
        [-100] * 6 + [8, 2, -100],
    ]


# --------------------------------------------------------------------------------------------
# UnlearnDataset / UnlearnCollator


def _records(prefix_q: str, prefix_a: str, n: int) -> list[QARecord]:
    return [QARecord(question=f"{prefix_q}{i}", answer=f"{prefix_a}{i}") for i in range(n)]


FORGET = _records("q", "a", 12)
RETAIN = [QARecord(question=f"q{i}", answer=f"a{i} a{i}") for i in range(12, 30)]
REFUSALS = [f"r{i} r{(i + 1) % 6}" for i in range(6)]


def _draws(ds: UnlearnDataset) -> list[tuple[str, str]]:
    return [(ds[i]["retain"].question, ds[i]["idk"]) for i in range(len(ds))]


def test_unlearn_dataset_items() -> None:
    ds = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=0)
    assert len(ds) == len(FORGET)
    for i in range(len(ds)):
        item = ds[i]
        assert item["forget"] is FORGET[i]
        assert item["retain"] in RETAIN and item["idk"] in REFUSALS
    bare = UnlearnDataset(FORGET, [], (), seed=0)[0]
    assert bare["retain"] is None and bare["idk"] is None
    with pytest.raises(ValueError):
        UnlearnDataset([], RETAIN, REFUSALS)


@pytest.fixture
def keep_global_random():
    state = random.getstate()
    yield
    random.setstate(state)


def test_unlearn_dataset_draws_reproducible_and_independent_of_global_random(
    keep_global_random,
) -> None:
    ds1 = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=7)
    ds2 = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=7)
    random.seed(1)
    first = _draws(ds1)
    random.seed(2)
    second = _draws(ds2)
    assert first == second
    # draws vary across items (the test would be vacuous otherwise)
    assert len({r for r, _ in first}) > 1 and len({a for _, a in first}) > 1
    # interleaved access to two same-seed datasets: each follows its own generator
    ds3 = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=7)
    ds4 = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=7)
    inter3, inter4 = [], []
    for i in range(len(FORGET)):
        inter3.append((ds3[i]["retain"].question, ds3[i]["idk"]))
        random.random()  # another user of the global generator in between
        inter4.append((ds4[i]["retain"].question, ds4[i]["idk"]))
    assert inter3 == inter4 == first
    # a different seed gives a different sequence
    assert _draws(UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=8)) != first


@pytest.mark.parametrize(
    "req",
    [
        frozenset({"forget"}),
        frozenset({"forget", "retain"}),
        frozenset({"forget_idk", "retain"}),
        frozenset({"forget", "retain", "forget_idk", "retain_idk", "ref"}),
    ],
)
def test_collator_builds_only_required_sub_batches(req: frozenset[str]) -> None:
    ds = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=3)
    batch = UnlearnCollator(StubTokenizer(), req, max_length=64)([ds[i] for i in range(4)])
    assert set(batch) == req & {"forget", "retain", "forget_idk", "retain_idk"}
    for sub in batch.values():
        assert set(sub) == {"input_ids", "attention_mask", "labels"}
        assert sub["input_ids"].shape[0] == 4


def test_collator_pairs_each_item_with_its_own_draws() -> None:
    ds = UnlearnDataset(FORGET, RETAIN, REFUSALS, seed=3)
    items = [ds[i] for i in range(6)]
    assert len({it["idk"] for it in items}) > 1 and len({it["retain"].question for it in items}) > 1
    req = frozenset({"forget", "retain", "forget_idk", "retain_idk"})
    batch = UnlearnCollator(StubTokenizer(), req, max_length=64)(items)
    for k, it in enumerate(items):
        f, r, idk = it["forget"], it["retain"], it["idk"]
        assert (_question(batch["forget"], k), _answer(batch["forget"], k)) == (
            f.question,
            f.answer,
        )
        assert (_question(batch["retain"], k), _answer(batch["retain"], k)) == (
            r.question,
            r.answer,
        )
        # forget_idk = (forget question, the refusal drawn for the same item)
        assert (_question(batch["forget_idk"], k), _answer(batch["forget_idk"], k)) == (
            f.question,
            idk,
        )
        assert (_question(batch["retain_idk"], k), _answer(batch["retain_idk"], k)) == (
            r.question,
            idk,
        )
    # and each sub-batch is exactly encode_qa of those pairs
    expected = encode_qa(
        StubTokenizer(), [(it["forget"].question, it["idk"]) for it in items], max_length=64
    )
    for key in expected:
        assert torch.equal(batch["forget_idk"][key], expected[key])
