"""From token ids to text: incremental detokenizing and stop strings.

`TextStream` turns a stream of token ids into text deltas that never split a UTF-8 character or
a grapheme (a letter and its combining accents, an emoji with its modifiers and joiners, a flag),
and never show text that may turn out to be (the start of) a stop string. The loop (engine.py)
keeps one per output sequence; the text of a sequence is exactly its deltas joined.
"""
from __future__ import annotations

import codecs
from typing import Callable, Sequence

import regex

# Prompt tokens kept as decoding context, so tokenizers that decode a lone token differently
# (a dropped leading space, a word joiner) still give the right first delta.
CONTEXT_TOKENS = 4


def held_back_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is the start of some stop string (but not a
    whole one): the part that cannot be shown until the next tokens decide.

    >>> held_back_length("Hello\\nUs", ["\\nUser:"])
    3
    >>> held_back_length("Hello", ["\\nUser:"])
    0
    """
    longest = min(len(text), max((len(s) for s in stops), default=1) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in stops):
            return size
    return 0


_LAST_GRAPHEME = regex.compile(r"\X\Z")


def last_grapheme_length(text: str) -> int:
    """Length of the last grapheme cluster of `text` (what a user sees as one character), which the
    next token may still extend: "e" may gain an accent, an emoji a skin tone or a joined emoji.

    >>> last_grapheme_length("cafe\u0301"), last_grapheme_length("ok 👍🏽"), last_grapheme_length("")
    (2, 2, 0)
    """
    match = _LAST_GRAPHEME.search(text[-64:]) if text else None
    return len(match.group()) if match else 0


class TextStream:
    """Feed token ids with `push`, get text deltas; `flush` at the end gives the rest.

    Decoding works on a short window of ids and emits the bytes the newest id adds, so a
    multi-byte character split over several tokens comes out whole, once its last byte arrives.
    The last grapheme is held back until the next one starts (or `flush`), since a later token
    may add an accent or a joiner to it. Bytes still incomplete at `flush` become U+FFFD. After a
    stop string appears, `stopped` is True, the text before it has been emitted, and the stop
    string and all later text are dropped.

    >>> stream = TextStream(lambda ids: bytes(ids), stop=["END"])
    >>> [stream.push(b) for b in "é E".encode()]
    ['', '', 'é', ' ']
    >>> stream.push(ord("N")), stream.push(ord("D")), stream.stopped
    ('', '', True)
    """

    def __init__(
        self,
        decode_bytes: Callable[[Sequence[int]], bytes],
        stop: Sequence[str] = (),
        context_ids: Sequence[int] = (),
    ) -> None:
        self.decode_bytes = decode_bytes
        self.stop = tuple(stop)
        self.stopped = False
        self._ids = list(context_ids)
        self._prefix_offset = 0  # window start: ids decoded together for context
        self._read_offset = len(self._ids)  # ids before this have been turned into text
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded, not yet emitted (a possible stop-string start)

    def push(self, token_id: int) -> str:
        """Add one token id; return the text that is now safe to show (often "")."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        window = self._ids[self._prefix_offset :]
        before = self.decode_bytes(self._ids[self._prefix_offset : self._read_offset]) if len(window) > 1 else b""
        after = self.decode_bytes(window)
        new_bytes = after[len(before) :] if after.startswith(before) else self.decode_bytes([token_id])
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        # The decoder holds back an incomplete trailing character; only bytes that can never
        # become valid UTF-8 turn into U+FFFD here.
        return self._emit(self._utf8.decode(new_bytes), final=False)

    def flush(self) -> str:
        """End of generation: return whatever is left (incomplete bytes become U+FFFD)."""
        if self.stopped:
            return ""
        return self._emit(self._utf8.decode(b"", final=True), final=True)

    def _emit(self, text: str, final: bool) -> str:
        pending = self._pending + text
        found = [i for i in (pending.find(s) for s in self.stop) if i >= 0]
        if found:
            self.stopped = True
            self._pending = ""
            return pending[: min(found)]
        keep = 0 if final else max(held_back_length(pending, self.stop), last_grapheme_length(pending))
        self._pending = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]
