"""The fixed-window neural LM (Bengio et al. 2003): logits by hand from y = b + Wx + U tanh(d + Hx),
the zero embedding before the start of a text, order 2 is a bigram model, strict config, and a
tiny training run whose loss falls. The shared contract is in test_contract.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.evaluate import perplexity
from lmlab.models import build_model
from lmlab.models.nplm import NPLM, NPLMConfig, append_ids
from lmlab.train import train


def test_logits_by_hand_with_direct_connections():
    torch.manual_seed(0)
    model = NPLM(NPLMConfig(vocab_size=5, order=3, d_embed=2, hidden=3, direct=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    C, H, d = model.embed.weight, model.hidden.weight, model.hidden.bias
    U, b, W = model.out.weight, model.out.bias, model.direct.weight
    ids = [4, 1, 3]
    zero = torch.zeros(2)
    contexts = [(zero, C[4]), (C[4], C[1]), (C[1], C[3])]  # the two ids before each next token
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
        for t, (older, newer) in enumerate(contexts):
            x = torch.cat([older, newer])
            y = b + W @ x + U @ torch.tanh(d + H @ x)
            torch.testing.assert_close(logits[0, t], y, atol=1e-6, rtol=0)


def test_without_direct_connections_there_is_no_w():
    model = NPLM(NPLMConfig(vocab_size=5, order=3, d_embed=2, hidden=3))
    assert model.direct is None
    assert model.num_parameters() == 5 * 2 + (4 * 3 + 3) + (3 * 5 + 5)


def test_order_two_is_a_bigram_model():
    torch.manual_seed(1)
    model = NPLM(NPLMConfig(vocab_size=6, order=2, d_embed=4, hidden=8)).eval()
    with torch.no_grad():
        a, _ = model(torch.tensor([[1, 2, 5, 3]]))
        b, _ = model(torch.tensor([[4, 0, 0, 5, 3]]))
    torch.testing.assert_close(a[0, 2:], b[0, 3:])  # after 5 and after 3: the same, wherever they are


def test_the_state_is_the_last_n_minus_1_ids():
    model = NPLM(NPLMConfig(vocab_size=10, order=4))
    _, state = model.step(torch.tensor([[7]]))
    assert state[0].tolist() == [[-1, -1, 7]]  # -1: before the start of the text
    _, state = model.step(torch.tensor([[1, 2, 3, 4]]), state)
    assert state[0].tolist() == [[2, 3, 4]]


def test_padding_never_enters_the_history():
    history = torch.tensor([[-1, 8], [5, 6]])
    ids = torch.tensor([[0, 0, 1], [2, 3, 4]])
    mask = torch.tensor([[0, 0, 1], [1, 1, 1]])
    assert append_ids(history, ids, mask).tolist() == [[-1, -1, -1, 8, 1], [5, 6, 2, 3, 4]]
    model = NPLM(NPLMConfig(vocab_size=10, order=3))
    _, state = model.step(ids, (history,), mask)
    assert state[0].tolist() == [[8, 1], [3, 4]]


@pytest.mark.parametrize("bad, name", [(dict(order=1), "order"), (dict(order=2.0), "order"), (dict(hidden=0), "hidden"),
                                       (dict(dropout=1.0), "dropout"), (dict(d_embed=-1), "d_embed")])
def test_config_rejects_bad_values(bad, name):
    with pytest.raises(LmlabError, match=name):
        NPLMConfig(vocab_size=10, **bad)


def test_config_is_strict():
    with pytest.raises(LmlabError, match="n_gram"):
        build_model("nplm", {"vocab_size": 10, "n_gram": 3})


def test_training_lowers_the_loss_and_eval_reads_the_text_in_order(tmp_path: Path, tiny_corpus: Path):
    result = train(str(tiny_corpus), out=tmp_path / "run", model="nplm", tokenizer="word",
                   model_overrides=dict(order=3, d_embed=16, hidden=32),
                   train_overrides=dict(max_steps=40, batch_size=8, bptt=16, lr=1e-2, warmup_steps=0,
                                        eval_every=20), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    bundle = lmlab.load(tmp_path / "run")
    assert losses[0] > math.log(bundle.tokenizer.vocab_size) - 0.5  # about uniform at the start
    assert losses[-1] < losses[0] - 1.0
    assert result.val_loss < losses[0] - 1.0
    assert bundle.tokenizer.eos_per_line  # word-level runs predict every line end
    text = "the quick brown fox jumps over a lazy dog\nthe old ships sing of silver rain\n"
    scored = perplexity(bundle.model, bundle.tokenizer, text)
    ids = torch.tensor([bundle.tokenizer.encode(text)])
    with torch.no_grad():
        _, loss = bundle.model(ids[:, :-1], ids[:, 1:])
    assert scored.tokens == ids.size(1) - 1
    assert scored.loss == pytest.approx(loss.item(), abs=1e-5)
