"""Which blob keys circlet writes: the layout of the blob store (see core/blobs.py). Pure.

    artifacts/<build_id>/<node_index>/<artifact path>        one blob per stored file
    caches/<project_id>/<encoded key>/@meta.json             a saved cache: its commit record
    caches/<project_id>/<encoded key>/@parts/<saver>/<n>.tar its tar archives, one per cached path
    workspaces/<workflow>/<build_id>/<step>-<node>.tar       a persisted workspace layer
    workspaces/<workflow>/<build_id>/<step>-<node>.json      ... its record, written after it

A cache key is percent-encoded (every byte but letters, digits and `_-~`) so that any text is
one safe segment and a key prefix encodes to a string prefix of the key (restore_cache's prefix
matching is then a blob `list`). Encoded keys are cut into segments of 200 characters to stay
within file-name limits; `@` never occurs in an encoded key, which keeps `@meta.json` and
`@parts` apart from it.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from circlet.core.blobs import check_key

ARTIFACTS = "artifacts"
CACHES = "caches"
WORKSPACES = "workspaces"
CACHE_META = "@meta.json"
CACHE_PARTS = "@parts"
CHUNK = 200
NO_WORKFLOW = "build-"  # + build id: the workspace of a job run outside any workflow


# ---------------------------------------------------------------- artifacts


def artifacts_prefix(build_id: int) -> str:
    return f"{ARTIFACTS}/{build_id}/"


def artifact_key(build_id: int, node_index: int, path: str) -> str:
    """InvalidBlobKey when `path` cannot be part of a key (empty, `..`, too long)."""
    return check_key(f"{ARTIFACTS}/{build_id}/{node_index}/{path}")


def parse_artifact_key(key: str) -> tuple[int, str] | None:
    """(node_index, path) of an artifact key, or None when the key is not one."""
    parts = key.split("/", 3)
    if len(parts) != 4 or parts[0] != ARTIFACTS or not parts[2].isdigit():
        return None
    return int(parts[2]), parts[3]


# ---------------------------------------------------------------- caches


def encode_cache_key(key: str) -> str:
    """The cache key as it appears in blob keys (see the module docstring). Each character maps
    to a fixed text (dots too, so no segment is `.` or `..`): a key's prefix encodes to a prefix."""
    encoded = quote(key, safe="").replace(".", "%2E")
    return "/".join(encoded[i : i + CHUNK] for i in range(0, len(encoded), CHUNK))


def decode_cache_key(encoded: str) -> str:
    return unquote(encoded.replace("/", ""))


def caches_prefix(project_id: int) -> str:
    return f"{CACHES}/{project_id}/"


def cache_search_prefix(project_id: int, key_prefix: str) -> str:
    """What to `list` to find the caches whose key starts with `key_prefix`."""
    return caches_prefix(project_id) + encode_cache_key(key_prefix)


def cache_meta_key(project_id: int, key: str) -> str:
    return check_key(f"{caches_prefix(project_id)}{encode_cache_key(key)}/{CACHE_META}")


def cache_parts_prefix(project_id: int, key: str, saver: str) -> str:
    """Where one saver (`<build_id>-<node>`) puts the archives of a cache it saves."""
    return check_key(f"{caches_prefix(project_id)}{encode_cache_key(key)}/{CACHE_PARTS}/{saver}/x")[:-1]


def cache_part_key(project_id: int, key: str, saver: str, number: int) -> str:
    return check_key(f"{cache_parts_prefix(project_id, key, saver)}{number}.tar")


def parse_cache_meta_key(project_id: int, blob_key: str) -> str | None:
    """The cache key whose commit record `blob_key` is, or None when it is not one."""
    head, tail = caches_prefix(project_id), "/" + CACHE_META
    if not (blob_key.startswith(head) and blob_key.endswith(tail)):
        return None
    encoded = blob_key[len(head) : -len(tail)]
    if "@" in encoded:  # a part, or something else below a key
        return None
    return decode_cache_key(encoded)


# ---------------------------------------------------------------- workspaces


def workspace_id(workflow_id: str | None, build_id: int) -> str:
    """The workspace a job persists to: its workflow's, or its own when it runs alone."""
    return workflow_id if workflow_id else f"{NO_WORKFLOW}{build_id}"


def layers_prefix(workspace: str, build_id: int) -> str:
    return check_key(f"{WORKSPACES}/{workspace}/{build_id}/x")[:-1]


def layer_keys(workspace: str, build_id: int, step: int, node_index: int) -> tuple[str, str]:
    """(archive key, record key) of the layer one persist_to_workspace step makes."""
    base = f"{layers_prefix(workspace, build_id)}{step:05d}-{node_index}"
    return check_key(base + ".tar"), check_key(base + ".json")


def is_layer_record(key: str) -> bool:
    return key.startswith(WORKSPACES + "/") and key.endswith(".json")
