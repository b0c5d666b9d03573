"""Split a streamed answer into reasoning (inside ``<think>…</think>``) and content, across chunk borders."""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """``feed(text)`` → ``(reasoning, content)`` pieces. A tag cut in two by a chunk border is held back
    until the next piece shows whether it is a tag; ``final=True`` releases what is held."""

    def __init__(self, opened: bool = False):
        self.inside = opened        # the template opened the think block in the prompt
        self.seen = opened          # the answer had a reasoning part (even an empty one)
        self.buf = ""
        self.started = False        # content has begun: a later "<think>" is plain text
        self.trim = False           # just after "</think>": the blank lines before the answer are dropped

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        self.buf += text
        reasoning, content = [], []
        while self.buf:
            tag = CLOSE if self.inside else OPEN
            if not self.inside and self.started:
                if self.trim:
                    self.buf = self.buf.lstrip()
                    self.trim = not self.buf
                    if not self.buf:
                        break
                content.append(self.buf)
                self.buf = ""
                break
            if not self.inside:  # only leading whitespace may come before an opening tag
                stripped = self.buf.lstrip()
                if stripped.startswith(OPEN):
                    self.buf, self.inside, self.seen = stripped[len(OPEN):], True, True
                    continue
                if OPEN.startswith(stripped) and not final:
                    break  # maybe the start of "<think>": wait for more
                self.started = True
                continue
            at = self.buf.find(tag)
            if at >= 0:
                reasoning.append(self.buf[:at])
                self.buf, self.inside, self.started, self.trim = self.buf[at + len(tag):], False, True, True
                continue
            keep = 0 if final else next((k for k in range(len(tag) - 1, 0, -1) if self.buf.endswith(tag[:k])), 0)
            reasoning.append(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            break
        return "".join(reasoning), "".join(content)
