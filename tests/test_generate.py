"""Generation: config checks, processors, the decoding loop and the text stream, against toy models.

The toy model implements the model contract with next-token logits computed by a plain Python
function of the visible ids, so every expected answer can be worked out by hand.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from types import SimpleNamespace
from typing import Callable, Sequence

import pytest
import regex
import torch
from torch import nn

from lmlab.errors import LmlabError, LmlabNotice
from lmlab.generate import (
    GenerationConfig,
    TemperatureProcessor,
    TextStream,
    TopKProcessor,
    TopPProcessor,
    build_processors,
    generate,
    stream,
)

# Chi-square critical values at p = 0.001, by degrees of freedom.
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


class ToyLM(nn.Module):
    """Next-token logits = `next_logits(visible ids)`; the state is the ids seen so far.

    `step` asserts it is never shown more than `context_len` positions, nor more than `rows` rows
    at once (1: decoding one sequence never batches anything), and records each call.
    """

    def __init__(self, next_logits: Callable[[list[int]], Sequence[float]], context_len: int | None = None,
                 rows: int = 1):
        super().__init__()
        self.next_logits = next_logits
        self.context_len = context_len
        self.rows = rows
        self.config = SimpleNamespace(vocab_size=len(next_logits([0])))
        self.calls: list[tuple[list[int], bool]] = []  # (ids given, started fresh)

    def _logits(self, visible: list[int]) -> torch.Tensor:
        return torch.tensor(self.next_logits(visible), dtype=torch.float32)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None):
        rows = []
        for row in ids.tolist():
            rows.append(torch.stack([self._logits(self._visible(row[: t + 1])) for t in range(len(row))]))
        logits = torch.stack(rows)  # (B, T, V)
        loss = None if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    def _visible(self, seen: list[int]) -> list[int]:
        return seen if self.context_len is None else seen[-self.context_len :]

    def step(self, ids: torch.Tensor, state: torch.Tensor | None, mask: torch.Tensor | None = None):
        assert ids.dtype == torch.long and ids.dim() == 2 and ids.shape[0] <= self.rows and mask is None
        self.calls.append((ids[0].tolist(), state is None))
        seen = ids if state is None else torch.cat([state, ids], dim=1)  # (B, T_seen)
        if self.context_len is not None:
            assert seen.shape[1] <= self.context_len, f"model shown {seen.shape[1]} > {self.context_len} positions"
        return torch.stack([self._logits(row) for row in seen.tolist()]), seen  # (B, V)

    def reorder(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, index)


def fixed(probs: Sequence[float]) -> ToyLM:
    """A model whose next-token distribution is always `probs`."""
    logits = [math.log(p) if p > 0 else -math.inf for p in probs]
    return ToyLM(lambda visible: logits)


def scripted(text: str, prompt_len: int, vocab_size: int = 257, then: int = ord("."), rows: int = 1) -> ToyLM:
    """A model that (greedily) writes the bytes of `text` after a prompt of `prompt_len` ids."""
    script = list(text.encode("utf-8")) if isinstance(text, str) else list(text)

    def next_logits(visible: list[int]) -> list[float]:
        position = len(visible) - prompt_len
        token = script[position] if position < len(script) else then
        return [10.0 if i == token else 0.0 for i in range(vocab_size)]

    return ToyLM(next_logits, rows=rows)


class ByteTokenizer:
    """Ids 0..255 are bytes; 256 is end-of-text."""

    eot_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


# The loop read three ways: the new token ids of one prompt, its token events, its non-empty text deltas.

def generate_ids(model, prompt_ids, config=None):
    return (event.token_id for event in stream(model, [prompt_ids], config) if event.token_id is not None)


def generate_tokens(model, prompt_ids, config=None):
    return (event for event in stream(model, [prompt_ids], config) if event.token_id is not None)


def generate_text(model, tokenizer, prompt, config=None):
    events = stream(model, prompt, config, tokenizer=tokenizer)  # checks everything now, at the call
    return (event.text for event in events if event.text)


def generate_one(model, tokenizer, prompt, config=None):
    return generate(model, prompt, config, tokenizer=tokenizer).sequences[0]


def chi_square(counts: Counter, probs: Sequence[float]) -> float:
    n = sum(counts.values())
    assert set(counts) <= {i for i, p in enumerate(probs) if p > 0}, f"sampled a removed token: {counts}"
    return sum((counts[i] - n * p) ** 2 / (n * p) for i, p in enumerate(probs) if p > 0)


def sample_counts(model: ToyLM, n: int, **options) -> Counter:
    config = GenerationConfig(max_new_tokens=n, seed=1234, **options)
    return Counter(generate_ids(model, [0], config))


# --- config ---------------------------------------------------------------------------------------


def test_config_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(LmlabError, match="'top_q'.*'tempreature'|'tempreature'.*'top_q'"):
        GenerationConfig.from_dict({"top_q": 0.5, "tempreature": 1.0, "top_k": 3})


def test_config_from_dict_round_trip_and_normalises_lists():
    config = GenerationConfig.from_dict({"max_new_tokens": 5, "stop": ["a", "b"], "eot_ids": [3], "top_p": 1})
    assert config == GenerationConfig(max_new_tokens=5, stop=("a", "b"), eot_ids=(3,), top_p=1.0)
    assert GenerationConfig(stop="\n").stop == ("\n",)
    assert GenerationConfig.from_dict({"stop": None, "eot_ids": None}) == GenerationConfig()
    assert config.replace(seed=3).seed == 3 and config.seed is None


@pytest.mark.parametrize(
    "options, name",
    [
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"seed": -3}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"eot_ids": ["x"]}, "eot_ids"),
    ],
)
def test_config_rejects_bad_values_naming_the_option(options, name):
    with pytest.raises(LmlabError, match=name):
        GenerationConfig(**options)
    with pytest.raises(ValueError):  # LmlabError is a ValueError for library callers
        GenerationConfig.from_dict(options)


def test_config_greedy_when_not_sampling_or_temperature_zero():
    assert GenerationConfig(do_sample=False).greedy
    assert GenerationConfig(temperature=0).greedy
    assert not GenerationConfig().greedy


def test_config_left_unset_samples_one_beam_and_searches_several():
    assert GenerationConfig().sampling and not GenerationConfig().greedy
    assert GenerationConfig(num_beams=4).greedy  # beam search, as Hugging Face does
    assert GenerationConfig(num_beams=4).replace(num_beams=1).sampling  # unset stays unset
    assert not GenerationConfig(num_beams=4, do_sample=True).greedy  # beam sampling
    with pytest.raises(LmlabError, match="do_sample"):
        GenerationConfig(do_sample="yes")


# --- processors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, bad",
    [("top_p", 1.5), ("top_p", 0.0), ("top_k", 1.5), ("top_k", -1), ("temperature", -1.0)],
)
def test_processor_parameters_are_checked_once_by_the_config(option, bad):
    """Processors are built from a checked config only (they do not check again)."""
    with pytest.raises(LmlabError, match=option):
        GenerationConfig(**{option: bad})


def test_values_that_turn_a_processor_off_build_none():
    assert build_processors(GenerationConfig(top_k=0, temperature=1.0, top_p=1.0)) == []
    assert build_processors(GenerationConfig(temperature=0, top_k=5)) == []  # greedy: no warpers at all


def test_processors_do_not_modify_their_input():
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5]])
    before = logits.clone()
    for processor in (TemperatureProcessor(0.5), TopKProcessor(1), TopPProcessor(0.3)):
        processor(None, logits)
    assert torch.equal(logits, before)


def test_top_k_larger_than_vocabulary_keeps_everything():
    logits = torch.randn(2, 5)
    assert torch.equal(TopKProcessor(100)(None, logits), logits)


def test_top_p_works_row_by_row_and_keeps_vocabulary_order():
    probs = torch.tensor([[0.05, 0.3, 0.05, 0.5, 0.1], [0.25, 0.25, 0.25, 0.25, 0.0]])
    kept = TopPProcessor(0.8)(None, probs.log()).isfinite()
    assert kept.tolist() == [[False, True, False, True, False], [True, True, True, True, False]]


def test_build_processors_order_and_switches():
    config = GenerationConfig(temperature=0.5, top_k=3, top_p=0.9)
    assert [type(p) for p in build_processors(config)] == [TemperatureProcessor, TopKProcessor, TopPProcessor]
    assert build_processors(GenerationConfig(top_k=0, top_p=1.0)) == []
    assert build_processors(GenerationConfig(temperature=0, top_k=3)) == []


# --- token loop -----------------------------------------------------------------------------------

PROBS = [0.5, 0.3, 0.1, 0.05, 0.05]


def test_greedy_follows_the_argmax():
    # Bigram table: after token t the most likely next token is (t * 3 + 1) % 7.
    table = [[5.0 if j == (t * 3 + 1) % 7 else float(j % 3) for j in range(7)] for t in range(7)]
    model = ToyLM(lambda visible: table[visible[-1]])
    expected, last = [], 2
    for _ in range(10):
        last = (last * 3 + 1) % 7
        expected.append(last)
    assert list(generate_ids(model, [2], GenerationConfig(max_new_tokens=10, do_sample=False))) == expected
    assert list(generate_ids(model, [2], GenerationConfig(max_new_tokens=10, temperature=0))) == expected


def test_same_seed_same_output_and_different_seeds_differ():
    model = fixed([1 / 16] * 16)
    run = lambda seed: list(generate_ids(model, [0], GenerationConfig(max_new_tokens=50, seed=seed)))
    assert run(7) == run(7)
    assert run(7) != run(8)
    assert len(run(None)) == 50


def test_top_p_samples_only_the_nucleus_in_proportion():
    counts = sample_counts(fixed(PROBS), 4000, top_p=0.8)
    assert set(counts) == {0, 1}
    assert chi_square(counts, [5 / 8, 3 / 8, 0, 0, 0]) < CHI2_CRITICAL[1]


def test_top_k_samples_only_the_best_k_in_proportion():
    counts = sample_counts(fixed(PROBS), 4000, top_k=2)
    assert set(counts) == {0, 1}
    assert chi_square(counts, [5 / 8, 3 / 8, 0, 0, 0]) < CHI2_CRITICAL[1]


def test_plain_sampling_matches_the_model_distribution():
    counts = sample_counts(fixed(PROBS), 4000)
    assert chi_square(counts, PROBS) < CHI2_CRITICAL[4]


def test_temperature_samples_softmax_of_scaled_logits():
    logits = [1.0, 2.0, 0.5, 0.0]
    counts = sample_counts(ToyLM(lambda visible: logits), 4000, temperature=0.5)
    scaled = torch.tensor(logits).div(0.5).softmax(-1).tolist()
    unscaled = torch.tensor(logits).softmax(-1).tolist()
    assert chi_square(counts, scaled) < CHI2_CRITICAL[3]
    assert chi_square(counts, unscaled) > CHI2_CRITICAL[3]  # the test can tell the two apart


def test_logprobs_are_after_processors():
    greedy = list(generate_tokens(fixed(PROBS), [0], GenerationConfig(max_new_tokens=3, do_sample=False)))
    assert [t.token_id for t in greedy] == [0, 0, 0]
    assert all(t.logprob == pytest.approx(math.log(0.5), abs=1e-5) for t in greedy)
    sampled = list(generate_tokens(fixed(PROBS), [0], GenerationConfig(max_new_tokens=50, top_k=2, seed=0)))
    expected = {0: math.log(5 / 8), 1: math.log(3 / 8)}
    assert all(t.logprob == pytest.approx(expected[t.token_id], abs=1e-5) for t in sampled)


def test_eot_stops_and_is_not_yielded():
    model = scripted([5, 6, 7, 9, 8], prompt_len=1, vocab_size=10)
    assert list(generate_ids(model, [0], GenerationConfig(max_new_tokens=20, do_sample=False, eot_ids=(9,)))) == [5, 6, 7]


def test_max_new_tokens_and_no_wasted_forward():
    model = fixed(PROBS)
    assert list(generate_ids(model, [0], GenerationConfig(max_new_tokens=0))) == []
    assert model.calls == []
    assert len(list(generate_ids(model, [0], GenerationConfig(max_new_tokens=4, do_sample=False)))) == 4
    assert len(model.calls) == 4  # the prompt prefill, then one step per token but the last


def test_sliding_window_beyond_context_len():
    context_len, vocab_size = 4, 11

    def next_token(visible: list[int]) -> int:
        return (sum(visible) * 7 + 3) % vocab_size

    model = ToyLM(lambda visible: [5.0 if i == next_token(visible) else 0.0 for i in range(vocab_size)], context_len)
    prompt = [1, 2, 3, 4, 5, 6]  # already longer than the context
    with pytest.warns(LmlabNotice, match="the model sees the last 4"):
        new = list(generate_ids(model, prompt, GenerationConfig(max_new_tokens=20, do_sample=False)))
    sequence = list(prompt)
    for _ in range(20):
        sequence.append(next_token(sequence[-context_len:]))
    assert new == sequence[len(prompt) :]
    assert model.calls[0] == ([3, 4, 5, 6], True)  # the prompt is cropped to the window
    assert all(fresh for _, fresh in model.calls[1:])  # the window is full: every step re-prefills
    # The teacher-forced forward agrees with the incremental steps.
    ids = torch.tensor([sequence])
    assert model(ids)[0][0, -2].argmax().item() == sequence[-1]


def test_sliding_window_uses_the_cache_until_the_window_is_full():
    model = ToyLM(lambda visible: [0.0, 1.0], context_len=4)
    list(generate_ids(model, [0, 0], GenerationConfig(max_new_tokens=5, do_sample=False)))
    assert [fresh for _, fresh in model.calls] == [True, False, False, True, True]
    assert [len(ids) for ids, _ in model.calls] == [2, 1, 1, 4, 4]


def test_inference_mode_does_not_leak_into_the_caller():
    tokens = generate_ids(fixed(PROBS), [0], GenerationConfig(max_new_tokens=3))
    next(tokens)
    assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()


def test_streaming_beams_and_several_sequences_gives_what_generate_gives():
    """Beam search commits its hypotheses when the search ends; sampled sequences as they go."""
    model = scripted("ab", prompt_len=1, vocab_size=257, rows=3)
    tokenizer = ByteTokenizer()
    for options in (dict(num_beams=3, do_sample=False), dict(num_return_sequences=2, seed=3),
                    dict(num_beams=3, num_return_sequences=2, do_sample=False)):
        config = GenerationConfig(max_new_tokens=4, **options)
        events = list(stream(model, "x", config, tokenizer=tokenizer))
        result = generate(model, "x", config, tokenizer=tokenizer)
        for index, sequence in enumerate(result.sequences):
            mine = [e for e in events if e.sequence == index]
            assert "".join(e.text for e in mine) == sequence.text
            assert [e.token_id for e in mine[:-1]] == sequence.token_ids and mine[-1].token_id is None
            assert mine[-1].finish_reason == sequence.finish_reason in ("stop", "length")
            assert [e.logprob for e in mine[:-1]] == sequence.token_logprobs
            assert mine[-1].score == sequence.score


@pytest.mark.parametrize("prompt", [[2, 300], [-1]])
def test_prompt_ids_outside_the_vocabulary_are_an_error(prompt):
    model = fixed([0.5, 0.5, 0.0])
    model.config = SimpleNamespace(vocab_size=3)
    config = GenerationConfig(max_new_tokens=2, do_sample=False)
    with pytest.raises(LmlabError, match="prompt"):
        list(generate_ids(model, prompt, config))


def test_empty_prompt_ids_is_an_error():
    with pytest.raises(LmlabError, match="prompt"):
        list(generate_ids(fixed(PROBS), [], GenerationConfig()))


# --- text stream ----------------------------------------------------------------------------------


def stream_all(stream: TextStream, ids: Sequence[int]) -> list[str]:
    deltas = [stream.push(i) for i in ids]
    return deltas + [stream.flush()]


def test_stream_never_splits_a_multibyte_character():
    text = "hi 😀 é漢!"
    deltas = stream_all(TextStream(bytes), list(text.encode("utf-8")))
    assert "".join(deltas) == text
    assert "😀" in deltas and "é" in deltas and "漢" in deltas  # each arrives whole, in one delta
    assert not any("\ufffd" in d for d in deltas)


def test_stream_incomplete_bytes_at_the_end_become_replacement_character():
    stream = TextStream(bytes)
    assert stream.push(ord("a")) == ""  # the last grapheme waits for the next one
    assert stream.push(0xF0) == "" and stream.push(0x9F) == ""
    assert stream.flush() == "a\ufffd"


@pytest.mark.parametrize("grapheme", [
    "e\u0301",  # e + combining acute accent
    "👍🏽",  # thumbs up + skin tone modifier
    "👩\u200d💻",  # woman + zero width joiner + laptop
    "🇫🇷",  # two regional indicators: one flag
    "\u0915\u094d\u0937",  # Devanagari ksha: consonant + virama + consonant
])
def test_stream_never_splits_a_grapheme(grapheme: str):
    """Fed one code point per token, each grapheme still arrives whole, in one delta."""
    text = f"a{grapheme}b {grapheme}"
    deltas = stream_all(TextStream(lambda ids: "".join(map(chr, ids)).encode()), [ord(c) for c in text])
    assert "".join(deltas) == text
    assert grapheme in deltas[:-1] and deltas[-1] == grapheme
    cuts = set(itertools.accumulate(len(d) for d in deltas))
    assert cuts <= {0, *itertools.accumulate(len(g) for g in regex.findall(r"\X", text))}  # only between graphemes


def test_stream_uses_context_for_tokenizers_that_decode_tokens_together():
    words = ["the", "cat", "sat"]
    decode = lambda ids: " ".join(words[i] for i in ids).encode()  # a word tokenizer joins with spaces
    stream = TextStream(decode, context_ids=[0])
    assert "".join(stream_all(stream, [1, 2])) == " cat sat"
    stream = TextStream(decode, context_ids=[0])
    assert [stream.push(1), stream.push(2)] == [" ca", "t sa"]  # the last letter waits: an accent may follow


@pytest.mark.parametrize(
    "text, stop, expected",
    [
        ("hello STOP world", ["STOP"], "hello "),
        ("a STx ST STOP b", ["STOP"], "a STx ST "),
        ("one\n\nUser: two", ["User:", "\n\n"], "one"),  # the earliest stop string wins
        ("no stop here ST", ["STOP"], "no stop here ST"),  # a dangling prefix is released at the end
        ("😀STOP", ["STOP"], "😀"),
    ],
)
def test_stop_strings_spanning_tokens_are_cut(text, stop, expected):
    stream = TextStream(bytes, stop=stop)
    deltas = stream_all(stream, list(text.encode("utf-8")))
    assert "".join(deltas) == expected
    assert stream.stopped == (expected != text)
    # Nothing shown ever needs taking back: every prefix of the output is a prefix of the answer.
    shown = ""
    for delta in deltas:
        shown += delta
        assert expected.startswith(shown)


# --- text generation ------------------------------------------------------------------------------


def test_generate_text_stops_at_stop_string_and_matches_generate():
    tokenizer = ByteTokenizer()
    prompt = "Q: "
    model = scripted("the answer\nQ: next", prompt_len=len(prompt))
    config = GenerationConfig(max_new_tokens=50, do_sample=False, stop=("\nQ:",))
    deltas = list(generate_text(model, tokenizer, prompt, config))
    result = generate_one(model, tokenizer, prompt, config)
    assert "".join(deltas) == result.text == "the answer"
    assert all(deltas)
    assert result.finish_reason == "stop"
    assert bytes(result.token_ids) == b"the answer\nQ:"


def test_generate_streams_emoji_byte_by_byte_without_splitting():
    tokenizer = ByteTokenizer()
    text = "smile 😀 and ünïcode"
    model = scripted(text, prompt_len=1)
    config = GenerationConfig(max_new_tokens=len(text.encode()), do_sample=False)
    deltas = list(generate_text(model, tokenizer, ">", config))
    assert "".join(deltas) == generate_one(model, tokenizer, ">", config).text == text
    assert "😀" in deltas and not any("\ufffd" in d for d in deltas)


def test_generate_stops_at_the_tokenizer_eot():
    tokenizer = ByteTokenizer()
    model = scripted(list(b"done") + [256] + list(b"more"), prompt_len=2)
    result = generate_one(model, tokenizer, "go", GenerationConfig(max_new_tokens=20, do_sample=False))
    assert result.text == "done" and result.token_ids == list(b"done") and result.finish_reason == "stop"
    result = generate_one(model, tokenizer, "go", GenerationConfig(max_new_tokens=3, do_sample=False))
    assert result.text == "don" and result.finish_reason == "length"


def test_generate_empty_prompt_starts_from_eot():
    model = scripted("hi", prompt_len=1)
    assert generate_one(model, ByteTokenizer(), "", GenerationConfig(max_new_tokens=2, do_sample=False)).text == "hi"
    assert model.calls[0] == ([256], True)


def test_sampled_text_is_reproducible_with_a_seed():
    model = ToyLM(lambda visible: [0.0] * 26 + [-math.inf] * 231)  # uniform over bytes 0..25
    config = GenerationConfig(max_new_tokens=30, seed=5)
    first = generate_one(model, ByteTokenizer(), "x", config)
    assert first == generate_one(model, ByteTokenizer(), "x", config)
    assert "".join(generate_text(model, ByteTokenizer(), "x", config)) == first.text


def test_prompts_as_numpy_arrays_or_tensors_are_token_id_lists():
    import numpy as np

    from lmlab.generate.engine import prompt_ids

    tokenizer = ByteTokenizer()
    assert prompt_ids(tokenizer, np.array([1, 2])) == [[1, 2]]
    assert prompt_ids(tokenizer, torch.tensor([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    with pytest.raises(LmlabError, match="prompt 0"):
        prompt_ids(tokenizer, [1.5])


# --- an encoder memory ----------------------------------------------------------------------------


class ToyTranslator(nn.Module):
    """A conditional model: `encode(src)` gives the memory (B, S); the next token is
    (sum(memory) + sum(visible ids)) % V, so a decoder that lost its memory answers differently.
    The state is (memory, ids seen) — (memory, None) before the first step."""

    def __init__(self, vocab_size: int = 13, context_len: int | None = 3):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.context_len = context_len
        self.prefills = 0

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, None]:
        return src, None

    def next_token(self, memory: list[int], visible: list[int]) -> int:
        return (sum(memory) + sum(visible)) % self.config.vocab_size

    def step(self, ids, state, mask=None):
        memory, seen = state
        self.prefills += seen is None
        seen = ids if seen is None else torch.cat([seen, ids], dim=1)
        assert self.context_len is None or seen.shape[1] <= self.context_len
        logits = torch.full((ids.shape[0], self.config.vocab_size), -5.0)
        for row, (m, visible) in enumerate(zip(memory.tolist(), seen.tolist())):
            logits[row, self.next_token(m, visible)] = 5.0
        return logits, (memory, seen)

    def reorder(self, state, index):
        memory, seen = state
        return memory.index_select(0, index), None if seen is None else seen.index_select(0, index)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_the_encoder_memory_survives_the_sliding_window(num_beams):
    model = ToyTranslator(context_len=3)
    sources, prompts = [[4, 1], [7, 7, 7]], [[0], [2, 5]]
    memory = model.encode(torch.tensor([[0, 4, 1], [7, 7, 7]]))  # one memory row per prompt (0 pads the first)
    config = GenerationConfig(max_new_tokens=8, do_sample=False, num_beams=num_beams)
    result = generate(model, prompts, config, memory=memory)
    for source, prompt, sequence in zip(sources, prompts, result.sequences[::1]):
        expected, seen = [], list(prompt)
        for _ in range(8):
            token = model.next_token(source, seen[-3:])
            expected.append(token)
            seen.append(token)
        assert sequence.token_ids == expected
    assert model.prefills > 2  # the window slid: prefilled again, from the memory


def test_a_prompt_longer_than_the_context_is_cut_with_a_notice():
    model = ToyLM(lambda visible: [0.0, 1.0], context_len=4)
    with pytest.warns(LmlabNotice, match="more than the model's context of 4: the model sees the last 4"):
        list(generate_ids(model, [0] * 6, GenerationConfig(max_new_tokens=2, do_sample=False)))
