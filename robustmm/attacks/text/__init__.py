"""The text attack stack: ``word-sub``, ``wordnet-nn`` and ``char-swap`` (:mod:`.greedy`), the TextAttack parts
they are built from (:mod:`.parts`), the words they must keep (:mod:`.protect`), the part-of-speech tagger
(:mod:`.pos`), the label-change audit over records (:mod:`.audit`) and their offline data (:mod:`.resources`:
WordNet, stop words, MiniLM). See docs/text-attacks.md."""

from robustmm.attacks.text.greedy import (CharSwap, CharSwapConfig, GreedyTextAttack, WordNetNeighbours, WordNetNNConfig,
                                         WordSubConfig, WordSubstitution)

__all__ = ["CharSwap", "CharSwapConfig", "GreedyTextAttack", "WordNetNNConfig", "WordNetNeighbours", "WordSubConfig",
           "WordSubstitution"]
