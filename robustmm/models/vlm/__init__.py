"""Instruction-following VLMs as pair members: LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL, Idefics3/SmolVLM, BLIP-2.

- :mod:`.families`: what differs per family (torch preprocessing, image tokens, vision tower, language model);
- :mod:`.resize`: Pillow-exact resizing in torch;
- :mod:`.prompting`: chat-template prompts, the question's tokens, candidate answer tokens;
- :mod:`.scoring`: candidate log-likelihoods from one shared prompt pass, greedy answers;
- :mod:`.model`: ``GenerativeVLM``, the ``VLModel`` over all of it;
- :mod:`.members`: loading full checkpoints, PEFT adapters and M²PT prompts (:mod:`.m2pt`);
- :mod:`.tiny`: tiny random checkpoints for tests and demos (``robustmm make-tiny``).

See docs/models-hf.md.
"""

from robustmm.models.vlm.members import load_vlm_member

__all__ = ["load_vlm_member"]
