"""How long artifacts, caches and workspace layers are kept, and which blobs have expired. Pure.

CircleCI keeps artifacts 30 days and caches and workspaces 15 days; circlet does the same by
default (CIRCLET_ARTIFACT_DAYS, CIRCLET_CACHE_DAYS, CIRCLET_WORKSPACE_DAYS; 0 keeps them for
ever). Expiry goes by the units a user sees, never half of one (blobkeys.py has the layout):

- a build's artifacts (`artifacts/<build_id>/`) go together, once the newest is older than
  the limit;
- a cache (`caches/<project>/<key>/@meta.json` and its `@parts/`) goes once it was saved longer
  ago than the limit (its meta's time: a cache is never extended by being restored, as on
  CircleCI). Parts of a key no saved cache has (a save that died half-way) go after a day;
- a workflow's workspace layers (`workspaces/<workflow>/`) go together, once the newest is
  older than the limit.

An encoded cache key is cut into 200-character segments, so one cache's folder can hold
another, longer key's: such a folder is only removed when everything under it has expired.
Blobs of no known kind are never chosen, and a fresh one inside a cache folder keeps the folder.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from circlet.core.blobkeys import ARTIFACTS, CACHE_META, CACHE_PARTS, CACHES, WORKSPACES
from circlet.core.blobs import BlobInfo

ORPHAN_PARTS_AFTER = timedelta(days=1)  # a cache save takes minutes, not a day


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """Days each kind of blob is kept; 0 (or less) keeps it for ever."""

    artifact_days: float = 30.0
    cache_days: float = 15.0
    workspace_days: float = 15.0

    def cutoff(self, days: float, now: datetime) -> datetime | None:
        return now - timedelta(days=days) if days > 0 else None


@dataclass(frozen=True, kw_only=True)
class Expired:
    """What to delete: whole-segment prefixes (each ends with "/", for BlobStore.delete_prefix),
    and how many blobs and bytes they hold."""

    prefixes: tuple[str, ...]
    blobs: int
    bytes: int


def expired(blobs: Iterable[BlobInfo], now: datetime, policy: RetentionPolicy) -> Expired:
    """The prefixes whose blobs have all expired under `policy` at `now` (module docstring)."""
    groups: dict[str, list[BlobInfo]] = {}
    caches: dict[str, BlobInfo] = {}  # cache folder -> its meta
    every = sorted(blobs, key=lambda info: info.key)  # (of every kind: a folder goes whole)
    keys = [info.key for info in every]
    for info in every:
        group = _group(info.key)
        if group is not None:
            groups.setdefault(group, []).append(info)
        if info.key.startswith(CACHES + "/") and info.key.endswith("/" + CACHE_META):
            caches[info.key[: -len(CACHE_META)]] = info
    chosen: list[str] = []
    artifacts = policy.cutoff(policy.artifact_days, now)
    workspaces = policy.cutoff(policy.workspace_days, now)
    cache_cutoff = policy.cutoff(policy.cache_days, now)
    for prefix, members in groups.items():
        newest = max(m.created_at for m in members)
        if prefix.startswith(ARTIFACTS + "/"):
            if artifacts is not None and newest < artifacts:
                chosen.append(prefix)
        elif prefix.startswith(WORKSPACES + "/"):
            if workspaces is not None and newest < workspaces:
                chosen.append(prefix)
        else:  # the parts of one saver of one cache: `<cache folder>@parts/<saver>/`
            folder = prefix[: prefix.index(CACHE_PARTS)]
            meta = caches.get(folder)
            if meta is None and newest < now - ORPHAN_PARTS_AFTER:
                chosen.append(prefix)  # no cache names them (a meta that expired goes below)
    if cache_cutoff is not None:
        for folder, meta in caches.items():
            # Everything in the folder must have expired: normally the cache's own parts (saved
            # before its meta), but a longer key can live inside, maybe being saved right now.
            if meta.created_at < cache_cutoff and all(
                i.created_at < cache_cutoff for i in _under(every, keys, folder)
            ):
                chosen.append(folder)
    final = _outermost(chosen)
    inside = [info for prefix in final for info in _under(every, keys, prefix)]
    return Expired(prefixes=tuple(final), blobs=len(inside), bytes=sum(i.size for i in inside))


def _under(infos: list[BlobInfo], keys: list[str], prefix: str) -> list[BlobInfo]:
    """The blobs whose key starts with `prefix` (`infos` sorted by key, `keys` their keys)."""
    start = bisect.bisect_left(keys, prefix)
    end = start
    while end < len(keys) and keys[end].startswith(prefix):
        end += 1
    return infos[start:end]


def _group(key: str) -> str | None:
    """The unit a blob expires with (a whole-segment prefix), or None (a cache meta, or a blob
    of no known kind)."""
    parts = key.split("/")
    if parts[0] in (ARTIFACTS, WORKSPACES) and len(parts) >= 3:
        return f"{parts[0]}/{parts[1]}/"
    if parts[0] == CACHES and CACHE_PARTS in parts:
        at = parts.index(CACHE_PARTS)
        if at >= 3 and len(parts) > at + 2:  # caches/<project>/<key...>/@parts/<saver>/<n>.tar
            return "/".join(parts[: at + 2]) + "/"
    return None


def _outermost(prefixes: list[str]) -> list[str]:
    """The prefixes without those inside another one of them, sorted."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes)):  # (the prefixes inside one follow it in this order)
        if not kept or not prefix.startswith(kept[-1]):
            kept.append(prefix)
    return kept
