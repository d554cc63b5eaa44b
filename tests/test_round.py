"""The round's shared types live in one module that depends on no trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import fedlightning
from fedlightning.round import STREAM_CLIENT, derive_rng, derive_seed

PACKAGE = Path(fedlightning.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at run time or under TYPE_CHECKING."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_algorithms_and_executors_never_import_the_trainer() -> None:
    """No import circle: algorithms and executors speak fedlightning.round, not the trainer."""
    files = sorted((PACKAGE / "algorithms").rglob("*.py")) + sorted(
        (PACKAGE / "executors").rglob("*.py")
    )
    assert len(files) > 10
    offenders = [
        str(f.relative_to(PACKAGE)) for f in files if "fedlightning.trainer" in _imports(f)
    ]
    assert offenders == []
    assert "fedlightning.trainer" not in _imports(PACKAGE / "round.py")
    assert "fedlightning.trainer" not in _imports(PACKAGE / "runtime.py")


def test_seed_streams_are_stable_and_distinct() -> None:
    assert derive_seed(0, 1, 2, STREAM_CLIENT) == derive_seed(0, 1, 2, STREAM_CLIENT)
    assert derive_seed(0, 1, 2, STREAM_CLIENT) != derive_seed(0, 2, 1, STREAM_CLIENT)
    assert derive_seed(1, 1, 2) != derive_seed(0, 1, 2)
    assert 0 <= derive_seed(123, 4) < 2**63
    a, b = derive_rng(5, 1).random(3), derive_rng(5, 1).random(3)
    assert (a == b).all() and not (a == derive_rng(5, 2).random(3)).all()


def test_the_trainer_still_exports_the_round_types_users_imported() -> None:
    from fedlightning.algorithms import ClientContext, Reply
    from fedlightning.round import ClientContext as RoundContext
    from fedlightning.round import Reply as RoundReply
    from fedlightning.trainer import RoundPlan
    from fedlightning.trainer import derive_seed as trainer_seed

    assert ClientContext is RoundContext and Reply is RoundReply
    assert RoundPlan(1, None, False).epochs == 1 and trainer_seed is derive_seed
