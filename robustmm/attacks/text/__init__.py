"""The text attack stack: ``word-sub`` and ``char-swap`` (:mod:`.greedy`), the TextAttack parts they are
built from (:mod:`.parts`) and their offline data (:mod:`.resources`: WordNet, stop words, MiniLM)."""

from robustmm.attacks.text.greedy import (CharSwap, CharSwapConfig, GreedyTextAttack, WordNetNeighbours, WordNetNNConfig,
                                         WordSubConfig, WordSubstitution)

__all__ = ["CharSwap", "CharSwapConfig", "GreedyTextAttack", "WordNetNNConfig", "WordNetNeighbours", "WordSubConfig",
           "WordSubstitution"]
