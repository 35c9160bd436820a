"""What does attacking a LLaVA-family VLM cost? Examples/s and peak GPU memory of clean candidate scoring, PGD-10
and word substitution on a random ~1B-parameter LLaVA, from one run.

The model is built in memory from a config (random weights: speed and memory do not depend on the values) with the
tiny checkpoints' tokenizer (the project's 30,522-word vocabulary) and a CLIP image processor:

- ``--preset llava-1b``: CLIP ViT-L/14 at 336 px (24 layers, width 1024; 576 image tokens, as LLaVA-1.5) + a
  Llama of 16 layers, width 2048, 16 heads (4 key/value heads), MLP 5632: about 1.15B parameters;
- ``--preset tiny``: the test-sized model (2 layers, width 32, 32 px), to check the script on a CPU.

On ``--n`` easy-VQA test examples (13 candidate answers), batches of ``--batch-size``, it times

(a) clean scoring (``candidate_scores`` under no_grad: one prompt pass + every candidate's answer tokens),
(b) PGD-L∞ 10 steps at 8/255 (10 forward+backward passes through vision tower and language model + scoring),
(c) (b) again with gradient checkpointing (layers recomputed in the backward pass),
(d) word substitution (``word-sub`` defaults: many no-grad scoring queries per example),

and prints examples/s, peak GPU memory (CUDA only) and the ratios (b)/(a), (c)/(b) measured side by side. Each phase
runs once after a one-batch warm-up. Weights are bfloat16 on CUDA (``--dtype``), attack arithmetic fp32.

    .venv/bin/python benchmarks/bench_vlm.py --device cuda [--preset llava-1b] [--n 64] [--batch-size 8]
    .venv/bin/python benchmarks/bench_vlm.py --preset tiny --n 4 --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch

PRESETS = {
    "llava-1b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                 image_size=336, patch_size=14, projection_dim=768),
                     text=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                               num_key_value_heads=4, max_position_embeddings=4096)),
    "tiny": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                             patch_size=8, projection_dim=32),
                 text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512)),
}


def build(preset: str, device: torch.device, dtype: torch.dtype, gradient_checkpointing: bool, candidates):
    """A random LLaVA of ``preset`` as a GenerativeVLM (tuning "finetune") on ``device``."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from robustmm.models.base import ModelInfo
    from robustmm.models.vlm.families import Llava
    from robustmm.models.vlm.model import GenerativeVLM
    from robustmm.models.vlm.tiny import LLAVA_TEMPLATE, _tokenizer
    from robustmm.types import Task

    spec = PRESETS[preset]
    tokenizer = _tokenizer("LlamaTokenizerFast", {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, ["<image>"])
    config = LlavaConfig(vision_config=CLIPVisionConfig(**spec["vision"]),
                         text_config=LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **spec["text"]),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    with torch.device(device):
        hf = LlavaForConditionalGeneration(config).to(dtype).eval()
    hf.generation_config.eos_token_id = tokenizer.eos_token_id
    side = spec["vision"]["image_size"]
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    total = sum(p.numel() for p in hf.parameters())
    info = ModelInfo(f"random {preset}", "llava", "finetune", Task.VQA, "llava@random", total, total, {})
    model = GenerativeVLM(Llava(hf, images, tokenizer), Task.VQA, candidates, info, chat_template=LLAVA_TEMPLATE,
                          answer_end=tokenizer.eos_token_id, gradient_checkpointing=gradient_checkpointing)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


def phase(model, examples, batch_size: int, run) -> tuple[float, float | None]:
    """(examples/s, peak GPU GiB or None) of ``run(model, batch)`` over ``examples`` in batches, after a warm-up batch."""
    from robustmm.attacks import AttackBatch
    from robustmm.data import to_tensor

    def batches():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            pixels = to_tensor([e.image for e in chunk], model.image_size).to(model.device)
            yield AttackBatch(chunk, pixels, [e.text for e in chunk], model.target_indices([e.label for e in chunk]), seed=0)

    cuda = model.device.type == "cuda"
    run(model, next(batches()))  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for batch in batches():
        run(model, batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return len(examples) / seconds, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None)


def main(argv=None) -> dict:
    from robustmm.attacks import get_attack
    from robustmm.data import load_dataset
    from robustmm.models.hf import resolve_dtype
    from robustmm.models.pair import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llava-1b")
    parser.add_argument("--n", type=int, default=64, help="easy-VQA test examples per phase")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU by default")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable timings on a shared machine; 0 = torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"), device)
    dataset = load_dataset("easy-vqa", split="test", limit=args.n, seed=0)
    examples = list(dataset)
    pgd = get_attack("pgd-linf", eps="8/255", steps=10)
    word_sub = get_attack("word-sub")

    def clean(model, batch):
        with torch.no_grad():
            model.candidate_scores(batch.pixels, batch.texts)

    results = {}
    for checkpointing in (False, True):
        model = build(args.preset, device, dtype, checkpointing, dataset.candidates)
        if not checkpointing:
            parameters = sum(p.numel() for p in model.parameters())
            print(f"random LLaVA ({args.preset}): {parameters / 1e9:.3f}B parameters, {dtype}, {device}; image {model.image_size} px; "
                  f"{args.n} easy-VQA test examples, {len(dataset.candidates)} candidates, batches of {args.batch_size}")
            results["clean"] = phase(model, examples, args.batch_size, clean)
            results["pgd-10"] = phase(model, examples, args.batch_size, pgd.run)
            results["word-sub"] = phase(model, examples, args.batch_size, word_sub.run)
        else:
            results["pgd-10, gradient checkpointing"] = phase(model, examples, args.batch_size, pgd.run)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("| phase | examples/s | peak GPU memory (GiB) |\n|---|---|---|")
    for name, (rate, peak) in results.items():
        print(f"| {name} | {rate:.2f} | {'-' if peak is None else f'{peak:.1f}'} |")
    print(f"ratios: pgd-10 / clean time {results['clean'][0] / results['pgd-10'][0]:.1f}x; gradient checkpointing / plain "
          f"pgd-10 time {results['pgd-10'][0] / results['pgd-10, gradient checkpointing'][0]:.2f}x")
    return results


if __name__ == "__main__":
    main()
