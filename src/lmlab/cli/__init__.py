"""The `lmlab` command: parse arguments, call the library, format the answer.

One module per command (train.py, generate.py, ...), each with a `DESCRIPTION`, `add_arguments`
and `run`; adding a command is one such module and one line in `parser.COMMANDS`. Shared: the
table of commands and the parsers (parser.py), flags made from config dataclasses (flags.py),
JSON output (output.py), exit codes and one-line errors (errors.py). Every command has --help and
--json; bad input prints one `error: ...` line and exits with 2, Ctrl-C with 130. Nothing heavy is
imported until a command runs: `lmlab --help` reads only the table.
"""
from __future__ import annotations

import sys
from typing import Sequence

from lmlab.cli.errors import EXIT_INTERRUPTED, EXIT_OK, broken_pipe, library_error, os_error
from lmlab.cli.parser import COMMANDS, build_parser, command_parser, parse
from lmlab.errors import LmlabError

__all__ = ["COMMANDS", "build_parser", "command_parser", "main"]


def show_notices() -> None:
    """lmlab's notices (LmlabNotice warnings) as one `note: ...` line each on stderr."""
    import warnings

    from lmlab.errors import LmlabNotice

    plain = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, LmlabNotice):
            print(f"note: {message}", file=sys.stderr)
        else:
            plain(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", LmlabNotice)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lmlab ARGV` (default: the process's arguments) and return its exit code."""
    parser = None
    try:
        args, parser, module = parse(list(sys.argv[1:] if argv is None else argv))
        from lmlab.runtime import keep_freed_memory

        keep_freed_memory()
        show_notices()
        module.run(args)
    except LmlabError as error:
        return library_error(error, parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return broken_pipe()
    except OSError as error:
        return os_error(error)
    return EXIT_OK
