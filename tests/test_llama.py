"""The Llama family against transformers' LlamaForCausalLM, on the same weights.

A small random Llama (grouped-query attention, rotary positions with each rope_scaling, tied and
untied heads, attention biases) is saved with `save_pretrained` and read by `lmlab.load`: logits
agree within 1e-4 (a left-padded batch included), greedy and beam search give the same tokens as
`generate`; an lmlab Llama run exported to Hugging Face format loads in transformers with the
same logits. The KV cache grows as it fills without changing a logit.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lmlab  # noqa: E402
from lmlab.generate.feed import left_pad  # noqa: E402
from lmlab.tokenize import BPETokenizer  # noqa: E402

VOCAB = 300
SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
}
TEXT = "the quick brown fox jumps over the lazy dog while seven wise kings sing of old ships\n" * 20


@pytest.fixture(scope="module")
def tokenizer():
    tok = BPETokenizer.train([TEXT], vocab_size=VOCAB)
    assert tok.vocab_size == VOCAB
    return tok


def hf_llama(scaling=None, tie=False, bias=False, seed=0):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=500.0,
        rope_scaling=scaling, tie_word_embeddings=tie, attention_bias=bias, bos_token_id=0, eos_token_id=0,
        pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # peaked distributions, norms away from 1
    return model


def saved(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(tokenizer.hf_tokenizer.to_str(), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("tie, bias", [(False, False), (True, True)])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_logits_equal_transformers(tmp_path, tokenizer, scaling, tie, bias):
    theirs = hf_llama(SCALINGS[scaling], tie=tie, bias=bias)
    ours = lmlab.load(saved(tmp_path, theirs, tokenizer)).model
    assert ours.family == "llama" and ours.config.n_kv_head == 2 and ours.config.tie_embeddings == tie
    ids = torch.randint(VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, atol=1e-4, rtol=0)
        # A left-padded batch: positions counted per row from the mask.
        padded, mask = left_pad([ids[0, :25].tolist(), ids[1].tolist()], 0)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        expected = theirs(padded, attention_mask=mask.long(), position_ids=positions).logits[:, -1]
        logits, _ = ours.step(padded, None, mask)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_greedy_and_beam_search_equal_transformers_generate(tmp_path, tokenizer, num_beams):
    theirs = hf_llama(SCALINGS["llama3"], seed=2)
    bundle = lmlab.load(saved(tmp_path, theirs, tokenizer))
    prompts = [[5, 17, 22, 9, 40, 41], [7, 8]]
    ids, mask = left_pad(prompts, 0)
    with torch.no_grad():
        out = theirs.generate(ids, attention_mask=mask.long(), max_new_tokens=24, do_sample=False, num_beams=num_beams,
                              pad_token_id=0, eos_token_id=0)
    expected = [row[ids.shape[1]:] for row in out.tolist()]
    expected = [row[:row.index(0)] if 0 in row else row for row in expected]  # eos (0) ends a row, not returned
    result = bundle.generate(prompts, max_new_tokens=24, do_sample=False, num_beams=num_beams, eot_ids=[0])
    assert [s.token_ids for s in result.sequences] == expected


def test_the_cache_grows_as_it_fills(tmp_path, tokenizer, monkeypatch):
    import lmlab.models.llama as llama

    monkeypatch.setattr(llama, "FIRST_CACHE_POSITIONS", 4)
    model = lmlab.load(saved(tmp_path, hf_llama(), tokenizer)).model
    ids = torch.randint(VOCAB, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(ids)
        logits, cache = model.step(ids[:, :3])
        assert cache.keys.shape[3] == 4
        for t in range(3, 30):
            logits, cache = model.step(ids[:, t:t + 1], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=0)
    assert 30 <= cache.keys.shape[3] <= 64


def test_an_exported_lmlab_run_loads_in_transformers_with_the_same_logits(tmp_path):
    from lmlab.io.export import export_hf
    from lmlab.train import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    train(str(corpus), out=tmp_path / "run", model="llama", tokenizer="bpe",
          tokenizer_options={"vocab_size": 280},
          model_overrides=dict(n_layer=2, n_head=4, n_kv_head=2, d_model=32, context_len=32),
          train_overrides=dict(max_steps=4, eval_every=4), progress=False)
    files = export_hf(tmp_path / "run", tmp_path / "hf")
    assert "tokenizer.json" in files and json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = lmlab.load(tmp_path / "run").model
    ids = torch.randint(280, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, atol=1e-4, rtol=0)
