"""Attacks: ``get_attack(name, **params)``, ``list_attacks()``, ``parse_attack_spec("pgd-linf:eps=8/255")``."""

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

__all__ = ["Attack", "AttackBatch", "AttackResult", "attack_class", "get_attack", "list_attacks",
           "parse_attack_spec", "parse_number", "register_attack"]
