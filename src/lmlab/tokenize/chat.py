"""Chat templates: a model's own Jinja2 template turns a conversation into its prompt text.

`ChatTemplate(source, bos_token=..., eos_token=...)` compiles a template (from a GGUF's
`tokenizer.chat_template`, or a Hugging Face `tokenizer_config.json`'s `chat_template`);
`render(messages, add_generation_prompt=True, **extras)` gives the same string as transformers'
`apply_chat_template(..., tokenize=False)`: the same variables (`messages`, `add_generation_prompt`,
`bos_token`, `eos_token`, `tools` and `documents` as None, `raise_exception`, `strftime_now`), the
same `trim_blocks`/`lstrip_blocks`, the same `tojson` filter.

Templates come with downloaded models, so they are untrusted code: they run in Jinja2's
`ImmutableSandboxedEnvironment`, and one that reaches for Python internals (`''.__class__`) or
tries to change its inputs stops at once with an LmlabError. Tokenizing the rendered text is the
tokenizer's job (gguf.py, bpe.py); keeping a conversation and trimming it to the context window
is the chat command's.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmlab.errors import LmlabError

MAX_REPEAT = 1 << 20  # longest string or list a template may build with `*`, and largest `**` result


class _TemplateRaised(Exception):
    """A template's own raise_exception(message)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """JSON without Jinja's HTML escaping, with json.dumps' options (as transformers has it)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Refuses at once, instead of rendering an empty string, any attribute the sandbox deems
    unsafe, and bounds `*` and `**` so a template cannot fill the memory."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise jinja2.exceptions.SecurityError(f"{attribute!r} of a {type(obj).__name__} is off limits")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError(f"the power {left!r} ** {right!r} is too large")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) \
                        and len(sequence) * count > MAX_REPEAT:
                    raise jinja2.exceptions.SecurityError(f"repeating a {type(sequence).__name__} {count} times is too large")
        return super().call_binop(context, operator, left, right)


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """`messages` as a list of dicts, each with a string "role" and "content" (other keys pass).

    >>> check_messages([{"role": "user", "content": "hi"}])
    [{'role': 'user', 'content': 'hi'}]
    >>> check_messages([{"role": "user"}])
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: message 0 has no 'content'; each message is {"role": ..., "content": ...}
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise LmlabError(f'messages must be a list of {{"role": ..., "content": ...}} dicts, got {type(messages).__name__}')
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise LmlabError(f"message {index} is a {type(message).__name__}, not a dict with 'role' and 'content'")
        for key in ("role", "content"):
            if key not in message:
                raise LmlabError(f'message {index} has no {key!r}; each message is {{"role": ..., "content": ...}}')
            if not isinstance(message[key], str):
                raise LmlabError(f"message {index}'s {key} must be a string, got {type(message[key]).__name__}")
        if not message["role"]:
            raise LmlabError(f"message {index} has an empty role; use system, user or assistant")
        checked.append(dict(message))
    return checked


class ChatTemplate:
    """A compiled chat template.

    >>> template = ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}\\n{% endfor %}"
    ...                         "{% if add_generation_prompt %}<assistant>{% endif %}", eos_token="</s>")
    >>> template.render([{"role": "user", "content": "hi"}])
    '<user>hi</s>\\n<assistant>'
    """

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise LmlabError("the chat template is empty; give the model's chat_template text")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        environment = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        environment.filters["tojson"] = _tojson
        environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise LmlabError(f"the chat template does not parse: {e.message} (line {e.lineno})") from None

    @classmethod
    def from_gguf(cls, source: Any) -> "ChatTemplate":
        """The template of a GGUF path, `gguf.GGUFReader`, dict of fields or `GGUFVocab`."""
        from lmlab.tokenize.gguf import GGUFVocab, read_vocab

        vocab = source if isinstance(source, GGUFVocab) else read_vocab(source)
        if vocab.chat_template is None:
            raise LmlabError("the GGUF has no tokenizer.chat_template; this model has no chat format (use generate)")
        return cls(vocab.chat_template, bos_token=vocab.bos_token, eos_token=vocab.eos_token)

    @classmethod
    def from_tokenizer_config(cls, path: str | Path) -> "ChatTemplate":
        """The template of a Hugging Face tokenizer_config.json (a file, or the folder holding it)."""
        path = Path(path)
        path = path / "tokenizer_config.json" if path.is_dir() else path
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LmlabError(f"{path} does not exist; a Hugging Face model folder keeps its chat template there") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LmlabError(f"{path} is not a JSON file ({e})") from None
        template = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(template, list):  # named templates: the default one
            template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}.get("default")
        if not isinstance(template, str):
            raise LmlabError(f"{path} has no chat_template; this model has no chat format (use generate)")

        def token(name: str) -> str | None:
            value = config.get(name)
            return value.get("content") if isinstance(value, dict) else value

        return cls(template, bos_token=token("bos_token"), eos_token=token("eos_token"))

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extras: Any) -> str:
        """The prompt text of `messages`; `add_generation_prompt` ends it where the assistant's
        answer starts. `extras` reach the template as variables (e.g. `tools=[...]`)."""
        tokens = {name: token for name, token in (("bos_token", self.bos_token), ("eos_token", self.eos_token)) if token}
        variables = {"tools": None, "documents": None, **tokens, **extras,
                     "messages": check_messages(messages), "add_generation_prompt": bool(add_generation_prompt)}
        try:
            return self._template.render(**variables)
        except _TemplateRaised as e:
            raise LmlabError(f"the chat template refused the conversation: {e}") from None
        except jinja2.exceptions.SecurityError as e:
            raise LmlabError(f"the chat template was stopped: it reaches outside its sandbox ({e}); "
                             "use the model's own template, not this one") from None
        except jinja2.TemplateError as e:
            raise LmlabError(f"the chat template failed: {e}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as e:
            raise LmlabError(f"the chat template failed on these messages: {type(e).__name__}: {e}") from None
