"""One lock around every construction of a transformers model in this process.

``from_pretrained`` swaps ``PreTrainedModel.tie_weights``, ``PreTrainedModel.init_weights`` and torch.nn.init's
functions for no-ops while it loads (``transformers.initialization.no_tie_weights`` and ``no_init_weights``), and
puts back what it found when done. Two threads loading at once can each put back the other's no-op, which then stays
for the life of the process: every later model comes untied (a tied core refused for its missing ``lm_head``) and
built with uninitialised weights, and a model built while another thread loads gets no initialisation either.
In-process agents and the hive's threads load cores concurrently, so every load, build and adapter wrap in this
project holds ``MODEL_CONSTRUCTION``.
"""

from __future__ import annotations

import threading

MODEL_CONSTRUCTION = threading.RLock()
