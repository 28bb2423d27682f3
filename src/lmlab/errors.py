"""The one error type users see.

`LmlabError` carries a one-line message that says what went wrong and what to do. The CLI prints
it and exits with code 2; library callers catch it as a `ValueError`. Nothing else lives here.

A library message speaks of parameters by their Python names (`top_p`, `max_steps`) and lists
them in `params`; the CLI, which knows its flags, writes them as `--top-p` and `--max-steps`:

>>> error = LmlabError("give epochs or max_steps, not both", params=("epochs", "max_steps"))
>>> str(error), error.params
('give epochs or max_steps, not both', ('epochs', 'max_steps'))
>>> error.rename({"epochs": "--epochs", "max_steps": "--max-steps"})
'give --epochs or --max-steps, not both'
>>> LmlabError("/data/model/x.txt: choose another model", params=("model",)).rename({"model": "--model"})
'/data/model/x.txt: choose another --model'
"""
from __future__ import annotations

import re
from typing import Mapping


class LmlabError(ValueError):
    """Bad input or an unusable file, with a message that says what to do."""

    def __init__(self, message: str, *, params: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)

    def rename(self, names: Mapping[str, str]) -> str:
        """The message with each of its `params` written as `names` has it (a CLI flag, say)."""
        message = str(self)
        for param in self.params:
            if param in names:
                # a whole word, not part of a name or a path (/home/model/a.txt keeps its "model")
                message = re.sub(rf"(?<![\w/.-]){re.escape(param)}(?![\w/-]|\.\w)", names[param], message)
        return message


class LmlabNotice(UserWarning):
    """Something the user should know that is not an error (a prompt cut to the context window):
    issued with `warnings.warn`; the CLI prints it as one `note: ...` line on stderr."""
