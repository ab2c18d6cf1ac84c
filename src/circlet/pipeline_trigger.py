"""Triggering a pipeline: read and compile the config, record the pipeline and its workflows,
start them (the engine's `advance`); `[ci skip]` and broken configs are recorded here too.
Used by pipelines.Workflows.trigger (docs/workflows.md).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from circlet.core import circleyml, circleyml_push
from circlet.core import config as config_mod
from circlet.core.compile import PipelineValues, compile_config, render_config
from circlet.core.errors import ConfigError, Problem
from circlet.core.model import Build, Lifecycle, Message, Outcome, Project, VcsType, Why
from circlet.core.pipeline import Pipeline, PipelineState, Workflow, WorkflowJob
from circlet.core.ports import Snapshot
from circlet.core.workflow import JobSpec, WorkflowSpec, ci_skip, select_jobs
from circlet.core.workflow_config import parse_workflows
from circlet.snapshots import build_snapshot

if TYPE_CHECKING:
    from circlet.pipelines import Workflows

log = logging.getLogger("circlet.pipelines")

CONFIG_PATH = ".circleci/config.yml"
DEFAULT_JOB = "build"
PUSHES = (Why.GITHUB, Why.BITBUCKET)


def _source(why: Why) -> str:
    """`pipeline.trigger_source` (config.md 7.8): webhook, api or scheduled_pipeline."""
    if why in PUSHES:
        return "webhook"
    return "scheduled_pipeline" if why is Why.SCHEDULE else "api"


@dataclass(frozen=True, kw_only=True)
class _Trigger:
    project: Project
    branch: str | None
    tag: str | None
    snap: Snapshot
    why: Why
    user_id: int | None


class PipelineTrigger:
    """The trigger side of one Workflows engine."""

    def __init__(self, engine: Workflows) -> None:
        self.engine = engine

    def trigger(
        self,
        project: Project,
        *,
        branch: str | None,
        tag: str | None,
        revision: str | None,
        parameters: dict[str, Any] | None,
        why: Why,
        user_id: int | None,
        only_workflow: str | None = None,
    ) -> Build | None:
        """Create a pipeline and start its workflows; the first build made, or None when nothing
        matched the branch or tag. See Circlet.trigger_pipeline for the contract. `only_workflow`
        (scheduler.py) runs that scheduled workflow alone, and nothing when the config at the
        commit no longer has it."""
        c = self.engine.circlet
        push = why in PUSHES
        build_why = (Why.BITBUCKET if project.vcs_type is VcsType.BITBUCKET else Why.GITHUB) if push else why
        snap = build_snapshot(c.source, project, branch=branch, tag=tag, revision=revision, path=CONFIG_PATH)
        t = _Trigger(project=project, branch=branch, tag=tag, snap=snap, why=build_why, user_id=user_id)
        if push and ci_skip(snap.commit.subject, snap.commit.body):
            return self._skipped(t)
        text = snap.file_text
        config = None
        if text is not None:
            try:
                config = config_mod.load_config(text, filename=CONFIG_PATH)
            except ConfigError as exc:
                return self._errored(t, None, exc.problems)
        if config is None or (config.version == "2" and config.workflows is None):
            if only_workflow is not None:
                return None  # a scheduled workflow the commit's config no longer has
            if push and config is not None and branch is not None and tag is None:
                try:  # config.md 5.5: job-level `branches`, push-like triggers only
                    verdict = config_mod.branch_verdict(config, DEFAULT_JOB, branch)
                except ConfigError as exc:
                    return self._errored(t, None, exc.problems)
                if verdict is not None:
                    return self._skipped(t, reason=verdict, job_name=DEFAULT_JOB)
            if push and config is None:
                build_it, skipped = self._circle_yml_push(t)
                if not build_it:
                    return skipped
            # no config (inference), or a 2.0 config without workflows: its `build` job, as before
            return c.trigger(project, branch=branch, tag=tag, pin=snap.sha, why=build_why, user_id=user_id)
        pipeline = self.engine.store.create_pipeline(
            Pipeline(
                id=str(uuid.uuid4()),
                project_id=project.id or 0,
                branch=branch,
                tag=tag,
                revision=snap.sha,
                trigger_source=_source(build_why),
                why=build_why.value,
                parameters=dict(parameters or {}),
                config_text=text,
                user_id=user_id,
                created_at=c.clock(),
            )
        )
        try:
            specs, compiled_text = self._compile(project, pipeline, config, parameters)
        except ConfigError as exc:
            return self._errored(t, pipeline, exc.problems)
        pipeline = replace(pipeline, compiled_config=compiled_text)
        if len(self.engine.commits) > 64:
            self.engine.commits.clear()
        self.engine.commits[pipeline.id] = snap.commit
        self.engine.store.save_pipeline(pipeline)
        first: Build | None = None
        for spec in specs:
            if only_workflow is not None:  # a scheduled run: that workflow alone (config.md 5.6)
                if spec.name != only_workflow or not spec.scheduled:
                    continue
                spec = replace(spec, scheduled=False)
            jobs = select_jobs(spec, branch=branch, tag=tag)
            if not jobs:
                continue
            workflow = Workflow(
                id=str(uuid.uuid4()),
                pipeline_id=pipeline.id,
                project_id=project.id or 0,
                name=spec.name,
                created_at=c.clock(),
            )
            rows = [
                WorkflowJob(
                    id=str(uuid.uuid4()),
                    workflow_id=workflow.id,
                    position=i,
                    name=job.name,
                    type=job.type,
                    requires=job.requires,
                    contexts=job.contexts,
                )
                for i, job in enumerate(jobs)
            ]
            self.engine.store.add_workflow(workflow, rows)
            log.info(
                "event=workflow_created project=%s workflow=%s id=%s", project.slug, spec.name, workflow.id
            )
            made = self.engine.advance(workflow.id)
            first = first or (made[0] if made else None)
        log.info(
            "event=pipeline_created project=%s number=%s id=%s", project.slug, pipeline.number, pipeline.id
        )
        return first

    def _compile(
        self,
        project: Project,
        pipeline: Pipeline,
        config: config_mod.Config,
        parameters: dict[str, Any] | None,
    ) -> tuple[tuple[WorkflowSpec, ...], str]:
        if config.version != "2.1":
            if parameters:
                raise ConfigError(
                    [Problem(message="pipeline parameters need a version 2.1 config", path="version")]
                )
            return parse_workflows(config), config.text
        values = PipelineValues(
            id=pipeline.id,
            number=pipeline.number,
            project_git_url=project.vcs_url,
            project_type=project.vcs_type.value,
            git_tag=pipeline.tag or "",
            git_branch=pipeline.branch or "",
            git_branch_is_default=(pipeline.branch == project.default_branch) if pipeline.branch else None,
            git_revision=pipeline.revision,
            trigger_source=pipeline.trigger_source,
        )
        compiled = compile_config(config, pipeline=values, parameters=parameters, orbs=self._orbs())
        text = render_config(compiled)
        if compiled.workflows is not None:
            specs = parse_workflows(compiled)
        elif "build" in compiled.jobs:  # no workflows: the `build` job, in a workflow of its own
            specs = (WorkflowSpec(name="workflow", jobs=(JobSpec(name="build"),)),)
        else:
            raise ConfigError(
                [Problem(message="a config without `workflows` needs a job named `build`", path="jobs")]
            )
        self.engine.configs[pipeline.id] = config_mod.load_config(text, filename=CONFIG_PATH)
        return specs, text

    def _orbs(self) -> dict[str, str]:
        folder = self.engine.orbs_dir
        if folder is None or not folder.is_dir():
            return {}
        return {f"{p.parent.name}/{p.stem}": p.read_text() for p in sorted(folder.glob("*/*@*.yml"))}

    def _circle_yml_push(self, t: _Trigger) -> tuple[bool, Build | None]:
        """config.md 12.1 for a push of a commit whose config is circle.yml: (whether it builds,
        the not-run build recorded when `general.branches` leaves the branch out). A tag push
        builds only when a `deployment` section's `tag` matches (and its `owner`, if any, is the
        project's username), so never without a circle.yml; otherwise nothing is recorded,
        as for a 2.0 config whose workflows have no tag filters. A circle.yml that cannot be read
        builds: the build then says what is wrong."""
        c = self.engine.circlet
        text = c.source.read_file(t.project, t.snap.sha, circleyml.PATH)
        if text is None:  # inference alone: no deployment section, so a tag push builds nothing
            return t.tag is None, None
        try:
            if t.tag is not None:
                return circleyml_push.builds_tag(text, t.tag, t.project.username), None
            verdict = circleyml_push.branch_verdict(text, t.branch) if t.branch is not None else None
        except ConfigError:
            return True, None
        if verdict is None:
            return True, None
        return False, self._skipped(t, reason=verdict, job_name=DEFAULT_JOB, circle_yml=text)

    def _skipped(
        self,
        t: _Trigger,
        *,
        reason: str = "ci-skip",
        job_name: str | None = None,
        circle_yml: str | None = None,
    ) -> Build:
        """A push that builds nothing on purpose: a pipeline and a build that did not run, whose
        `dont_build` is `reason` (`[ci skip]`: config.md 6; job-level `branches`: 5.5; circle.yml's
        `general.branches`: 12.1). The build keeps the commit's config as a run one would: its
        .circleci/config.yml, else its circle.yml (`circle_yml` when the caller read it already)."""
        c = self.engine.circlet
        config_text = t.snap.file_text
        if config_text is None:
            config_text = circle_yml
            if config_text is None:
                config_text = c.source.read_file(t.project, t.snap.sha, circleyml.PATH)
        pipeline = self.engine.store.create_pipeline(
            Pipeline(
                id=str(uuid.uuid4()),
                project_id=t.project.id or 0,
                branch=t.branch,
                tag=t.tag,
                revision=t.snap.sha,
                trigger_source="webhook",
                why=t.why.value,
                config_text=t.snap.file_text,
                state=PipelineState.NOT_RUN,
                user_id=t.user_id,
                created_at=c.clock(),
            )
        )
        skipped = self._build_of(t, lifecycle=Lifecycle.NOT_RUN, dont_build=reason)
        build = c.store.create_build(
            replace(skipped, job_name=job_name, config_text=config_text, extra={"pipeline_id": pipeline.id})
        )
        c._touch(build.project_id)
        log.info(
            "event=pipeline_skipped project=%s build_num=%s reason=%s",
            t.project.slug,
            build.build_num,
            reason,
        )
        return build

    def _errored(self, t: _Trigger, pipeline: Pipeline | None, problems: tuple[Problem, ...]) -> Build:
        """A config that cannot run: the pipeline errors, and one finished failed build says why."""
        c = self.engine.circlet
        texts = tuple(str(p) for p in problems)
        if pipeline is not None:
            self.engine.store.save_pipeline(replace(pipeline, state=PipelineState.ERRORED, errors=texts))
        now = c.clock()
        build = c.store.create_build(
            replace(
                self._build_of(t, lifecycle=Lifecycle.FINISHED),
                outcome=Outcome.FAILED,
                start_time=now,
                stop_time=now,
                messages=tuple(Message(type="error", message=m, reason="config") for m in texts),
                extra={"pipeline_id": pipeline.id} if pipeline else {},
            )
        )
        c._touch(build.project_id)
        c._notify(build.id or 0)
        log.info("event=pipeline_errored project=%s build_num=%s", t.project.slug, build.build_num)
        return build

    def _build_of(self, t: _Trigger, *, lifecycle: Lifecycle, dont_build: str | None = None) -> Build:
        return Build(
            project_id=t.project.id or 0,
            branch=t.branch,
            vcs_tag=t.tag,
            vcs_revision=t.snap.sha,
            commit=t.snap.commit,
            why=t.why,
            dont_build=dont_build,
            lifecycle=lifecycle,
            usage_queued_at=self.engine.circlet.clock(),
            user_id=t.user_id,
            config_text=t.snap.file_text,
        )
