"""A conversation with a model: turns rendered with the model's own chat template, answers streamed.

`Conversation(bundle, system=...)` keeps the turns and the generation options; `reply(text)`
renders every turn with the bundle's chat template (a plain "User: / Assistant:" one for a model
that has none), keeps the prompt inside the context window by dropping the oldest turns (never
the system prompt) and streams the answer as generation events; when the stream ends — or is
stopped, as Ctrl-C stops it — the answer shown so far becomes the assistant's turn. `set` changes
an option (checked at once), `reset` forgets the turns, `save` / `load` keep a transcript as JSON.
The terminal REPL around it is lmlab/cli/chat.py; the server's chat endpoints use it too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmlab.atomic import atomic_write_json
from lmlab.bundle import Bundle
from lmlab.errors import LmlabError
from lmlab.generate import Event, GenerationConfig
from lmlab.tokenize.chat import ChatTemplate, check_messages

# For models without a chat template of their own (a GPT trained here, a base model).
PLAIN_TEMPLATE = ChatTemplate(
    "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n{% else %}"
    "{{ 'User' if m.role == 'user' else 'Assistant' }}: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
PLAIN_STOP = ("\nUser:",)  # a plain-template answer ends where the model starts the next turn
# A conversation's sampling unless told otherwise: Ollama's defaults, which keep a small model on topic.
DEFAULT_OPTIONS = {"max_new_tokens": 256, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}


@dataclass
class Turns:
    """What `reply` did: the prompt's token count, and how many of the oldest turns it dropped to fit."""

    prompt_tokens: int = 0
    dropped: int = 0


@dataclass
class Conversation:
    bundle: Bundle
    system: str | None = None
    options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    messages: list[dict[str, str]] = field(default_factory=list)  # user and assistant turns, oldest first
    last: Turns = field(default_factory=Turns)

    def __post_init__(self) -> None:
        if not self.bundle.family.generates:
            raise LmlabError(f"a {self.bundle.family.name} model does not generate text, so it cannot chat")
        self.config()  # the options are checked now

    @property
    def template(self) -> ChatTemplate:
        return self.bundle.chat_template or PLAIN_TEMPLATE

    def config(self) -> GenerationConfig:
        options = dict(self.options)
        if self.bundle.chat_template is None:
            options["stop"] = (*GenerationConfig.from_dict({"stop": options.get("stop")}).stop, *PLAIN_STOP)
        return self.bundle.generation_config(**options)

    def set(self, name: str, value: Any) -> None:
        """Change one generation option; a bad name or value is an error and changes nothing."""
        changed = {**self.options, name: value}
        self.bundle.generation_config(**changed)
        self.options = changed

    def reset(self) -> None:
        self.messages = []

    def render(self, messages: list[dict[str, str]]) -> str:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return self.template.render(system + messages, add_generation_prompt=True)

    def prompt(self, text: str) -> tuple[list[int], int]:
        """The prompt ids for a new user turn `text`, and how many old turns were dropped to fit the
        context window with room for the answer; an error if even the newest turn alone does not fit."""
        turns = check_messages([*self.messages, {"role": "user", "content": text}])
        limit = self.bundle.model.context_len
        room = self.config().max_new_tokens
        dropped = 0
        while True:
            ids = self.bundle.tokenizer.encode(self.render(turns[dropped:]))
            if limit is None or len(ids) + room <= limit:
                return ids, dropped
            if dropped + 1 >= len(turns):
                raise LmlabError(f"the message and the system prompt take {len(ids)} tokens; with max_new_tokens "
                                 f"{room} that passes the model's context of {limit}: shorten it or lower "
                                 "max_new_tokens", params=("max_new_tokens",))
            dropped += 2 if turns[dropped]["role"] == "user" and dropped + 2 < len(turns) else 1

    def reply(self, text: str) -> Iterator[Event]:
        """The answer to a new user turn, as generation events; the turns are updated when it ends."""
        ids, dropped = self.prompt(text)
        config = self.config()
        self.last = Turns(prompt_tokens=len(ids), dropped=dropped)
        events = self.bundle.generate([ids], stream=True, **{k: getattr(config, k) for k in self.options_used()})
        return self._answer(text, dropped, events)

    def options_used(self) -> list[str]:
        return sorted({*self.options, *(["stop"] if self.bundle.chat_template is None else [])})

    def _answer(self, text: str, dropped: int, events: Iterator[Event]) -> Iterator[Event]:
        answer = []
        try:
            for event in events:
                answer.append(event.text)
                yield event
        finally:  # also when the caller stops early (Ctrl-C): what was shown is the answer
            self.messages = [*self.messages[dropped:], {"role": "user", "content": text},
                             {"role": "assistant", "content": "".join(answer).strip()}]

    def transcript(self) -> dict[str, Any]:
        return {"system": self.system, "options": self.options, "messages": self.messages}

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.transcript())

    def load(self, path: str | Path) -> None:
        """Take the system prompt, options and turns of a transcript written by `save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LmlabError(f"{path} does not exist; save a conversation with /save first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LmlabError(f"{path} is not a transcript written by lmlab chat ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise LmlabError(f"{path} is not a transcript written by lmlab chat (no messages list)")
        messages = check_messages(data["messages"])
        options = data.get("options") or {}
        self.bundle.generation_config(**options)
        self.system, self.options, self.messages = data.get("system"), dict(options), messages
