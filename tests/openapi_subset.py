"""Cut the schemas this server's tests need out of OpenAI's published OpenAPI document.

``tests/fixtures/openai_openapi_subset.json`` is this script's output: the named roots and
every schema they ``$ref``, copied unchanged, with the source (repository, path, commit,
date) in ``x-source``. To regenerate it from a checkout of the spec repository::

    git -C openai-openapi show COMMIT:openapi.json > /tmp/openapi.json
    python tests/openapi_subset.py /tmp/openapi.json --commit COMMIT --date YYYY-MM-DD
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPOSITORY = "https://github.com/openai/openai-openapi"
SPEC_PATH = "openapi.json"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openai_openapi_subset.json"
PREFIX = "#/components/schemas/"

# The objects the server returns for Files and Batches, and the bodies of batch output lines.
ROOTS = [
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    "Batch",
    "ListBatchesResponse",
    "CreateChatCompletionResponse",
    "CreateCompletionResponse",
    "Response",
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "CreateModerationResponse",
]


def refs(node: Any) -> set[str]:
    """The component schema names that ``node`` refers to, directly."""
    if isinstance(node, dict):
        ref = str(node.get("$ref", ""))
        found = {ref[len(PREFIX) :]} if ref.startswith(PREFIX) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def subset(spec: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The schemas named in ``roots`` and all they reach through ``$ref``, unchanged."""
    schemas = spec["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = schemas[name]
            todo.extend(sorted(refs(schemas[name]) - keep.keys()))
    return {k: keep[k] for k in sorted(keep)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="openapi.json of openai/openai-openapi")
    parser.add_argument("--commit", required=True, help="the spec repository's commit")
    parser.add_argument("--date", required=True, help="that commit's date (YYYY-MM-DD)")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    document = {
        "x-source": {
            "repository": REPOSITORY,
            "path": SPEC_PATH,
            "commit": args.commit,
            "date": args.date,
            "openapi": spec["openapi"],
            "info_version": spec["info"]["version"],
            "roots": ROOTS,
            "generated_by": "tests/openapi_subset.py",
        },
        "components": {"schemas": subset(spec, ROOTS)},
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"{args.out}: {len(document['components']['schemas'])} schemas")


if __name__ == "__main__":
    main()
