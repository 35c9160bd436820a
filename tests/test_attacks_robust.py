"""APGD-CE / APGD-DLR / APGD-T, Square, the worst-case ensemble, EOT and the seeded subset.

Most tests run on the shipped default pair (a few examples, few steps); equality with torchattacks is
checked given the same random draws; the rest use the tiny random model from conftest.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from robustmm.attacks import AttackBatch, get_attack, list_attacks, parse_attack_spec
from robustmm.attacks.apgd import apgd
from robustmm.attacks.base import attack_mode
from robustmm.attacks.ensemble import WorstCase, component_counts, component_table
from robustmm.attacks.image import ClassifierView, eot_gradient
from robustmm.attacks.square import draw_layout, square
from robustmm.errors import RobustMMError
from robustmm.seeding import in_subset
from robustmm.types import AttackRecord, Example, Status, Task


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def default_pairs():
    """The shipped default pair of each task, and 8 easy-VQA / easy-VE test examples as attack batches."""
    from robustmm.data import load_dataset, to_tensor
    from robustmm.evaluate import gold_targets
    from robustmm.models.pair import load_pair

    out = {}
    for task, dataset in (("vqa", "easy-vqa"), ("ve", "easy-ve")):
        pair = load_pair("default", task=task, device="cpu")
        examples = list(load_dataset(dataset, split="test", limit=8, seed=3))
        pixels = to_tensor([e.image for e in examples], pair.finetuned.image_size)
        targets = gold_targets(examples, pair.finetuned.candidates, task)
        out[task] = (pair, AttackBatch(examples, pixels, [e.text for e in examples], targets, seed=0))
    return out


def rows(batch: AttackBatch, index) -> AttackBatch:
    index = list(index)
    return AttackBatch([batch.examples[i] for i in index], batch.pixels[index], [batch.texts[i] for i in index],
                       batch.targets[index], batch.seed)


FAST = ["apgd-ce:steps=5", "apgd-ce:norm=l2,eps=0.5,steps=5,restarts=2", "apgd-dlr:steps=5",
        "apgd-dlr:steps=4,targeted=true,targets=2", "square:queries=30", "square:norm=l2,eps=0.5,queries=30",
        "worst-case:steps=4,queries=20", "worst-case:norm=l2,eps=0.5,attacks=apgd-ce+apgd-t+square,steps=3,queries=10"]


# ---------------------------------------------------------------------------
# Budget, range, determinism, pairing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", FAST)
def test_budget_range_and_info(default_pairs, spec):
    pair, batch = default_pairs["vqa"]
    attack = parse_attack_spec(spec)
    clean = batch.pixels.clone()
    result = attack.run(pair.finetuned, batch)
    assert torch.equal(batch.pixels, clean)
    assert float(result.pixels.min()) >= 0 and float(result.pixels.max()) <= 1
    delta = (result.pixels - clean).flatten(1)
    measured = delta.norm(dim=1) if attack.config.norm == "l2" else delta.abs().amax(dim=1)
    assert (measured <= attack.config.eps * (1 + 1e-5) + 1e-6).all(), measured
    with torch.no_grad():
        expected = pair.finetuned.candidate_scores(result.pixels, batch.texts)
    torch.testing.assert_close(result.scores, expected, atol=1e-4, rtol=1e-4)
    broken = result.scores.argmax(1) != batch.targets
    for i, row in enumerate(result.info):
        assert row["queries"] >= 1 and row["linf"] == pytest.approx(float(delta[i].abs().max()), abs=1e-6)
        if not broken[i]:
            assert row["linf"] == 0.0, "an example the attack did not break keeps its clean pixels"
        if attack.name != "square":
            assert isinstance(row["details"]["zero_grad"], bool)


def recorded_inputs(model):
    """Patch ``model.candidate_scores`` to record every pixel batch it is called with."""
    seen, original = [], model.candidate_scores

    def recording(pixels, texts):
        seen.append(pixels.detach().clone())
        return original(pixels, texts)

    model.candidate_scores = recording
    return seen, original


def first_moved(seen: list[torch.Tensor], clean: torch.Tensor) -> torch.Tensor:
    """The first pixel batch the model saw that is not the clean one: the random starting points."""
    return next(x for x in seen if x.shape != clean.shape or not torch.equal(x, clean))


def run_recording(spec: str, model, batch: AttackBatch):
    """The attack's result and every pixel batch the model saw during it."""
    seen, original = recorded_inputs(model)
    try:
        return parse_attack_spec(spec).run(model, batch), seen
    finally:
        model.candidate_scores = original


@pytest.mark.parametrize("spec", ["apgd-ce:steps=4,restarts=2", "apgd-dlr:steps=4", "square:queries=20", "worst-case:steps=3,queries=10"])
def test_same_seed_same_result_other_seed_other_result(default_pairs, spec):
    pair, batch = default_pairs["ve"]
    model = pair.prompt_tuned
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first, seen = run_recording(spec, model, batch)
    assert torch.equal(torch.random.get_rng_state(), state), "the attack used the global generator"
    again, seen_again = run_recording(spec, model, batch)
    assert torch.equal(first.pixels, again.pixels) and [r["details"] for r in first.info] == [r["details"] for r in again.info]
    assert len(seen) == len(seen_again) and all(torch.equal(a, b) for a, b in zip(seen, seen_again))
    _, seen_other = run_recording(spec, model, replace(batch, seed=1))
    assert not torch.equal(first_moved(seen, batch.pixels), first_moved(seen_other, batch.pixels)), \
        "another run seed must give other random starts"


@pytest.mark.parametrize("spec", ["apgd-ce:steps=2", "apgd-ce:norm=l2,eps=0.5,steps=2", "square:queries=3", "pgd-linf:steps=1"])
def test_both_members_get_the_same_random_start(default_pairs, spec):
    pair, batch = default_pairs["vqa"]
    batch = replace(batch, targets=torch.full_like(batch.targets, -100))  # each attacks its own clean answer: all examples
    starts = []
    for model in (pair.prompt_tuned, pair.finetuned):
        _, seen = run_recording(spec, model, batch)
        starts.append(first_moved(seen, batch.pixels))
    assert starts[0].shape == batch.pixels.shape and torch.equal(starts[0], starts[1])


@pytest.mark.parametrize("spec", ["apgd-ce:steps=6,restarts=2", "apgd-dlr:norm=l2,eps=1,steps=6", "square:queries=40",
                                  "worst-case:steps=4,queries=20"])
def test_batch_size_does_not_change_the_draws_or_the_outcome(default_pairs, spec):
    """Each example's draws come from its own seed: alone or in a batch it starts from the same point and ends with
    the same answer. (The pixels agree up to the model's own float noise: its conv stem is not bitwise
    batch-invariant on CPU, so a near-zero gradient coordinate may take the other sign.)"""
    pair, batch = default_pairs["ve"]
    model = pair.finetuned
    together = parse_attack_spec(spec).run(model, batch)
    alone = [parse_attack_spec(spec).run(model, rows(batch, [i])) for i in range(len(batch))]
    assert torch.equal(torch.cat([a.scores for a in alone]).argmax(1), together.scores.argmax(1))
    assert [a.info[0]["details"].get("broken_by") for a in alone] == [r["details"].get("broken_by") for r in together.info]
    if spec.startswith("square"):  # forward-only and accept/reject: identical here
        assert torch.equal(torch.cat([a.pixels for a in alone]), together.pixels)


# ---------------------------------------------------------------------------
# Equality with torchattacks given the same draws
# ---------------------------------------------------------------------------


class OneTextView(ClassifierView):
    """A view of one question asked about any number of images: torchattacks may then call it on any subset
    of the batch (its restarts do), which a ClassifierView of a fixed batch cannot answer."""

    def forward(self, pixels):
        inputs = {name: value.expand(pixels.shape[0], -1) for name, value in self.text_inputs.items()}
        return self.model.candidate_scores(pixels.to(self.dtype), inputs).float()

    def subset(self, index):
        return self


def global_starts(norm: str, seed: int):
    """The random starts torchattacks draws: torch.rand / torch.randn of each run's shape, after manual_seed(seed)."""
    torch.manual_seed(seed)

    def start(run, index):
        shape = (len(index), 3, 64, 64)
        return 2 * torch.rand(shape) - 1 if norm == "linf" else torch.randn(shape)

    return start


@pytest.mark.parametrize("norm, eps, loss, restarts", [("linf", 8 / 255, "ce", 1), ("l2", 0.5, "ce", 1),
                                                        ("linf", 8 / 255, "dlr", 1), ("linf", 16 / 255, "ce", 3)])
def test_apgd_equals_torchattacks_given_the_same_start(default_pairs, norm, eps, loss, restarts):
    import torchattacks

    pair, batch = default_pairs["vqa"]
    model = pair.prompt_tuned if restarts > 1 else pair.finetuned
    with attack_mode(model):
        if restarts > 1:  # one question about 6 images, so torchattacks may attack any subset
            view = OneTextView(model, batch.texts[:1])
            pixels, labels = batch.pixels[:6], view(batch.pixels[:6]).argmax(1)
        else:
            view = ClassifierView(model, batch.texts)
            pixels, labels = batch.pixels, view(batch.pixels).argmax(1)
        theirs = torchattacks.APGD(view, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=8, n_restarts=restarts,
                                   seed=5, loss=loss)(pixels, labels)
        ours = apgd(view, pixels, labels, global_starts(norm, 5), norm=norm, eps=eps, steps=8, restarts=restarts, loss=loss)
    assert torch.equal(ours.pixels, theirs)
    assert torch.equal(ours.broken, (view(theirs).argmax(1) != labels).cpu())
    if restarts > 1:
        assert ours.broken.any() and (ours.runs > 1).any(), "the restart case should break some examples and restart others"


def test_apgd_t_equals_torchattacks_apgdt(default_pairs):
    import torchattacks

    pair, batch = default_pairs["vqa"]
    model = pair.prompt_tuned
    with attack_mode(model):
        view = OneTextView(model, batch.texts[:1])
        pixels = batch.pixels[:6]
        labels = view(pixels).argmax(1)
        theirs = torchattacks.APGDT(view, eps=16 / 255, steps=5, n_restarts=1, seed=2, n_classes=4)(pixels, labels)
        ours = apgd(view, pixels, labels, global_starts("linf", 2), norm="linf", eps=16 / 255, steps=5, targets=3)
    assert torch.equal(ours.pixels, theirs)
    assert ours.broken.any() and (ours.runs == 3).any(), "some examples should fall to the first target, others see all three"


def torchattacks_square_draws(norm: str, seed: int, queries: int) -> torch.Tensor:
    """The uniform draws torchattacks.Square makes for one example, in its order, after manual_seed(seed)."""
    torch.manual_seed(seed)
    first, _ = draw_layout(norm, 3, 64, 64)
    if norm == "linf":
        parts = [torch.rand([1, 3, 1, 64]).flatten()]
        for _ in range(queries):
            parts += [torch.rand([1]), torch.rand([1]), torch.rand([3, 1, 1]).flatten()]
    else:
        parts = []
        for _ in range(first // 4):
            parts += [torch.rand([1]), torch.rand([1, 3, 1, 1]).flatten()]
        for _ in range(queries):
            parts += [torch.rand([1]) for _ in range(5)] + [torch.rand([1, 3, 1, 1]).flatten()]
    return torch.cat(parts)[None]


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 1.0)])
def test_square_equals_torchattacks_for_one_example_given_its_draws(default_pairs, norm, eps):
    """torchattacks draws one window per iteration for the whole batch; for a batch of one that is the per-example
    search, so with the same draws both must agree exactly."""
    import torchattacks

    pair, batch = default_pairs["vqa"]
    model = pair.prompt_tuned
    outcomes = []
    with attack_mode(model):
        for i in (5, 6, 7):  # the seeded sample's example 7 is broken by 150 queries (a failed search returns clean pixels)
            view = ClassifierView(model, batch.texts[i:i + 1])
            pixels, labels = batch.pixels[i:i + 1], batch.targets[i:i + 1]
            theirs = torchattacks.Square(view, norm="Linf" if norm == "linf" else "L2", eps=eps, n_queries=150, seed=7)(pixels, labels)
            ours, broken, used = square(view, pixels, labels, torchattacks_square_draws(norm, 7, 150), norm=norm, eps=eps,
                                        queries=150)
            assert torch.equal(ours, theirs)
            outcomes.append(bool(broken[0]))
    assert any(outcomes), "at least one of the examples should be broken by Square here"


# ---------------------------------------------------------------------------
# Square is black-box; DLR needs candidates; the worst case is the union
# ---------------------------------------------------------------------------


def test_square_never_differentiates(default_pairs, monkeypatch):
    pair, batch = default_pairs["ve"]

    def refuse(*args, **kwargs):
        raise AssertionError("Square called autograd")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    seen, original = recorded_inputs(pair.finetuned)
    grad_modes = []
    hook = pair.finetuned.backbone.encoder[0].register_forward_pre_hook(
        lambda module, args: grad_modes.append(torch.is_grad_enabled()))
    try:
        result = get_attack("square", queries=25).run(pair.finetuned, batch)
    finally:
        pair.finetuned.candidate_scores = original
        hook.remove()
    assert grad_modes and not any(grad_modes) and not any(p.requires_grad for p in seen)
    assert all(1 <= row["queries"] <= 26 for row in result.info)


def two_answer_model():
    from conftest import build_tiny_model

    from robustmm.models.unified import UnifiedVLM

    tiny = build_tiny_model("vqa")
    return UnifiedVLM(tiny.backbone, tiny.tokenizer, Task.VQA, ("yes", "no"), None).eval()


def test_dlr_needs_three_candidates_and_apgd_t_four(default_pairs):
    from test_attacks_image import make_batch

    batch = make_batch(targets=[0, 1, 0, 1])
    with pytest.raises(RobustMMError, match="at least 3 candidate answers"):
        get_attack("apgd-dlr", steps=2).run(two_answer_model(), batch)
    pair, ve_batch = default_pairs["ve"]
    with pytest.raises(RobustMMError, match="APGD-T.*at least 4 candidate answers.*SNLI-VE"):
        get_attack("apgd-dlr", steps=2, targeted=True).run(pair.finetuned, ve_batch)
    # the worst case leaves out what cannot run: APGD-CE and Square only on two answers, no APGD-T on SNLI-VE
    result = get_attack("worst-case", steps=2, queries=5).run(two_answer_model(), batch)
    assert all(not any(k.startswith("apgd-dlr") for k in row["details"]["ran"]) for row in result.info)
    assert any(row["details"]["ran"] for row in result.info)
    result = get_attack("worst-case", attacks="apgd-t+apgd-ce", steps=2).run(pair.finetuned, ve_batch)
    assert all(k.startswith("apgd-ce") for row in result.info for k in row["details"]["ran"])
    with pytest.raises(RobustMMError, match="None of worst-case's attacks"):
        get_attack("worst-case", attacks="apgd-dlr").run(two_answer_model(), batch)


def test_worst_case_is_never_weaker_than_any_component(default_pairs):
    pair, batch = default_pairs["ve"]
    model = pair.prompt_tuned
    attack = get_attack("worst-case", steps=5, queries=60)
    result = attack.run(model, batch)
    wrong = result.scores.argmax(1) != batch.targets
    for component in attack.components(len(model.candidates)):
        alone = component.run(model, batch)
        alone_wrong = alone.scores.argmax(1) != batch.targets
        assert bool((wrong | ~alone_wrong).all()), f"{component.key()} broke an example the worst case did not"
    keys = [c.key() for c in attack.components(len(model.candidates))]
    for row, broken in zip(result.info, wrong.tolist()):
        ran = row["details"]["ran"]
        assert ran == keys[:len(ran)], "components run in order, each only while the example is robust"
        assert (row["details"]["broken_by"] is not None) == broken
        if row["details"]["broken_by"] is not None:
            assert ran[-1] == row["details"]["broken_by"]
        else:
            assert ran == keys and row["linf"] == 0.0


def test_component_counts_fall_with_the_examples_still_robust():
    def record(example_id, ran, broken_by):
        return AttackRecord(run="r", task="ve", dataset="d", member="prompt", model="m", attack="worst-case",
                            attack_key="worst-case()", modality="image", eps=8 / 255, example_id=example_id, answers=("a",),
                            text="t", adv_text="t", clean_prediction="a", adv_prediction="a", clean_score=1.0,
                            adv_score=0.0 if broken_by else 1.0, status=Status.SUCCEEDED if broken_by else Status.FAILED,
                            details={"ran": ran, "broken_by": broken_by})

    records = [record("1", ["ce"], "ce"), record("2", ["ce", "dlr", "sq"], "sq"), record("3", ["ce", "dlr", "sq"], None),
               record("4", ["ce", "dlr"], "dlr")]
    assert component_counts(records) == {"ce": {"ran": 4, "broke": 1}, "dlr": {"ran": 3, "broke": 1}, "sq": {"ran": 2, "broke": 1}}
    assert component_table(records) == [
        "`worst-case()`: examples each component broke / ran on (each runs only on those still robust)", "",
        "| dataset | member | `ce` | `dlr` | `sq` | robust |", "|---|---|---|---|---|---|",
        "| d | prompt | 1 / 4 | 1 / 3 | 1 / 2 | 1 |"]


# ---------------------------------------------------------------------------
# EOT, zero gradients, subsets, keys and configuration
# ---------------------------------------------------------------------------


def test_eot_gradient_is_the_mean_over_the_models_random_draws():
    """A 'model' whose k-th call multiplies the input by weights[k]: EOT must average the k gradients."""
    weights = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([-1.0, 1.0])]
    calls = []

    def view(x):
        w = weights[len(calls) % 3]
        calls.append(1)
        return torch.stack([(x * w).sum(1), torch.zeros(x.shape[0])], dim=1)

    x = torch.ones(2, 2, requires_grad=True)
    grad, logits, loss = eot_gradient(view, x, lambda logits: logits[:, 0], eot=3)
    torch.testing.assert_close(grad, torch.stack(weights).mean(0).expand(2, 2))
    assert len(calls) == 3 and logits.shape == (2, 2) and loss.shape == (2,)


class NoisyModel(torch.nn.Module):
    """The tiny model behind random pixel dropout that stays on in eval mode (like ViLT's patch sampling)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.candidates, self.image_size = model.candidates, model.image_size

    @property
    def device(self):
        return self.inner.device

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)

    def candidate_scores(self, pixels, texts):
        keep = (torch.rand(pixels.shape[0], 1, pixels.shape[2], pixels.shape[3], device=pixels.device) > 0.3).float()
        return self.inner.candidate_scores(pixels * keep, texts)


@pytest.mark.parametrize("name", ["pgd-linf", "apgd-ce"])
def test_eot_on_a_random_model_is_reproducible_and_costs_eot_passes(tiny_vqa_model, name):
    from test_attacks_image import make_batch

    model, batch = NoisyModel(tiny_vqa_model), make_batch(targets=[-100] * 4)  # attack the (random) model's own answers
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    one = get_attack(name, steps=2, eot=1).run(model, batch)
    four = get_attack(name, steps=2, eot=4).run(model, batch)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(four.pixels, get_attack(name, steps=2, eot=4).run(model, batch).pixels)
    assert all(r["queries"] == 4 * q["queries"] for r, q in zip(four.info, one.info))
    assert "eot=4" in get_attack(name, eot=4).key() and "eot" not in get_attack(name).key()


def test_eot_on_a_deterministic_model_changes_nothing_but_the_cost(tiny_vqa_model):
    from test_attacks_image import make_batch

    batch = make_batch()
    once = get_attack("pgd-linf", steps=3, random_start=False).run(tiny_vqa_model, batch)
    thrice = get_attack("pgd-linf", steps=3, random_start=False, eot=3).run(tiny_vqa_model, batch)
    assert torch.equal(once.pixels, thrice.pixels) and thrice.info[0]["queries"] == 9


@pytest.mark.parametrize("spec", ["fgsm", "pgd-linf:steps=2", "apgd-ce:steps=2", "worst-case:steps=2,attacks=apgd-ce"])
def test_zero_gradients_are_reported(tiny_vqa_model, spec):
    from test_attacks_image import make_batch

    batch = make_batch(targets=[-100] * 4)  # attack the random model's own answers: every example is attacked
    normal = parse_attack_spec(spec).run(tiny_vqa_model, batch)
    assert not any(row["details"]["zero_grad"] for row in normal.info)
    original = tiny_vqa_model.candidate_scores
    # a saturated model: the scores no longer depend on the pixels
    tiny_vqa_model.candidate_scores = lambda pixels, texts: original(pixels.detach() * 0 + 0.5, texts) + 0 * pixels.sum()
    try:
        flat = parse_attack_spec(spec).run(tiny_vqa_model, batch)
    finally:
        tiny_vqa_model.candidate_scores = original
    assert all(row["details"]["zero_grad"] for row in flat.info)


def test_seeded_subset_is_nested_and_the_attack_leaves_the_rest_alone(tiny_vqa_model):
    from test_attacks_image import examples_for, make_batch

    ids = [f"q{i}" for i in range(2000)]
    small = {i for i in ids if in_subset(0, i, 0.1)}
    large = {i for i in ids if in_subset(0, i, 0.3)}
    assert small < large and 120 < len(small) < 280 and 480 < len(large) < 720
    assert small != {i for i in ids if in_subset(1, i, 0.1)}, "the run seed changes the subset"
    batch = make_batch(b=8)
    batch = replace(batch, examples=examples_for(batch.texts, prefix="s"))
    attack = get_attack("apgd-ce", steps=2, subset=0.5)
    assert "subset=0.5" in attack.key()
    covered = [attack.covers(batch.seed, e.id) for e in batch.examples]
    assert covered == [get_attack("square", subset=0.5).covers(batch.seed, e.id) for e in batch.examples]
    assert 0 < sum(covered) < 8
    result = attack.run(tiny_vqa_model, batch)
    for row, inside in zip(result.info, covered):
        assert row["details"].get("outside_subset", False) is (not inside)
        if not inside:
            assert row["queries"] == 0 and row["linf"] == 0.0


def test_keys_registry_and_papers():
    assert {"apgd-ce", "apgd-dlr", "square", "worst-case"} <= set(list_attacks("image"))
    assert get_attack("apgd-ce").key() == "apgd-ce(norm=linf, eps=8/255, steps=100, restarts=1)"
    assert get_attack("apgd-ce", norm="l2", eps=0.5).key() == "apgd-ce(norm=l2, eps=0.5, steps=100, restarts=1)"
    assert get_attack("apgd-dlr", targeted=True).key() == "apgd-dlr(norm=linf, eps=8/255, steps=100, restarts=1, targeted=True, targets=9)"
    assert get_attack("square").key() == "square(norm=linf, eps=8/255, queries=1000)"
    assert get_attack("worst-case", attacks="apgd-ce+apgd-dlr").key() == \
        "worst-case(norm=linf, eps=8/255, attacks=apgd-ce+apgd-dlr, steps=100, restarts=1)"
    assert get_attack("worst-case", attacks="square", queries=5000).key() == "worst-case(norm=linf, eps=8/255, attacks=square, queries=5000)"
    for name in ("apgd-ce", "apgd-dlr", "square", "worst-case"):
        cls = type(get_attack(name))
        assert cls.paper.startswith("https://arxiv.org/abs/") and cls.paper in cls.__doc__
        assert "Shape:" in cls.__doc__ and "Examples::" in cls.__doc__


@pytest.mark.parametrize("name, params, message", [
    ("apgd-ce", {"norm": "l1"}, "norm must be linf or l2"),
    ("apgd-ce", {"eps": 8}, "at most 1"),
    ("apgd-ce", {"restarts": 0}, "restarts"),
    ("apgd-dlr", {"targets": 0}, "targets"),
    ("apgd-ce", {"subset": 0}, "subset"),
    ("apgd-ce", {"rho": 2}, "rho"),
    ("square", {"queries": 0}, "queries"),
    ("square", {"p_init": 1.5}, "p_init"),
    ("worst-case", {"attacks": "apgd-ce+fab"}, "cannot run 'fab'"),
    ("worst-case", {"attacks": "square+square"}, "twice"),
    ("pgd-linf", {"eot": 0}, "eot"),
])
def test_bad_configuration_is_one_sentence(name, params, message):
    with pytest.raises(RobustMMError, match=message):
        get_attack(name, **params)


def test_worst_case_components_use_their_own_keys():
    attack = WorstCase(norm="linf", eps=4 / 255, attacks=("apgd-ce", "square"), steps=7, restarts=2, queries=33)
    assert [c.key() for c in attack.components()] == [
        "apgd-ce(norm=linf, eps=4/255, steps=7, restarts=2)", "square(norm=linf, eps=4/255, queries=33)"]
    example = Example("x", None, "q", ("a",), Task.VQA)
    assert attack.example_seeds(AttackBatch([example], torch.zeros(1, 3, 4, 4), ["q"], torch.zeros(1, dtype=torch.long))) != \
        attack.components()[0].example_seeds(AttackBatch([example], torch.zeros(1, 3, 4, 4), ["q"], torch.zeros(1, dtype=torch.long)))


def test_gpu_and_cpu_presets():
    from robustmm.attacks.presets import load_preset

    gpu = {a.key() for a in load_preset("gpu")}
    assert "worst-case(norm=linf, eps=8/255, attacks=apgd-ce+apgd-dlr+square, steps=100, restarts=5, queries=5000)" in gpu
    assert {"fgsm(eps=8/255)", "noise-linf(eps=8/255)", "apgd-ce(norm=linf, eps=8/255, steps=10, restarts=1)"} <= gpu
    cpu = load_preset("cpu-checks")
    worst = [a for a in cpu if a.name == "worst-case"][0]
    assert worst.config.queries == 1000 and worst.config.steps == 100
    apgd_ce = [a.config for a in cpu if a.name == "apgd-ce"]
    assert {(c.steps, c.restarts) for c in apgd_ce} == {(10, 1), (100, 1), (100, 5)}
    assert all(c.subset <= worst.config.subset < 1 for c in apgd_ce), "the convergence runs lie inside the ensemble's subset"


def test_the_runner_gives_the_same_outcomes_at_batch_sizes_1_and_6():
    """Through the runner on the default easy-VE pair: the same examples succeed for batch sizes 1 and 6."""
    from robustmm.data import load_dataset
    from robustmm.evaluate import evaluate
    from robustmm.models.pair import load_pair

    pair = load_pair("default", task="ve", device="cpu")
    dataset = load_dataset("easy-ve", split="test", limit=6, seed=11)
    attacks = [get_attack("apgd-ce", steps=3), get_attack("square", queries=15), get_attack("worst-case", steps=2, queries=10)]
    outcomes = []
    for batch_size in (1, 6):
        records = evaluate(pair, dataset, attacks, batch_size=batch_size, seed=0).records
        outcomes.append(sorted((r.member, r.attack_key, r.example_id, r.status.value, r.adv_prediction, r.queries) for r in records))
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 2 * 3 * 6
