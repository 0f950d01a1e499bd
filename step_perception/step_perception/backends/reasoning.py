"""Removing a reasoning model's thoughts from its answer (shared by the backends)."""

from __future__ import annotations

import re

__all__ = ["strip_reasoning"]

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_reasoning(text: str) -> str:
    """Drop ``<think>…</think>`` reasoning from an answer.

    Also handles a server that strips the opening tag (answer starts with the
    reasoning and ``</think>``) and an unclosed ``<think>`` cut off by
    ``max_tokens`` (everything after it is reasoning).
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()
