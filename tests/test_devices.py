"""Devices: names are checked, and a model loaded on a device decodes, scores and trains there.

The CUDA tests run only where torch sees a GPU; elsewhere they skip. On the CPU the same code
paths run (every tensor is made on the model's device), which the rest of the suite exercises.
"""
from __future__ import annotations

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.runtime import torch_device
from lmlab.train import train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_device_names_are_checked():
    assert torch_device("cpu") == torch.device("cpu")
    with pytest.raises(LmlabError, match="device must be cpu, cuda") as error:
        torch_device("gpu")
    assert error.value.params == ("device",)
    if not torch.cuda.is_available():
        with pytest.raises(LmlabError, match="no CUDA GPU"):
            torch_device("cuda")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_text):
    corpus = tmp_path_factory.mktemp("data") / "corpus.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "gpt"
    train(str(corpus), out=out, model_overrides=dict(n_layer=1, n_head=2, d_model=16, context_len=16),
          train_overrides=dict(max_steps=3, eval_every=3), progress=False)
    return out


def test_loading_on_the_cpu_by_name(run):
    bundle = lmlab.load(run, device="cpu")
    assert all(p.device.type == "cpu" for p in bundle.model.parameters())


@needs_cuda
def test_a_model_on_cuda_decodes_and_scores_as_on_the_cpu(run):
    cpu, gpu = lmlab.load(run), lmlab.load(run, device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    for options in (dict(do_sample=False), dict(num_beams=3, do_sample=False)):
        assert gpu.generate(["The ", "A"], max_new_tokens=12, **options).sequences[0].token_ids == \
            cpu.generate(["The ", "A"], max_new_tokens=12, **options).sequences[0].token_ids
    text = "The quick brown fox jumps over a lazy dog.\n"
    assert gpu.perplexity(text).loss == pytest.approx(cpu.perplexity(text).loss, abs=1e-4)


def test_training_takes_a_device_and_a_bad_one_is_refused_before_anything_is_written(tmp_path, tiny_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    with pytest.raises(LmlabError, match="device"):
        train(str(corpus), out=tmp_path / "bad", train_overrides=dict(max_steps=1), progress=False, device="gpu")
    assert not (tmp_path / "bad").exists()
    result = train(str(corpus), out=tmp_path / "cpu", model_overrides=dict(n_layer=1, n_head=2, d_model=16,
                   context_len=16), train_overrides=dict(max_steps=2, eval_every=2), progress=False, device="cpu")
    assert result.steps == 2


@needs_cuda
def test_training_on_cuda_resumes_on_the_cpu(tmp_path, tiny_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    options = dict(model_overrides=dict(n_layer=1, n_head=2, d_model=16, context_len=16), progress=False)
    train(str(corpus), out=tmp_path / "run", train_overrides=dict(max_steps=4, eval_every=2), device="cuda", **options)
    result = train(str(corpus), out=tmp_path / "run", train_overrides=dict(max_steps=6), resume=True, device="cpu",
                   progress=False)
    assert result.steps == 6
    assert lmlab.load(tmp_path / "run", device="cuda").generate("The ", max_new_tokens=4).sequences
