"""Context lookup: one more beam, copied from earlier in the text (prompt lookup decoding).

The recurrent drafter reads only the LLM's last hidden state and the drafted tokens, so it
seldom reproduces text that the answer copies from the prompt or from itself (names, code,
quoted phrases): on MT-Bench, where the last 4 tokens occur earlier in the text (16% of the
answer positions), copying what followed them predicts the next token 84% of the time, the
drafter 39% (`python -m demos.drafter_accuracy --lookup`, docs/perf.md). The lookup
beam finds the latest earlier occurrence of the text's last n tokens (n from MAX_MATCH down
to min_match) and proposes the tokens that followed it. Greedy decoding verifies it in the
same tree as the drafter's beams, so the output does not change; sampling does not use it
(its drafts must be samples of the drafter).
"""

from typing import Optional

import numpy as np

MAX_MATCH = 4


def lookup_beam(text: np.ndarray, length: int, min_match: int) -> Optional[np.ndarray]:
    """text (N,): the prompt, the answer so far and the LLM's next token -> (length,): that
    token then the length - 1 tokens that followed the latest earlier occurrence of text's
    longest suffix of min_match..MAX_MATCH tokens, or None where no suffix occurs earlier
    with length - 1 tokens after it."""
    follow = length - 1
    earlier = text[:max(0, len(text) - follow)]  # an occurrence must leave `follow` tokens after it
    for n in range(min(MAX_MATCH, len(earlier)), min_match - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(earlier, n)
        starts = np.flatnonzero((windows == text[-n:]).all(axis=1))
        if len(starts):
            after = starts[-1] + n
            return np.concatenate([text[-1:], text[after:after + follow]])
    return None


def with_lookup_beam(beams: np.ndarray, text: list, min_match: int) -> np.ndarray:
    """beams (W, L) from the drafter, text: the prompt and the answer so far -> (W + 1, L):
    the lookup beam appended, or a copy of beam 0 where nothing matches (the tree packs it
    away, so the step's shapes stay fixed)."""
    found = lookup_beam(np.array(text + [beams[0, 0]]), beams.shape[1], min_match)
    extra = beams[0] if found is None else found.astype(beams.dtype)
    return np.concatenate([beams, extra[None]])
