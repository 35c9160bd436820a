"""Attacks: ``get_attack(name, **params)``, ``list_attacks()``, ``parse_attack_spec("pgd-linf:eps=8/255")``,
``load_preset("paper")`` / ``list_presets()`` (TOML files in ``attacks/``)."""

from robustmm.attacks.base import (
    Attack,
    AttackBatch,
    AttackResult,
    attack_class,
    get_attack,
    list_attacks,
    parse_attack_spec,
    parse_number,
    register_attack,
)
from robustmm.attacks.presets import list_presets, load_preset

__all__ = ["Attack", "AttackBatch", "AttackResult", "attack_class", "get_attack", "list_attacks",
           "list_presets", "load_preset", "parse_attack_spec", "parse_number", "register_attack"]
