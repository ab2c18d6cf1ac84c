"""Run one build here: its nodes, their steps, the when-rules, cancel, and the outcome.

The JobRunner reports everything through the RunReporter port and nothing else, so the same code
runs in the server's threads (executors/local.py) and in a worker elsewhere. It is synchronous:
one thread per node (when parallelism > 1), one more per background step; each step's output is
pumped by the thread that runs it (process.py). Threads keep cancel simple: a cancel only flags
the run and signals process groups; every thread notices on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from circlet.agent import HALT_FILE_ENV
from circlet.core.blobs import BlobStore
from circlet.core.model import Action, ActionStatus, Message, Outcome
from circlet.core.phases import (
    ARTIFACTS_ENV,
    TEST_REPORTS_ENV,
    Phase,
    expand_step_paths,
    halts_on_failure,
    no_tests,
)
from circlet.core.plan import PlannedStep, StepKind, When
from circlet.core.ports import CheckoutSource, RunReporter, RunRequest
from circlet.core.status import outcome_from_actions
from circlet.runner.blobsteps import BLOB_HANDLERS
from circlet.runner.gate import DeployGate, deployment_start
from circlet.runner.process import CANCEL_GRACE, KILL_GRACE, record_group
from circlet.runner.steps import (
    HANDLERS,
    ActionLog,
    Handler,
    NodeProcesses,
    StepContext,
    StepResult,
    bash_command,
)
from circlet.runner.workspace import (
    NodeWorkspace,
    build_dir,
    expand_path,
    host_environment,
    remove_tree,
    runtime_base,
)

log = logging.getLogger("circlet.runner")

SPIN_UP_NAME = "Spin up Environment"
FIRST_STEP = 101  # CircleCI 2.0 numbering: 0 is the set-up step, config steps start at 101
# These run after a failure whatever their `when` says (config.md 3.2).
ALWAYS_KINDS = frozenset({StepKind.STORE_ARTIFACTS, StepKind.STORE_TEST_RESULTS})
# A foreground action ending so makes later on_success steps skip and on_fail steps run.
FAILING = frozenset({ActionStatus.FAILED, ActionStatus.TIMEDOUT})
# ... and one ending so stops the node: nothing more runs, not even `always` steps.
STOPPING = frozenset({ActionStatus.CANCELED, ActionStatus.INFRASTRUCTURE_FAIL})


def now() -> datetime:
    return datetime.now(UTC)


def should_run(step: PlannedStep, job_failed: bool) -> bool:
    """The when-rule of config.md 3.2."""
    when = When.ALWAYS if step.kind in ALWAYS_KINDS else step.when
    if when is When.ALWAYS:
        return True
    return job_failed if when is When.ON_FAIL else not job_failed


class _Node:
    """One node (container) of the build: its directories, environment and failure flag."""

    def __init__(
        self,
        request: RunRequest,
        index: int,
        root: Path,
        runtime: Path | None,
        on_group: Callable[[int], None] | None = None,
    ) -> None:
        self.index = index
        self.workspace = NodeWorkspace(
            root=root / f"node{index}", runtime=runtime / f"node{index}" if runtime else None
        )
        self.processes = NodeProcesses(on_group)
        self.job_failed = False
        self.statuses: list[ActionStatus] = []  # foreground actions' final statuses
        self.background: list[threading.Thread] = []
        ws = self.workspace
        # Precedence (config.md 4): the server's PATH etc. < request environment (parameters <
        # project variables < built-ins, merged by the service) + the node's own built-ins <
        # job environment < step environment. Values are never interpolated.
        # DECISION: HOME is <workspace>/<build>/node<i>/home, not the server's: with the
        # server's HOME, `~/project` (the default working directory) would be one directory
        # shared by every build, and builds would write into the server user's dotfiles.
        env = host_environment(ws.home)
        env.update(request.environment)
        env.update(
            CIRCLE_NODE_INDEX=str(index),
            CIRCLE_NODE_TOTAL=str(max(1, request.parallelism)),
            BASH_ENV=str(ws.bash_env),
            CIRCLE_SHELL_ENV=str(ws.bash_env),
            CIRCLE_INTERNAL_TASK_DATA=str(ws.task_data),
        )
        if request.plan.config_version == "1.0":  # config.md 4: made empty by the spin-up step
            env.update({ARTIFACTS_ENV: str(ws.artifacts_1_0), TEST_REPORTS_ENV: str(ws.test_reports_1_0)})
        env.update(request.plan.environment)
        # The `circleci` command comes first whatever PATH the job set (CircleCI's is always there).
        env["PATH"] = f"{ws.bin}{os.pathsep}{env.get('PATH') or os.defpath}"
        env[HALT_FILE_ENV] = str(ws.halt_file)
        self.env = env
        home = Path(env.get("HOME") or ws.home)
        self.workdir = expand_path(request.plan.working_directory, home=home, base=home)


class JobRunner:
    """Runs one RunRequest on this host. Make one per build.

    `run` blocks until the build is over and never raises for build problems: it reports them
    (an unexpected error becomes an infrastructure_fail with a message). `cancel` may come from
    any thread, before or during `run`.
    """

    def __init__(
        self,
        *,
        workspace_root: Path,
        source: CheckoutSource,
        reporter: RunReporter,
        worker: str = "local",
        keep_workspace: bool = False,
        kill_grace: float = KILL_GRACE,
        groups_file: Path | None = None,
        blobs: BlobStore | None = None,
        node: int | None = None,
    ) -> None:
        """`groups_file`, when given, records every process group started (record_group), so
        that if this runner dies its steps can still be killed (kill_recorded_groups).
        `node`: run only that container of the build (a celery task per container: the reporter
        is told the node, and only the node's folder is removed); None: every container."""
        self.node = node
        self.workspace_root = Path(workspace_root)
        self.groups_file = groups_file
        self.blobs = blobs  # artifacts, caches, workspaces; without one those steps fail
        self.source = source
        self.reporter = reporter
        self.worker = worker
        self.keep_workspace = keep_workspace
        self.kill_grace = kill_grace
        self.handlers: dict[StepKind, Handler] = {**HANDLERS, **BLOB_HANDLERS}
        self._lock = threading.Lock()
        self._canceled = threading.Event()
        self._nodes: list[_Node] = []
        self._gate: DeployGate | None = None
        self._messages: list[Message] = []

    # ---------------------------------------------------------------- public

    def cancel(self) -> None:
        """Stop the build: running process groups get TERM now and KILL after 0.5 s, no further
        step starts (not even `always` ones) and the outcome is canceled. Returns at once."""
        with self._lock:
            self._canceled.set()
            nodes = list(self._nodes)
            gate = self._gate
        for node in nodes:
            node.processes.cancel()
        if gate is not None:
            gate.wake()

    def run(self, request: RunRequest) -> Outcome:
        """Run the build and report it; the outcome is also returned. Blocking."""
        build_id = request.build_id
        node = self.node
        started = (
            self.reporter.build_started(build_id, now(), self.worker)
            if node is None
            else self.reporter.build_started(build_id, now(), self.worker, node=node)
        )
        if not started:
            log.info("event=build_not_started build_id=%s reason=canceled", build_id)
            return Outcome.CANCELED
        root = build_dir(self.workspace_root, build_id)
        runtime: Path | None = None
        base = runtime_base()
        if base is not None:
            with contextlib.suppress(OSError):
                runtime = Path(tempfile.mkdtemp(prefix=f"circlet-build-{build_id}-", dir=base))
        outcome = Outcome.INFRASTRUCTURE_FAIL
        try:
            outcome = self._run_nodes(request, root, runtime)
        except Exception as exc:  # a bug or a broken reporter: the build must still end
            log.exception("event=runner_failed build_id=%s", build_id)
            self._message(f"circlet could not run this build: {type(exc).__name__}: {exc}")
        try:
            if node is None:
                self.reporter.build_finished(build_id, outcome, now(), tuple(self._messages))
            else:
                self.reporter.build_finished(build_id, outcome, now(), tuple(self._messages), node=node)
        finally:
            if runtime is not None:
                remove_tree(runtime)
            if not self.keep_workspace:
                remove_tree(root if node is None else root / f"node{node}")
                if node is not None:
                    with contextlib.suppress(OSError):
                        root.rmdir()  # the last container here removes the build's folder
        log.info("event=build_finished build_id=%s node=%s outcome=%s", build_id, node, outcome)
        return outcome

    # ---------------------------------------------------------------- nodes

    def _run_nodes(self, request: RunRequest, root: Path, runtime: Path | None) -> Outcome:
        nodes = [
            _Node(request, i, root, runtime, self._record_group if self.groups_file else None)
            for i in range(max(1, request.parallelism))
            if self.node is None or i == self.node
        ]
        # 1.0 deployment waits for every node (DeployGate). A runner of one container of the
        # build (`node` set: a celery task per container) cannot see the others: its node 0
        # deploys when its own steps passed, whatever the other containers do.
        gate: DeployGate | None = None
        if len(nodes) > 1 and deployment_start(request.plan) is not None:
            gate = DeployGate(len(nodes), self._canceled)
        with self._lock:
            self._nodes = nodes
            self._gate = gate
            canceled = self._canceled.is_set()
        if canceled:  # a cancel that came before the nodes existed
            for node in nodes:
                node.processes.cancel()
        crashed: list[BaseException] = []
        if len(nodes) == 1:
            self._run_node(request, nodes[0], crashed, gate)
        else:
            threads = [
                threading.Thread(
                    target=self._run_node,
                    args=(request, node, crashed, gate),
                    name=f"circlet-build-{request.build_id}-node{node.index}",
                )
                for node in nodes
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        statuses = [status for node in nodes for status in node.statuses]
        if crashed:
            statuses.append(ActionStatus.INFRASTRUCTURE_FAIL)
        if self._canceled.is_set():
            statuses.append(ActionStatus.CANCELED)
        return outcome_from_actions(statuses, no_tests=no_tests(request.plan))

    def _run_node(
        self, request: RunRequest, node: _Node, crashed: list[BaseException], gate: DeployGate | None
    ) -> None:
        try:
            returned = False
            try:
                self._node_steps(request, node, gate)
                returned = True
            finally:
                if gate is not None:  # for a node that ended before the deployment steps, or crashed
                    # (a halt, `circleci step halt`, ends a node successfully: not a failure)
                    stopped = not returned or any(s in FAILING or s in STOPPING for s in node.statuses)
                    gate.arrive(node.index, failed=node.job_failed or stopped)
                # The node's last step is done: stop background steps, then what steps left.
                node.processes.stop_background()
                for thread in node.background:
                    thread.join()
                node.processes.kill_leftovers(CANCEL_GRACE)
        except Exception as exc:
            log.exception("event=node_failed build_id=%s node=%s", request.build_id, node.index)
            self._message(f"circlet could not run node {node.index}: {type(exc).__name__}: {exc}")
            crashed.append(exc)

    def _node_steps(self, request: RunRequest, node: _Node, gate: DeployGate | None) -> None:
        if self._canceled.is_set():
            return
        spin_up = PlannedStep(kind=StepKind.NOOP, name=SPIN_UP_NAME, type="infrastructure", source="")
        status = self._action(request, node, 0, spin_up, self._spin_up)
        if status is not ActionStatus.SUCCESS:
            return
        halted = False  # 1.0: a failure outside `test` ran; only the store (teardown) steps follow
        deploy_at = deployment_start(request.plan) if gate is not None else None
        others_failed = False  # another node failed: 1.0 deployment steps take it as a failure
        for position, step in enumerate(request.plan.steps):
            if position == deploy_at and gate is not None:
                gate.arrive(node.index, failed=node.job_failed)
                if node.index == 0 and not node.job_failed:  # (failed: it deploys nothing anyway)
                    others_failed = gate.any_failed()
                    if others_failed:
                        log.info(
                            "event=deployment_skipped build_id=%s reason=another_node_failed",
                            request.build_id,
                        )
            if self._canceled.is_set():
                return
            if not step.parallel and node.index != 0:  # 1.0 commands of node 0 alone: no action
                continue
            failed = node.job_failed or (others_failed and step.type == Phase.DEPLOYMENT)
            if (halted and step.kind not in ALWAYS_KINDS) or not should_run(step, failed):
                continue
            number = FIRST_STEP + position
            handler = self.handlers[step.kind]
            if step.background:
                thread = threading.Thread(
                    target=self._action,
                    args=(request, node, number, step, handler),
                    name=f"circlet-build-{request.build_id}-step{number}-node{node.index}",
                )
                node.background.append(thread)
                thread.start()
                continue
            status = self._action(request, node, number, step, handler)
            if status in FAILING:
                node.job_failed = True
                halted = halted or halts_on_failure(request.plan, step)  # 1.0: outside `test`
            elif status in STOPPING:
                return
            if node.workspace.halt_file.exists():  # `circleci step halt`: no further step runs
                return

    # ---------------------------------------------------------------- actions

    def _action(
        self, request: RunRequest, node: _Node, number: int, step: PlannedStep, handler: Handler
    ) -> ActionStatus:
        """One action, recorded from start to finish around its handler."""
        build_id = request.build_id
        action = Action(
            step=number,
            index=node.index,
            name=step.name,
            type=step.type,
            source=step.source or None,
            bash_command=bash_command(step, request.plan),
            status=ActionStatus.RUNNING,
            start_time=now(),
            background=step.background,
            parallel=step.parallel,
        )
        self.reporter.action_started(build_id, action)
        output: ActionLog | None = None
        try:
            output = ActionLog(self.reporter.log_writer(build_id, number, node.index))
            context = StepContext(
                request=request,
                number=number,
                index=node.index,
                workspace=node.workspace,
                workdir=node.workdir,
                step=expand_step_paths(request.plan, step, node.env),
                env={**node.env, **step.environment},
                log=output,
                source=self.source,
                processes=node.processes,
                kill_grace=self.kill_grace,
                report_tests=lambda tests, problems: self.reporter.test_results(
                    build_id, node.index, tests, problems
                ),
                blobs=self.blobs,
            )
            result = handler(context)
        except Exception as exc:  # a bug, or the log store failing: the action still ends
            log.exception("event=step_crashed build_id=%s step=%s node=%s", build_id, number, node.index)
            text = f"circlet could not run step {step.name!r}: {type(exc).__name__}: {exc}"
            result = StepResult(status=ActionStatus.INFRASTRUCTURE_FAIL, message=text)
            if output is not None:
                with contextlib.suppress(Exception):
                    output.line(text)
        finally:
            if output is not None:
                try:
                    output.close()
                except Exception:
                    log.exception("event=log_close_failed build_id=%s step=%s", build_id, number)
        if self._canceled.is_set() and result.status is not ActionStatus.INFRASTRUCTURE_FAIL:
            result = StepResult(status=ActionStatus.CANCELED, exit_code=result.exit_code)
        if result.message:
            self._message(result.message)
        final = replace(
            action,
            status=result.status,
            exit_code=result.exit_code,
            end_time=now(),
            has_output=output is not None and output.size > 0,
        )
        self.reporter.action_finished(build_id, final)
        if not step.background:
            node.statuses.append(final.status)
        return final.status

    def _spin_up(self, ctx: StepContext) -> StepResult:
        """Step 0: make the node's directories and BASH_ENV file, and say where the job runs."""
        plan = ctx.request.plan
        image = f", image {plan.image}" if plan.image else ""
        ctx.log.line(f"Executor: {plan.executor_kind}{image} (resource class {plan.resource_class})")
        ctx.log.line("circlet runs this job on the host shell: the image is recorded, not pulled.")
        try:
            ctx.workspace.create(ctx.request.timings)
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            if plan.config_version == "1.0":
                ctx.workspace.artifacts_1_0.mkdir(parents=True, exist_ok=True)
                ctx.workspace.test_reports_1_0.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            text = f"Could not create the workspace {ctx.workspace.root}: {exc.strerror or exc}"
            ctx.log.line(text)
            return StepResult(status=ActionStatus.INFRASTRUCTURE_FAIL, message=text)
        ctx.log.line(f"Working directory: {ctx.workdir}")
        ctx.log.line(f"Node {ctx.index} of {ctx.env.get('CIRCLE_NODE_TOTAL', '1')}; HOME is {ctx.home}")
        ctx.log.line(f"BASH_ENV is {ctx.workspace.bash_env}")
        return StepResult(status=ActionStatus.SUCCESS)

    def _record_group(self, pgid: int) -> None:
        assert self.groups_file is not None
        with self._lock:
            record_group(self.groups_file, pgid)

    def _message(self, text: str) -> None:
        with self._lock:
            self._messages.append(Message(type="error", message=text))
