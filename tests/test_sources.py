"""The sources behind `lmlab.load` (lmlab/io/sources.py), the Hugging Face converter table (lmlab/io/hf)
and export (lmlab/io/export.py).

Each source is recognised and loaded from a real file of its kind: a tiny lmlab run trained for two
steps, a GPT-2 directory saved by transformers, an ARPA file written by lmlab. The GPT-2 converter's
rename table names every tensor of lmlab's GPT and exactly the tensors of transformers' GPT-2.
GGUF files are tests/test_gguf.py's, registered names tests/test_hub.py's; bad input gives one
error line that says what to do.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.io import sources
from lmlab.io.export import export, export_arpa, export_hf
from lmlab.io.hf import CONVERTERS, EXPORTS, GPT2, Converter, Fused, expected_tensors
from lmlab.io.hf.convert import to_hf, to_lmlab
from lmlab.io import hub
from lmlab.io.sources import SOURCES, LoadedModel, find_source, load_source
from lmlab.models import family, preset_options
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenize import CharTokenizer
from lmlab.train import train

transformers = pytest.importorskip("transformers")

LINES = ["the cat sat on the mat", "the dog sat on the log", "the cat ate the fish"] * 30
GPT_OVERRIDES = {"n_layer": 1, "n_head": 2, "d_model": 16, "context_len": 16}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> dict[str, Path]:
    """One file or folder of every source: lmlab runs (GPT, char n-gram, word n-gram), a transformers
    GPT-2 directory with an lmlab tokenizer beside it, and the word n-gram exported as ARPA."""
    root = tmp_path_factory.mktemp("sources")
    (root / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    (root / "words.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    train(str(root / "tiny.txt"), out=root / "run", model_overrides=GPT_OVERRIDES,
          train_overrides={"max_steps": 2}, progress=False)
    train(str(root / "words.txt"), out=root / "ngram", model="ngram", tokenizer="word",
          tokenizer_options={"split_punctuation": False}, model_overrides={"order": 3, "smoothing": "kn"},
          progress=False)
    train(str(root / "words.txt"), out=root / "char-ngram", model="ngram", model_overrides={"order": 2}, progress=False)
    export_arpa(root / "ngram", root / "words.arpa")
    tokenizer = CharTokenizer.train(tiny_text)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=tokenizer.vocab_size,
                                     bos_token_id=None, eos_token_id=None)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(root / "hf")
    tokenizer.save(root / "hf" / "lmlab_tokenizer.json")
    return {"run": root / "run", "huggingface": root / "hf", "arpa": root / "words.arpa", "ngram": root / "ngram",
            "char-ngram": root / "char-ngram", "root": root}


def one_line_error(call, *args, **kwargs) -> LmlabError:
    with pytest.raises(LmlabError) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return caught.value


# --- each source, recognised and loaded -------------------------------------------------------------

LOADABLE = {"run": "gpt", "huggingface": "gpt", "arpa": "ngram"}  # source -> the family it gives here
ELSEWHERE = {"gguf", "name"}  # tests/test_gguf.py, tests/test_hub.py


def test_every_source_has_a_test():
    assert {source.name for source in SOURCES} == set(LOADABLE) | ELSEWHERE


@pytest.mark.parametrize("source", list(LOADABLE))
def test_each_source_is_recognised_and_loaded(files, source):
    path = files[source]
    assert find_source(path).name == source
    loaded = load_source(path)
    assert isinstance(loaded, LoadedModel) and loaded.path == path
    assert loaded.config["source"] == source
    assert loaded.config["model"]["family"] == loaded.model.family == LOADABLE[source]
    assert family(loaded.model.family).config_class().from_dict(loaded.config["model"]["config"]) == loaded.model.config
    assert loaded.tokenizer.vocab_size <= loaded.model.config.vocab_size
    bundle = lmlab.load(str(path))
    ids = torch.tensor([bundle.tokenizer.encode("the cat sat")])
    logits, _ = bundle.model(ids)
    assert logits.shape[-1] == bundle.model.config.vocab_size and torch.isfinite(logits).all()
    assert not bundle.model.training


def test_the_huggingface_source_matches_transformers(files):
    reference = transformers.GPT2LMHeadModel.from_pretrained(files["huggingface"]).eval()
    loaded = load_source(files["huggingface"])
    ids = torch.tensor([loaded.tokenizer.encode("the quick brown fox")])
    with torch.no_grad():
        assert (loaded.model(ids)[0] - reference(ids).logits).abs().max().item() <= 1e-4


def test_dtype_casts_networks_and_keeps_counted_tables(files):
    assert lmlab.load(files["run"], dtype="bfloat16").model.tok_emb.weight.dtype == torch.bfloat16
    arpa = lmlab.load(files["arpa"], dtype="bfloat16")
    assert all(t.dtype != torch.bfloat16 for t in arpa.model.state_dict().values())


# --- the slots and what is not a source -------------------------------------------------------------


def test_a_file_named_gguf_that_is_not_one_is_one_line(files):
    path = files["root"] / "model.gguf"
    path.write_bytes(b"GGUF")
    assert find_source(path).name == "gguf"
    assert "not a readable GGUF file" in str(one_line_error(lmlab.load, path))


def test_neither_a_path_nor_a_name_says_so_and_how_names_are_listed(files):
    message = str(one_line_error(lmlab.load, "smollm3"))
    assert "smollm3 is neither an existing file or folder nor a registered model name" in message
    assert "registered names: smollm2; `lmlab models` lists them" in message and "Hugging Face model directory" in message
    notes = files["root"] / "notes.txt"
    notes.write_text("mine")
    assert "is a file lmlab does not read" in str(one_line_error(lmlab.load, notes))


def test_a_real_folder_wins_over_a_registered_name(files, monkeypatch):
    monkeypatch.chdir(files["root"])
    assert find_source("smollm2").name == "name"
    (files["root"] / "smollm2").mkdir()  # a folder of that name is what the user means
    assert find_source("smollm2").name == "run"
    assert set(hub.NAMES) >= {"smollm2"}


@pytest.mark.parametrize("damage, message", [
    (lambda c: {**c, "model": "gpt"}, '"model"'),
    (lambda c: "{not json", "not readable JSON"),
    (lambda c: {**c, "format_version": 99}, "upgrade"),
])
def test_a_damaged_run_config_is_one_line(files, tmp_path, damage, message):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (run / name).write_bytes((files["run"] / name).read_bytes())
    damaged = damage(json.loads((files["run"] / "config.json").read_text()))
    (run / "config.json").write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    assert message in str(one_line_error(lmlab.load, run))


def copy_hf(files, tmp_path: Path, **changes) -> Path:
    directory = tmp_path / "hf"
    directory.mkdir(parents=True)
    for file in files["huggingface"].iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))
    return directory


def test_a_damaged_huggingface_config_is_one_line(files, tmp_path):
    odd_heads = copy_hf(files, tmp_path, n_head=3)
    assert "d_model (16) must be divisible by n_head (3)" in str(one_line_error(lmlab.load, odd_heads))
    assert "missing" in str(one_line_error(lmlab.load, copy_hf(files, tmp_path / "b", n_layer=3)))


def test_an_unknown_model_type_is_named_with_the_supported_ones(files, tmp_path):
    message = str(one_line_error(lmlab.load, copy_hf(files, tmp_path, model_type="mamba")))
    assert "model_type 'mamba', which lmlab does not read; it reads 'gpt2', 'llama'" in message


# --- the converter table ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    dict(vocab_size=50, context_len=16, n_layer=3, n_head=2, d_model=16),
    dict(vocab_size=50, context_len=16, n_layer=2, n_head=2, d_model=16, bias=False),
    dict(vocab_size=50, context_len=16, n_layer=1, n_head=1, d_model=8, positional="sinusoidal"),
], ids=["biases", "no-biases", "sinusoidal"])
def test_the_gpt2_table_names_every_gpt_tensor_and_back(config):
    for name in GPT(GPTConfig.from_dict(config)).state_dict():
        hf_names = GPT2.hf_names(name)
        assert hf_names is not None, f"lmlab GPT tensor {name} has no Hugging Face name: add it to io/hf/gpt2.py"
        assert [GPT2.lmlab_name(hf_name) for hf_name in hf_names] == [(name, i) for i in range(len(hf_names))]


def test_the_gpt2_table_gives_exactly_transformers_names():
    model = GPT(GPTConfig(vocab_size=20, context_len=16, n_layer=2, n_head=2, d_model=8))
    ours = {hf_name for name in model.state_dict() for hf_name in GPT2.hf_names(name)}
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=8, n_positions=16, vocab_size=20,
                                     bos_token_id=None, eos_token_id=None)
    assert ours == set(transformers.GPT2LMHeadModel(config).state_dict())


@pytest.mark.parametrize("model_type", list(CONVERTERS))
def test_every_converter_names_every_tensor_of_its_familys_default_model(model_type):
    converter = CONVERTERS[model_type]
    config = {**preset_options(converter.family, None), "vocab_size": 50}
    readback = converter.config_from_hf(converter.config_to_hf(config, None))
    for expected in expected_tensors(converter.family, readback):  # built on the meta device: free
        for name in expected.names:
            assert converter.hf_names(name) is not None, f"{model_type}: no Hugging Face name for {name}"


def perturbed_state(config: GPTConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model.state_dict()


def test_tensors_round_trip_through_the_table():
    config = GPTConfig(vocab_size=30, context_len=8, n_layer=2, n_head=2, d_model=8)
    state = perturbed_state(config)
    hf = to_hf(GPT2, state, config.to_dict())
    assert hf["transformer.h.1.attn.c_attn.weight"].shape == (8, 24)  # Conv1D: (in, out)
    assert "lm_head.weight" not in hf  # tied: written once, as save_pretrained does
    back = to_lmlab(GPT2, hf, config.to_dict(), "test")
    assert set(back) == set(state) - {"lm_head.weight"}
    assert all(torch.equal(back[name], state[name]) for name in back)


def test_a_fused_module_is_split_and_joined_by_the_table():
    """How a Llama converter stores lmlab's fused q/k/v: three Hugging Face tensors of given sizes."""
    modules = {**GPT2.modules, "blocks.{i}.attn.qkv": Fused(("h.{i}.q", "h.{i}.k", "h.{i}.v"),
                                                            sizes=lambda c: (c["d_model"], c["d_model"], c["d_model"]))}
    fused = Converter("gpt2-split", "gpt", GPT2.config_from_hf, GPT2.config_to_hf, modules)
    config = GPTConfig(vocab_size=30, context_len=8, n_layer=2, n_head=2, d_model=8)
    state = perturbed_state(config)
    hf = to_hf(fused, state, config.to_dict())
    assert torch.equal(hf["h.1.k.weight"], state["blocks.1.attn.qkv.weight"][8:16])
    back = to_lmlab(fused, hf, config.to_dict(), "test")
    assert torch.equal(back["blocks.1.attn.qkv.bias"], state["blocks.1.attn.qkv.bias"])
    del hf["h.0.v.bias"]
    assert "h.0.v.bias" in str(one_line_error(to_lmlab, fused, hf, config.to_dict(), "test"))


# --- export -----------------------------------------------------------------------------------------


def test_export_hf_loads_back_with_the_same_logits(files, tmp_path):
    assert export_hf(files["run"], tmp_path / "hf") == ["config.json", "model.safetensors", "lmlab_tokenizer.json"]
    run, exported = lmlab.load(files["run"]), lmlab.load(tmp_path / "hf")
    ids = torch.tensor([run.tokenizer.encode("the quick fox")])
    with torch.no_grad():
        assert torch.equal(run.model(ids)[0], exported.model(ids)[0])
        reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
        assert (reference(ids).logits - run.model(ids)[0]).abs().max().item() <= 1e-4


def test_which_runs_export_to_which_format_comes_from_the_tables(files, tmp_path):
    assert set(EXPORTS) == {"gpt", "llama"}
    assert "only gpt, llama runs export to Hugging Face" in str(one_line_error(export_hf, files["ngram"], tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    assert "only counted models (ngram) export to ARPA" in str(one_line_error(export_arpa, files["run"],
                                                                                tmp_path / "m.arpa"))
    error = one_line_error(export_arpa, files["char-ngram"], tmp_path / "m.arpa")
    assert error.params == ("tokenizer",)
    assert "train the n-gram with --tokenizer 'word'" in error.rename({"tokenizer": "--tokenizer"})
    error = one_line_error(export, files["run"], tmp_path / "x", format="onnx")
    assert error.params == ("format",) and "hf, arpa" in str(error)
    assert not list(tmp_path.iterdir())


def test_export_never_writes_over_what_is_there(files, tmp_path):
    mine = tmp_path / "mine.arpa"
    mine.write_text("precious")
    assert "already exists" in str(one_line_error(export_arpa, files["ngram"], mine))
    assert mine.read_text() == "precious"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    assert "not an empty folder" in str(one_line_error(export_hf, files["run"], tmp_path / "folder"))
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["notes.txt"]


def test_an_export_that_cannot_be_written_leaves_no_files(tmp_path, tiny_text):
    (tmp_path / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    train(str(tmp_path / "tiny.txt"), out=tmp_path / "run", train_overrides={"max_steps": 2}, progress=False,
          model_overrides={**GPT_OVERRIDES, "positional": "sinusoidal"})
    error = one_line_error(export_hf, tmp_path / "run", tmp_path / "hf")
    assert error.params == ("positional",) and "learned" in str(error)
    assert not (tmp_path / "hf").exists()
    assert math.isfinite(lmlab.load(tmp_path / "run").perplexity("the cat").loss)
