"""How `lmlab` ends: exit codes, and errors printed as one `error: ...` line, never a traceback.

Library errors (`LmlabError`) name parameters (`top_p`); `flag_names` maps each parameter to the
flag that sets it in the command's parser (`--top-p`), so the same message reads right in both.
"""
from __future__ import annotations

import argparse
import os
import sys

from lmlab.errors import LmlabError

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: the user's to fix, as argparse's own errors
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's destination -> the flag that sets it: {"top_p": "--top-p", "top_logprobs": "--show-probs"}."""
    names: dict[str, str] = {}
    for action in parser._actions:  # argparse lists a parser's options nowhere public
        flags = [option for option in action.option_strings if option.startswith("--")]
        if flags and action.dest not in names:
            names[action.dest] = flags[0]
    return names


def print_error(message: str) -> int:
    """Print `error: message` on stderr; returns the exit code for bad input."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def library_error(error: LmlabError, parser: argparse.ArgumentParser | None) -> int:
    """Print a library error with its parameters written as this parser's flags."""
    return print_error(error.rename(flag_names(parser)) if parser is not None else str(error))


def os_error(error: OSError) -> int:
    """A path that is a folder, a full disk, no permission: one line naming the file."""
    where = f": {error.filename}" if error.filename else ""
    return print_error(f"{error.strerror or error}{where}")


def broken_pipe() -> int:
    """The reader of our output went away (`lmlab ... | head`): stop quietly, without Python's
    own complaint about flushing stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK
