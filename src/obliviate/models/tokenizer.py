"""Prompt formatting and a byte-level BPE tokenizer trained offline on the benchmark text.

Prompt format: the tokenizer's chat template when it has one, else ``Question: {q}\\nAnswer: ``.
Tokenizers built from a raw ``tokenizers.Tokenizer`` add no BOS/EOS by themselves, so
:func:`encode_prompt` / :func:`encode_pair` add them explicitly for every tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PLAIN_TEMPLATE = "Question: {question}\nAnswer: "
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a ``transformers`` fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[
            SPECIAL["pad_token"],
            SPECIAL["bos_token"],
            SPECIAL["eos_token"],
            SPECIAL["unk_token"],
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(texts) + [PLAIN_TEMPLATE.format(question="")]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.padding_side = "right"
    return fast


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def format_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    shots: Sequence[tuple[str, str]] = (),
    template: str | None = None,
) -> str:
    """The prompt text for ``question``: the chat template when the tokenizer has one, else
    :data:`PLAIN_TEMPLATE`; ``template`` (a format string with ``{question}``) replaces both.

    ``shots``: (question, answer) pairs answered before it, as earlier chat turns or as
    templated pairs separated by a blank line (few-shot prompts, in-context facts).
    """
    if template is None and getattr(tokenizer, "chat_template", None):
        messages = []
        for q, a in shots:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(question, shots, template or PLAIN_TEMPLATE)


def plain_prompt(
    question: str, shots: Sequence[tuple[str, str]] = (), template: str = PLAIN_TEMPLATE
) -> str:
    """``template`` filled with each shot's question and its answer, a blank line after each,
    then with ``question`` (MUSE's KnowMem prompt is this with its in-context examples)."""
    context = "".join(template.format(question=q) + a + "\n\n" for q, a in shots)
    return context + template.format(question=question)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    shots: Sequence[tuple[str, str]] = (),
    template: str | None = None,
    response_prefix: str = "",
) -> list[int]:
    """Token ids of the prompt, BOS first unless the chat template already wrote it.

    ``shots`` / ``template``: see :func:`format_prompt`; ``response_prefix``: text the answer is
    made to start with (pre-filled after the prompt, as a prefix-injection attack does).
    """
    text = format_prompt(tokenizer, question, shots, template) + response_prefix
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos) and not _template_has_bos(tokenizer, text):
        ids = [bos] + ids
    return ids


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_length: int | None = None,
    **prompt: Any,
) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: prompt ids + answer ids + one EOS; the first ``n_prompt`` ids are prompt.

    When ``max_length`` truncates, the answer keeps at least one token and the prompt is cut from
    the left (the question's end stays next to the answer). ``prompt``: :func:`encode_prompt`'s
    keyword arguments (shots, template, response prefix).
    """
    prompt_ids = encode_prompt(tokenizer, question, **prompt)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if max_length is not None and len(prompt_ids) + len(answer_ids) > max_length:
        answer_ids = answer_ids[: max(1, max_length - min(len(prompt_ids), max_length // 2))]
        prompt_ids = prompt_ids[-(max_length - len(answer_ids)) :]
    return prompt_ids + answer_ids, len(prompt_ids)


def _template_has_bos(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    bos = tokenizer.bos_token
    return bool(bos) and text.startswith(bos)
