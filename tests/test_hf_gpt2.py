"""Hugging Face GPT-2 import and export (lmlab/io/hf.py), checked against transformers itself.

Parity: a random GPT2LMHeadModel saved with save_pretrained and read into lmlab's GPT gives the same
logits (full forward and step-by-step with the KV cache); an lmlab GPT written with write_hf_gpt2
and loaded by GPT2LMHeadModel.from_pretrained gives the same logits. Errors say what to do.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from lmlab.errors import LmlabError  # noqa: E402
from lmlab.io.hf import is_hf_model_dir, read_hf_gpt2, write_hf_gpt2  # noqa: E402
from lmlab.models.gpt import GPT, GPTConfig  # noqa: E402

TOL = 1e-4
VOCAB = 100


def hf_gpt2(**overrides) -> "transformers.GPT2LMHeadModel":
    """A tiny random GPT-2 with every parameter (biases, LayerNorm gains) perturbed away from its init."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=VOCAB,
                                     bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, **overrides)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def lmlab_gpt(config: dict, state: dict, attention: str = "sdpa") -> GPT:
    model = GPT(GPTConfig.from_dict({**config, "attention": attention}))
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and result.unexpected_keys == []
    return model.eval()


def random_ids(batch: int = 2, length: int = 20) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("activation, norm_eps, attention", [
    ("gelu_new", 1e-5, "sdpa"), ("gelu", 1e-6, "manual"), ("relu", 1e-5, "sdpa"), ("gelu_pytorch_tanh", 1e-5, "sdpa"),
])
def test_read_matches_transformers(tmp_path, activation, norm_eps, attention):
    reference = hf_gpt2(activation_function=activation, layer_norm_epsilon=norm_eps)
    reference.save_pretrained(tmp_path)
    assert is_hf_model_dir(tmp_path) and (tmp_path / "model.safetensors").exists()
    config, state = read_hf_gpt2(tmp_path)
    assert config["context_len"] == 64 and config["d_model"] == 32 and config["norm_eps"] == norm_eps
    model = lmlab_gpt(config, state, attention)
    ids = random_ids()
    with torch.no_grad():
        expected = reference(ids).logits
        logits, _ = model(ids)
    assert (logits - expected).abs().max().item() <= TOL


def test_step_by_step_matches_transformers_full_forward(tmp_path):
    reference = hf_gpt2()
    reference.save_pretrained(tmp_path)
    model = lmlab_gpt(*read_hf_gpt2(tmp_path))
    ids = random_ids(length=12)
    with torch.no_grad():
        expected = reference(ids).logits  # (B, T, V)
        logits, state = model.step(ids[:, :4])  # a prompt, then one token at a time
        assert (logits - expected[:, 3]).abs().max().item() <= TOL
        for t in range(4, ids.size(1)):
            logits, state = model.step(ids[:, t:t + 1], state)
            assert (logits - expected[:, t]).abs().max().item() <= TOL


def test_old_style_names_buffers_and_explicit_lm_head(tmp_path):
    """Hub-era GPT-2 files: no `transformer.` prefix, causal-mask buffers, lm_head stored beside wte."""
    reference = hf_gpt2()
    reference.save_pretrained(tmp_path / "new")
    tensors = load_file(tmp_path / "new" / "model.safetensors")
    old = {name.removeprefix("transformer."): t for name, t in tensors.items()}
    old["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    old["h.1.attn.masked_bias"] = torch.tensor(-1e4)
    old["lm_head.weight"] = old["wte.weight"].clone()
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    config_new, state_new = read_hf_gpt2(tmp_path / "new")
    config_old, state_old = read_hf_gpt2(tmp_path / "old")
    assert config_old == config_new and state_old.keys() == state_new.keys()
    assert all(torch.equal(state_old[name], state_new[name]) for name in state_new)


def test_sharded_checkpoint_reads_like_one_file(tmp_path):
    reference = hf_gpt2()
    reference.save_pretrained(tmp_path / "one")
    reference.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "shards" / "model.safetensors.index.json").exists()
    _, one = read_hf_gpt2(tmp_path / "one")
    _, shards = read_hf_gpt2(tmp_path / "shards")
    assert one.keys() == shards.keys() and all(torch.equal(one[name], shards[name]) for name in one)


def test_export_round_trip_through_transformers(tmp_path):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, context_len=48, n_layer=2, n_head=4, d_model=32,
                       activation="gelu_tanh", norm_eps=1e-6)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    write_hf_gpt2(config.to_dict(), model.state_dict(), tmp_path / "hf", generation_eos=VOCAB - 1)
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and hf_config["eos_token_id"] == VOCAB - 1
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = random_ids()
    with torch.no_grad():
        expected, _ = model(ids)
        logits = exported(ids).logits
    assert (logits - expected).abs().max().item() <= TOL
    # and back again: the same tensors
    config_back, state_back = read_hf_gpt2(tmp_path / "hf")
    assert GPTConfig.from_dict(config_back) == config
    original = model.state_dict()
    assert all(torch.equal(state_back[name], original[name]) for name in state_back)


def test_export_without_biases_writes_zero_biases(tmp_path):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, context_len=16, n_layer=1, n_head=2, d_model=16, bias=False)
    model = GPT(config).eval()
    write_hf_gpt2(config.to_dict(), model.state_dict(), tmp_path)
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = random_ids(length=8)
    with torch.no_grad():
        assert (exported(ids).logits - model(ids)[0]).abs().max().item() <= TOL


def write_config(directory: Path, **config) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", **config}))
    return directory


@pytest.mark.parametrize("make, message", [
    (lambda d: (write_config(d) / "pytorch_model.bin").write_bytes(b"not read"), "safe_serialization"),
    (lambda d: write_config(d, model_type="llama"), "only GPT-2"),
    (lambda d: d.mkdir(), "no config.json"),
    (lambda d: write_config(d, scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (lambda d: write_config(d, n_inner=100), "n_inner"),
    (lambda d: write_config(d, tie_word_embeddings=False), "tie_word_embeddings"),
    (lambda d: write_config(d, activation_function="quick_gelu"), "quick_gelu"),
    (lambda d: write_config(d), "no model.safetensors"),
])
def test_read_errors_say_what_to_do(tmp_path, make, message):
    make(tmp_path / "model")
    with pytest.raises(LmlabError, match=message):
        read_hf_gpt2(tmp_path / "model")


def test_read_rejects_weights_that_disagree_with_config(tmp_path):
    hf_gpt2().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    write_config(tmp_path, **{**config, "n_layer": 3})
    with pytest.raises(LmlabError, match="missing"):
        read_hf_gpt2(tmp_path)


def test_export_errors(tmp_path):
    config = GPTConfig(vocab_size=VOCAB, context_len=16, n_layer=1, n_head=2, d_model=16, positional="sinusoidal")
    with pytest.raises(LmlabError, match="learned"):
        write_hf_gpt2(config.to_dict(), GPT(config).state_dict(), tmp_path / "a")
    learned = GPTConfig(vocab_size=VOCAB, context_len=16, n_layer=1, n_head=2, d_model=16)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"format_version": 1}))
    assert not is_hf_model_dir(run_dir)
    with pytest.raises(LmlabError, match="new directory"):
        write_hf_gpt2(learned.to_dict(), GPT(learned).state_dict(), run_dir)
    with pytest.raises(LmlabError, match="does not match"):
        write_hf_gpt2({**learned.to_dict(), "n_layer": 2}, GPT(learned).state_dict(), tmp_path / "b")


# --- the tokenizer beside the weights -----------------------------------------------------------


def hf_dir_with_tokenizer(tmp_path: Path, model_vocab: int, eos: str = "</s>", files: str = "tokenizer.json",
                          tied_head_only: bool = False) -> tuple[Path, "object"]:
    """A tiny random GPT-2 of `model_vocab` ids beside a byte-level BPE (as tokenizer.json or as
    vocab.json + merges.txt) whose special token `eos` is the config's eos."""
    from lmlab.tokenize import BPETokenizer

    tok = BPETokenizer.train("the cat sat on the mat. " * 50, vocab_size=280, special_tokens=[eos])
    eos_id = tok.special_tokens[eos]
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=model_vocab,
                                     bos_token_id=eos_id, eos_token_id=eos_id)
    torch.manual_seed(0)
    directory = tmp_path / "hf"
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    if tied_head_only:  # keep only lm_head.weight, as some tied checkpoints do
        tensors = load_file(directory / "model.safetensors")
        tensors["lm_head.weight"] = tensors.pop("transformer.wte.weight")
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    if files == "tokenizer.json":
        tok.hf_tokenizer.save(str(directory / "tokenizer.json"))
    else:
        tok.hf_tokenizer.model.save(str(directory))  # vocab.json + merges.txt
    return directory, tok


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json"])
def test_the_directorys_own_tokenizer_and_eos_are_used(tmp_path, files):
    import lmlab

    directory, tok = hf_dir_with_tokenizer(tmp_path, model_vocab=280, files=files)
    bundle = lmlab.load(directory)
    assert bundle.tokenizer.encode("the cat sat") == tok.encode("the cat sat")
    assert bundle.tokenizer.eot_id == tok.special_tokens["</s>"]  # not called <|endoftext|>, still the end
    assert bundle.tokenizer.encode("</s>") == [tok.special_tokens["</s>"]]


def test_padded_embedding_rows_are_never_generated_and_a_larger_tokenizer_is_refused(tmp_path):
    import lmlab

    directory, tok = hf_dir_with_tokenizer(tmp_path, model_vocab=320)
    bundle = lmlab.load(directory)
    assert set(range(tok.vocab_size, 320)) <= set(bundle.never_generated)
    for seed in range(3):
        out = bundle.generate("the cat", max_new_tokens=8, seed=seed, temperature=3.0)
        assert all(i < tok.vocab_size for i in out.sequences[0].token_ids)
    forced = bundle.generate("the cat", max_new_tokens=4, do_sample=False, logit_bias={tok.vocab_size + 5: 100})
    assert all(i < tok.vocab_size for i in forced.sequences[0].token_ids)  # not even when biased towards
    small, _ = hf_dir_with_tokenizer(tmp_path / "small", model_vocab=tok.vocab_size - 9)
    with pytest.raises(LmlabError, match=f"tokenizer has {tok.vocab_size} tokens but the model only"):
        lmlab.load(small)


def test_tokenizers_that_are_not_byte_level_bpe_are_refused(tmp_path):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    import lmlab

    directory, _ = hf_dir_with_tokenizer(tmp_path, model_vocab=280)
    wordpiece = tokenizers.Tokenizer(models.WordPiece({"[UNK]": 0, "the": 1, "cat": 2, "##s": 3}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(directory / "tokenizer.json"))
    with pytest.raises(LmlabError, match="not a byte-level BPE"):
        lmlab.load(directory)
    (directory / "tokenizer.json").write_text("{not json")
    with pytest.raises(LmlabError, match="not a readable tokenizer"):
        lmlab.load(directory)


def test_a_tied_checkpoint_with_only_the_head_loads(tmp_path):
    import lmlab

    directory, tok = hf_dir_with_tokenizer(tmp_path, model_vocab=280, tied_head_only=True)
    ids = torch.tensor([tok.encode("the cat sat on")])
    expected = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()(ids).logits
    got, _ = lmlab.load(directory).model(ids)
    assert (got - expected).abs().max().item() <= TOL
