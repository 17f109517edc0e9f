"""The structure's rules, checked on the source: one owner of job state, pages that call
domain code rather than routers, a worker made of small parts."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "batch_server"
STATE_TABLES = {"BatchRow", "WorkUnitRow", "WorkerRow"}
STATE_WRITERS = {"jobs/lifecycle.py", "jobs/manager.py", "jobs/queue.py"}


def _modules() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(SRC)): ast.parse(p.read_text())
        for p in SRC.rglob("*.py")
        if "migrations" not in p.parts
    }


def _writes_state(tree: ast.Module) -> bool:
    """``insert(X)``, ``update(X)``, ``delete(X)``, an upsert of X, or a new ``X(...)``
    row, for X a batch, unit or worker row."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name in STATE_TABLES:  # a new row object
            return True
        args = [a.id for a in node.args if isinstance(a, ast.Name)]
        if name in ("insert", "update", "delete", "upsert") and STATE_TABLES & set(args):
            return True
    return False


def test_only_the_job_manager_writes_job_state() -> None:
    writers = {name for name, tree in _modules().items() if _writes_state(tree)}
    assert writers == STATE_WRITERS


def test_pages_import_no_router() -> None:
    routers = {
        name.removesuffix(".py").replace("/", ".")
        for name, tree in _modules().items()
        if name.startswith("api/")
        and any(
            isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "router" for t in n.targets)
            for n in tree.body
        )
    }
    for name, tree in _modules().items():
        if not name.startswith("web/"):
            continue
        imported = {
            n.module.removeprefix("batch_server.")
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not imported & routers, name


def test_worker_parts_are_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (SRC / "worker").glob("*.py")}
    assert sizes and max(sizes.values()) <= 200, sizes
