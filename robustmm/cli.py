"""The ``robustmm`` command line (typer).

Errors a user can cause print one sentence and exit with code 2 (no traceback, no
half-written report); Ctrl-C keeps every record written so far (rerun to resume).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robustmm.errors import RobustMMError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Robustness of prompt-tuned vs finetuned vision-language models.")
tune_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Make checkpoints: pretrain a base, finetune, prompt-tune.")
app.add_typer(tune_app, name="tune")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def root() -> None:
    """Robustness of prompt-tuned vs finetuned vision-language models."""


def _split_list(values: Optional[List[str]]) -> tuple[str, ...]:
    """Repeated and/or comma-separated option values -> tuple (``--eps 1/255,2/255``)."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return tuple(out)


class _RichProgress:
    """Progress per member x attack for one dataset (the runner's progress callback).

    On a terminal: live rich bars. Otherwise (a log file, nohup, CI) a live display writes nothing
    until it stops, so one line is printed as each member x attack finishes instead.
    """

    def __init__(self, dataset, pair, attacks, totals: dict[str, int]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.totals = dict(totals)  # examples each attack setting runs on (fewer for a seeded subset)
        self.live = console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks = {}
        for member in pair.members():
            for attack in attacks:
                self.tasks[(member, attack.key())] = self.progress.add_task(
                    escape(f"{dataset.name} · {member:8s} · {attack.key()[:60]}"), total=self.totals[attack.key()])
        self.printed: set[int] = set()
        self.since = time.perf_counter()
        if self.live:
            self.progress.start()

    def __call__(self, member: str, attack_key: str, n: int) -> None:
        task = self.tasks.get((member, attack_key))
        if task is None:
            return
        self.progress.advance(task, n)
        state = self.progress.tasks[task]
        if not self.live and state.finished and task not in self.printed:
            self.printed.add(task)
            console.print(f"{state.description}: {int(state.completed)}/{int(state.total)} examples, "
                          f"{time.perf_counter() - self.since:.1f} s", highlight=False, soft_wrap=True)
            self.since = time.perf_counter()

    def grow(self, totals: dict[str, int]) -> None:
        """The sample grew (``--until-decided``): each bar now counts to its attack's new total."""
        self.totals = dict(totals)
        for (_, key), task in self.tasks.items():
            self.progress.update(task, total=totals[key])
        self.printed.clear()

    def close(self) -> None:
        if self.live:
            self.progress.stop()


def _summary_table(rows, labels: tuple[str, str] = ("prompt-tuned", "finetuned"), title: str = "") -> Table:
    """The headline of a comparison on the terminal: ASR of each side on the both-correct examples."""
    from robustmm.report import format_eps, p_text, points_with_ci

    table = Table(title=title or f"attack success on the examples both answered correctly (%): {labels[0]} vs {labels[1]}")
    for column in ("dataset", "attack", "ε", "both correct", f"ASR {labels[0]}", f"ASR {labels[1]}",
                   "difference (pts) [95% CI]", "Holm p", "more robust"):
        table.add_column(column)
    for c in rows:
        winner = {"a": labels[0], "b": labels[1], "tie": "–"}[c.outcome]
        table.add_row(c.dataset, c.attack, format_eps(c), str(c.n_both_correct), f"{100 * c.a.asr:.1f}", f"{100 * c.b.asr:.1f}",
                      points_with_ci(c.difference, c.ci), p_text(c.p_holm), winner)
    return table


@app.command("attack")
def attack_command(
    pair: str = typer.Option("default", help="Built-in pair name (used unless --prompt-tuned/--finetuned are given)."),
    prompt_tuned: Optional[Path] = typer.Option(None, "--prompt-tuned", help="Prompt-tuned checkpoint folder."),
    finetuned: Optional[Path] = typer.Option(None, "--finetuned", help="Finetuned checkpoint folder."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base folder of a --prompt-tuned checkpoint that was moved away from it."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", "-d", help="Dataset name or folder (repeatable). Default: easy-vqa and easy-ve."),
    split: str = typer.Option("test", help="Dataset split."),
    limit: int = typer.Option(400, help="Examples per dataset (a seeded sample; with --until-decided, the round size)."),
    attack: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="Attack name or spec, e.g. 'pgd-linf:eps=8/255,steps=20' (repeatable)."),
    preset: Optional[List[str]] = typer.Option(None, "--preset", "-p", help="Preset name in attacks/ or a TOML file (repeatable). Default: attacks/default.toml."),
    eps: Optional[List[str]] = typer.Option(None, "--eps", help="L∞ budgets of the L∞ pixel attacks on the [0,1] scale, e.g. '1/255,2/255,8/255'."),
    eps_l2: Optional[List[str]] = typer.Option(None, "--eps-l2", help="L2 budgets of the L2 pixel attacks (whole-image norm on the [0,1] scale), e.g. '0.25,0.5,1'."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    dtype: str = typer.Option("float32", help="Model dtype: float32, or bf16 on CUDA (attack arithmetic stays fp32)."),
    seed: int = typer.Option(0, help="Seed of the example sample and of every attack's random draws (0 to 2**63-1)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per attack batch (records do not depend on it)."),
    until_decided: bool = typer.Option(False, "--until-decided", help="Add rounds of --limit examples until every headline CI is within --precision."),
    precision: float = typer.Option(0.05, help="With --until-decided: the CI half-width to reach, as a share (0.05 = ±5 points)."),
    answer: str = typer.Option("candidates", help="candidates, or generate: also report each member's open-ended clean answers (official metric)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="VLM members: square image size the attacks work at (default: the processor's)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="VLM members: recompute activations in backward passes (less GPU memory)."),
    memory_mb: Optional[int] = typer.Option(None, "--memory-mb", help="VLM members: memory budget of one candidate-scoring chunk."),
    transfer: bool = typer.Option(True, help="Keep white-box adversarial images and score each member on the other's (--no-transfer: skip)."),
    transfer_to: Optional[Path] = typer.Option(None, "--transfer-to", help="A third checkpoint to score on both members' adversarial images."),
    out: Path = typer.Option(Path("reports"), help="Folder that holds run folders."),
    name: Optional[str] = typer.Option(None, help="Run folder name (default: default-<identity> for the default suite, else run-<identity>)."),
    resume: bool = typer.Option(True, help="Keep records already in the run folder (a plain rerun resumes too)."),
) -> None:
    """Attack both models of a pair on the same examples and write a markdown report."""
    from robustmm.experiment import RunSpec, run_experiment

    spec = RunSpec(
        pair=pair, prompt_tuned=str(prompt_tuned) if prompt_tuned else None, finetuned=str(finetuned) if finetuned else None,
        datasets=_split_list(dataset) or RunSpec.datasets, split=split, limit=limit, attacks=tuple(attack or ()),
        presets=_split_list(preset), eps=_split_list(eps), eps_l2=_split_list(eps_l2), seed=seed, batch_size=batch_size,
        device=device, dtype=dtype, until_decided=until_decided, precision=precision, base=str(base) if base else None,
        answer=answer, image_size=image_size, gradient_checkpointing=gradient_checkpointing, memory_mb=memory_mb,
        transfer=transfer, transfer_to=str(transfer_to) if transfer_to else None,
    )
    spec.check()
    command = "robustmm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report, summary = run_experiment(spec, out, name, command, progress_factory=_RichProgress, fresh=not resume)
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for the job
        return
    from robustmm.checks import run_checks
    from robustmm.report import checked_verdict

    console.print(_summary_table(summary.comparisons))
    checks = run_checks([r for r in summary.records if r.member in ("prompt", "finetune")])
    for task, ds in summary.datasets():
        console.print(f"[bold]{escape(ds)}[/]: {escape(checked_verdict(summary, task, ds, checks))}", highlight=False)
    console.print(f"report: {escape(str(report))}", highlight=False)


@app.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="A run folder (holds records.jsonl).")) -> None:
    """Re-render a run's report from its stored records."""
    from robustmm.experiment import rerender

    console.print(f"report: {escape(str(rerender(run_dir)))}", highlight=False)


def _distinct_names(a: Path, b: Path) -> tuple[str, str]:
    """Short names of two run folders: their folder names, with parent folders prepended until the names differ
    (``reports/old/default`` vs ``reports/default`` -> ``old/default``, ``reports/default``)."""
    depth = 1
    while depth < max(len(a.parts), len(b.parts)) and a.parts[-depth:] == b.parts[-depth:]:
        depth += 1
    return "/".join(a.parts[-depth:]), "/".join(b.parts[-depth:])


def _comparison_name(name_a: str, name_b: str, member: str, member_b: str) -> str:
    """Default file name of a comparison; it names the members, so comparing the other member of the same
    two runs writes a second file instead of overwriting the first (``compare-a-vs-b-prompt.md``)."""
    a, b = name_a.replace("/", "-"), name_b.replace("/", "-")
    return f"compare-{a}-vs-{b}-{member}.md" if member == member_b else f"compare-{a}-{member}-vs-{b}-{member_b}.md"


@app.command("compare")
def compare_command(
    run_a: Path = typer.Argument(..., help="Run folder A (holds records.jsonl)."),
    run_b: Path = typer.Argument(..., help="Run folder B, made with the same datasets, attacks and seed."),
    member: str = typer.Option("finetune", help="Member of run A to compare: finetune or prompt."),
    member_b: Optional[str] = typer.Option(None, "--member-b", help="Member of run B (default: the same as --member)."),
    out: Optional[Path] = typer.Option(None, help="Markdown file to write (default: compare-A-vs-B-MEMBER.md beside run B)."),
) -> None:
    """Compare one member of run A with one of run B on the same examples and attacks (paired)."""
    from robustmm.compare import compare_runs, render_comparison
    from robustmm.records import load_run
    from robustmm.report import dataset_verdict

    for m in (member, member_b):
        if m is not None and m not in ("prompt", "finetune"):
            raise RobustMMError(f"Member '{m}' is not one of: prompt, finetune.")
    member_b = member_b or member
    run_a, run_b = run_a.resolve(), run_b.resolve()
    name_a, name_b = _distinct_names(run_a, run_b)
    labels = (f"{name_a}/{member}", f"{name_b}/{member_b}")
    if labels[0] == labels[1]:
        labels = (f"A:{labels[0]}", f"B:{labels[1]}")
    out = out or run_b.parent / _comparison_name(name_a, name_b, member, member_b)
    if out.suffix != ".md":
        raise RobustMMError(f"--out {out} must name a .md file.")
    rows, only = compare_runs(load_run(run_a), load_run(run_b), member, member_b, labels)
    console.print(_summary_table(rows, ("A", "B"), f"{labels[0]} (A) vs {labels[1]} (B): attack success on the examples both answered correctly (%)"))
    names = (f"A ({labels[0]})", f"B ({labels[1]})")
    for task, dataset in sorted({(c.task, c.dataset) for c in rows}):
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        console.print(f"[bold]{escape(dataset)}[/]: {escape(dataset_verdict(shown, names))}", highlight=False)
    command = "robustmm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"report: {escape(str(render_comparison(rows, only, labels, out, command)))}", highlight=False)


@app.command("pool")
def pool_command(
    runs: Optional[List[Path]] = typer.Argument(None, help="Run folders whose prompt-tuned AND finetuned members are pooled (e.g. one per seed)."),
    prompt_from: Optional[List[Path]] = typer.Option(None, "--prompt-from", help="Run folder whose prompt-tuned member only is pooled (repeatable)."),
    finetune_from: Optional[List[Path]] = typer.Option(None, "--finetune-from", help="Run folder whose finetuned member only is pooled (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="Markdown file to write (default: pool-RUN-....md beside the first run)."),
) -> None:
    """Pool runs of differently seeded members into one prompt-vs-finetune verdict per attack."""
    from robustmm.pool import members_of, pool_members, render_pool
    from robustmm.records import load_run
    from robustmm.report import dataset_verdict

    groups = [[p.resolve() for p in paths or ()] for paths in (runs, prompt_from, finetune_from)]
    folders = [f for group in groups for f in group]
    if not folders:
        raise RobustMMError("Give run folders to pool (RUN..., --prompt-from RUN, --finetune-from RUN).")
    loaded = {f: load_run(f) for f in folders}  # a folder listed twice is read once
    members = members_of(*([(f.name, loaded[f]) for f in group] for group in groups))
    names = list(dict.fromkeys(f.name for f in folders))
    stem = "+".join(names) if len("+".join(names)) <= 120 else f"{names[0]}+{len(names) - 1}-more"
    out = out or folders[0].parent / f"pool-{stem}.md"
    if out.suffix != ".md":
        raise RobustMMError(f"--out {out} must name a .md file.")
    rows, left_out = pool_members(members)
    n_prompt = sum(m.member == "prompt" for m in members)
    names = (f"prompt tuning ({n_prompt} members)", f"finetuning ({len(members) - n_prompt} members)")
    console.print(_summary_table(rows, ("prompt-tuned", "finetuned"),
                                 f"{n_prompt} prompt-tuned vs {len(members) - n_prompt} finetuned members: mean attack success (%)"))
    for task, dataset in sorted({(c.task, c.dataset) for c in rows}):
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        console.print(f"[bold]{escape(dataset)}[/]: {escape(dataset_verdict(shown, names))}", highlight=False)
    command = "robustmm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"report: {escape(str(render_pool(rows, left_out, members, out, command)))}", highlight=False)


@app.command("list")
def list_command() -> None:
    """Show the attacks, presets, datasets and model pairs robustmm knows."""
    from robustmm.attacks import attack_class, list_attacks, list_presets
    from robustmm.data import list_datasets

    table = Table(title="attacks")
    for column in ("name", "modality", "what it does"):
        table.add_column(column)
    for attack_name in list_attacks():
        cls = attack_class(attack_name)
        table.add_row(attack_name, cls.modality, (cls.__doc__ or "").strip().splitlines()[0])
    table.add_row("transfer", "image", "Each white-box pixel attack's images, crafted on one member, shown to the other "
                  "(and to a --transfer-to checkpoint): on by default, no extra attack to list; --no-transfer turns it off.")
    console.print(table)
    table = Table(title="presets (attacks/)")
    table.add_column("name")
    table.add_column("file")
    for preset_name, path in list_presets().items():
        table.add_row(preset_name, str(path))
    console.print(table)
    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("description")
    for dataset_name, description in list_datasets().items():
        table.add_row(dataset_name, description)
    console.print(table)
    table = Table(title="pairs")
    for column in ("pair", "task", "members"):
        table.add_column(column)
    from robustmm.models.pair import DEFAULT_DATASETS, DEFAULT_PAIR_DIR

    for task, dataset_name in DEFAULT_DATASETS.items():
        folder = DEFAULT_PAIR_DIR / dataset_name
        table.add_row("default", task.value, f"{folder / 'prompt'} , {folder / 'finetune'}" if folder.exists() else "(not built)")
    console.print(table)


PRECISION_HELP = "fp32, or bf16: mixed precision (the forward pass under bfloat16 autocast; weights and losses stay fp32)."
RECIPE_DEFAULT = "Default: the recipe's for the dataset."
SEED_HELP = "Default: the recipe's (the shipped pair's)."


@tune_app.command("recipe")
def tune_recipe(
    out: Path = typer.Option(Path("pairs/default"), help="Folder for base/ and <dataset>/{finetune,prompt}/ (stages already "
                             "there with the same settings are kept; the shipped pair: --out robustmm/checkpoints/default)."),
    seed: int = typer.Option(None, help="Seed of the whole recipe. " + SEED_HELP),
    device: str = typer.Option("cpu", help="cpu, cuda or auto; the shipped pair was made on cpu."),
    precision: str = typer.Option(None, help=PRECISION_HELP + " Sets every stage; default: the recipe's (fp32)."),
) -> None:
    """Make the default pair: pretrain a base, then finetune and prompt-tune it on easy-vqa and easy-ve."""
    from robustmm.models.pair import resolve_device
    from robustmm.tuning import Recipe, make_pair

    recipe = Recipe(seed=_recipe_seed(seed))
    report = make_pair(recipe.in_precision(precision) if precision else recipe, out, resolve_device(device))
    for key, value in report["accuracy"].items():
        console.print(f"{key}: test accuracy {100 * value['test_accuracy']:.2f}% "
                      f"({value['trainable_parameters']:,} trainable parameters)")
    by_kind = ", ".join(f"{kind} {100 * value:.0f}%" for kind, value in report["base_matching"].items() if kind != "overall")
    console.print(f"base image-text matching: {100 * report['base_matching_accuracy']:.1f}% (chance 50%; {by_kind})")
    console.print(f"training {report['train_seconds'] / 60:.1f} min; details in {out / 'recipe.json'}")


@tune_app.command("pretrain")
def tune_pretrain(out: Path = typer.Option(..., help="Base checkpoint folder to write."),
                  epochs: float = typer.Option(None, help="Default: the recipe's (8)."),
                  lr: float = typer.Option(None, help="Default: the recipe's (1e-3)."), seed: int = typer.Option(None, help=SEED_HELP),
                  objective: list[str] = typer.Option(None, help="A pretraining objective (repeat it; default: the recipe's)."),
                  then_epochs: float = typer.Option(0.0, help="Then continue this many epochs with the --then-objective list (0: no second phase)."),
                  then_objective: list[str] = typer.Option(None, help="An objective of the second phase (repeat it; default: all of them)."),
                  device: str = typer.Option("auto", help="auto, cpu or cuda."),
                  precision: str = typer.Option(None, help=PRECISION_HELP + " Default: the recipe's (fp32).")) -> None:
    """Pretrain a base model on captioning, attribute infilling and image-text matching over easy-VQA train images."""
    from dataclasses import replace

    from robustmm.models.pair import resolve_device
    from robustmm.tuning import Recipe, pretrain

    recipe = Recipe(seed=_recipe_seed(seed), then_epochs=then_epochs, **({"objectives": tuple(objective)} if objective else {}),
                    **({"then_objectives": tuple(then_objective)} if then_objective else {}))
    pretrain(replace(recipe, pretrain=_overridden(recipe.pretrain, epochs=epochs, lr=lr, precision=precision)), out, resolve_device(device))


@tune_app.command("finetune")
def tune_finetune(base: Path = typer.Option(..., help="Base checkpoint folder."), dataset: str = typer.Option("easy-vqa"),
                  out: Path = typer.Option(...), epochs: float = typer.Option(None, help=RECIPE_DEFAULT),
                  lr: float = typer.Option(None, help=RECIPE_DEFAULT),
                  seed: int = typer.Option(None, help=SEED_HELP), device: str = typer.Option("auto", help="auto, cpu or cuda."),
                  precision: str = typer.Option(None, help=PRECISION_HELP + " " + RECIPE_DEFAULT)) -> None:
    """Finetune every parameter of a base model on a task (stage settings default to the shipped recipe's)."""
    from robustmm.models.pair import resolve_device
    from robustmm.tuning import Recipe, finetune

    stage = _overridden(Recipe().for_dataset(dataset)[0], epochs=epochs, lr=lr, precision=precision)
    finetune(base, dataset, out, stage, _recipe_seed(seed), resolve_device(device))


@tune_app.command("prompt")
def tune_prompt(base: Path = typer.Option(..., help="Base checkpoint folder (--style m2pt: a VLM checkpoint folder or cached Hub id)."),
                dataset: str = typer.Option("easy-vqa"),
                out: Path = typer.Option(...),
                style: str = typer.Option(None, help="prefix (every layer) or prompt (input only) on the built-in model, or m2pt "
                                                     "(M²PT visual + textual prompts on a VLM). " + RECIPE_DEFAULT),
                where: str = typer.Option(None, help="encoder, decoder or both. " + RECIPE_DEFAULT),
                length: int = typer.Option(None, help=RECIPE_DEFAULT),
                reparam: bool = typer.Option(None, help="MLP reparameterisation (--no-reparam: plain prompt tensors). " + RECIPE_DEFAULT),
                reparam_hidden: int = typer.Option(None, help="Hidden width of the reparameterisation MLP. " + RECIPE_DEFAULT),
                init: str = typer.Option(None, help="activations (start at the base's key/values of real inputs) or random. " + RECIPE_DEFAULT),
                epochs: float = typer.Option(None, help=RECIPE_DEFAULT), lr: float = typer.Option(None, help=RECIPE_DEFAULT),
                seed: int = typer.Option(None, help=SEED_HELP), device: str = typer.Option("auto", help="auto, cpu or cuda."),
                precision: str = typer.Option(None, help=PRECISION_HELP + " " + RECIPE_DEFAULT),
                visual_length: int = typer.Option(8, help="--style m2pt: visual prompt tokens per prompted vision layer."),
                visual_layers: int = typer.Option(0, help="--style m2pt: prompted vision layers from the first (0: all before the features)."),
                limit: int = typer.Option(None, help="Train on at most this many examples (a seeded sample).")) -> None:
    """Train prompts only, on top of a frozen base model (settings default to the shipped recipe's)."""
    from robustmm.models.pair import resolve_device
    from robustmm.tuning import Recipe, prompt_tune

    if style == "m2pt":
        from robustmm.tuning.m2pt import DEFAULT_STAGE, M2PTSettings, m2pt_tune

        settings = M2PTSettings(visual_tokens=visual_length, visual_layers=visual_layers, text_tokens=8 if length is None else length)
        stage = _overridden(DEFAULT_STAGE, epochs=epochs, lr=lr, precision=precision, limit=limit)
        stats = m2pt_tune(str(base), dataset, out, settings, stage, 0 if seed is None else seed, resolve_device(device))
        console.print(f"M²PT prompts in {out}: {stats['trained_parameters']:,} trained parameters "
                      f"({100 * stats['trainable_share']:.3f}%), {stats['steps']} steps, final loss {stats['final_loss']:.3f}")
        return
    _, stage, prompt = Recipe().for_dataset(dataset)
    prompt = _overridden(prompt, style=style, where=where, length=length, reparam=reparam, reparam_hidden=reparam_hidden, init=init)
    prompt_tune(base, dataset, out, prompt, _overridden(stage, epochs=epochs, lr=lr, precision=precision, limit=limit),
                _recipe_seed(seed), resolve_device(device))


def _recipe_seed(seed: int | None) -> int:
    """``seed``, or the shipped recipe's seed when none was given on the command line."""
    from robustmm.tuning import Recipe

    return Recipe().seed if seed is None else seed


def _overridden(config, **values):
    """``config`` with the given fields replaced, except those left at None (not given on the command line)."""
    from dataclasses import replace

    return replace(config, **{name: value for name, value in values.items() if value is not None})


@app.command("make-tiny")
def make_tiny_command(family: str = typer.Option(..., help="llava, llava-next, paligemma, qwen2-vl, idefics3 or blip2."),
                      out: Path = typer.Option(..., help="Folder for model/, prompt/ (PEFT prompt tuning) and lora/ (PEFT LoRA)."),
                      seed: int = typer.Option(0, help="Seed of the random weights.")) -> None:
    """Write a tiny random VLM checkpoint with a working processor, and PEFT adapters on it (offline; for tests and demos)."""
    from robustmm.models.vlm.tiny import make_tiny

    folders = make_tiny(family, out, seed)
    console.print(f"tiny random {family}: " + ", ".join(f"{name} {path}" for name, path in folders.items()), highlight=False)


@app.command("setup-text")
def setup_text_command() -> None:
    """Prepare the text attacks' offline data: copy WordNet, write the stop-word list, check MiniLM and the POS tagger."""
    from robustmm.attacks.text.pos import load_pipeline
    from robustmm.attacks.text.resources import prepare_text_resources

    folder = prepare_text_resources()
    load_pipeline()  # RobustMMError with the pip command when spaCy's small English pipeline is missing
    console.print(f"text-attack resources ready in {folder}; part-of-speech tagger: spaCy en_core_web_sm (offline)")


def main() -> None:
    """Console-script entry point: a RobustMMError becomes one line on stderr and exit code 2; Ctrl-C
    exits 130 saying that a rerun resumes (attack records and tuning progress are kept).

    typer itself turns usage errors (unknown option, bad value) into exit code 2, and Ctrl-C
    (KeyboardInterrupt) into a silent exit 130.
    """
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    logging.getLogger("robustmm").addHandler(handler)
    logging.getLogger("robustmm").setLevel(logging.WARNING)
    try:
        app()
    except RobustMMError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(2)
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code != 130:
            raise
        err_console.print("interrupted: what was done so far is kept (attack records, tuning progress); "
                          "rerun the same command to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
