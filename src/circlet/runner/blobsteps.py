"""The steps that keep files in the blob store, by kind; JobRunner adds them to steps.HANDLERS."""

from __future__ import annotations

from circlet.core.plan import StepKind
from circlet.runner.artifacts import store_artifacts
from circlet.runner.cache import restore_cache, save_cache
from circlet.runner.steps import Handler
from circlet.runner.workspace_files import attach_workspace, persist_to_workspace

BLOB_HANDLERS: dict[StepKind, Handler] = {
    StepKind.STORE_ARTIFACTS: store_artifacts,
    StepKind.SAVE_CACHE: save_cache,
    StepKind.RESTORE_CACHE: restore_cache,
    StepKind.PERSIST_TO_WORKSPACE: persist_to_workspace,
    StepKind.ATTACH_WORKSPACE: attach_workspace,
}
