"""The environment a job gets (config.md section 4), computed purely from the build's facts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from circlet.core.model import Build, Project

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_env_name(name: str) -> bool:
    return ENV_NAME.fullmatch(name) is not None


def parameter_text(value: Any) -> str:
    """A build parameter as environment text: strings as-is, everything else its JSON text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value)


def build_url(base_url: str, project: Project, build_num: int) -> str:
    """The web URL of a build; the API's `build_url` and the job's CIRCLE_BUILD_URL are this string."""
    return f"{base_url.rstrip('/')}/{project.slug}/{build_num}"


def builtin_environment(
    *,
    project: Project,
    build: Build,
    job_name: str,
    base_url: str,
    working_directory: str,
    previous_build_num: int | None = None,
    username: str | None = None,
) -> dict[str, str]:
    """CI, CIRCLECI and the CIRCLE_* variables every job gets (node variables are the runner's)."""
    env = {
        "CI": "true",
        "CIRCLECI": "true",
        "CIRCLE_SHA1": build.vcs_revision or "",
        "CIRCLE_BUILD_NUM": str(build.build_num),
        "CIRCLE_BUILD_URL": build_url(base_url, project, build.build_num),
        "CIRCLE_JOB": job_name,
        "CIRCLE_STAGE": job_name,
        "CIRCLE_PROJECT_USERNAME": project.username,
        "CIRCLE_PROJECT_REPONAME": project.reponame,
        "CIRCLE_REPOSITORY_URL": project.repo_url,
        "CIRCLE_WORKING_DIRECTORY": working_directory,
    }
    if build.branch is not None:
        env["CIRCLE_BRANCH"] = build.branch
    if build.vcs_tag is not None:
        env["CIRCLE_TAG"] = build.vcs_tag
    if username:
        env["CIRCLE_USERNAME"] = username
    if previous_build_num is not None:
        env["CIRCLE_PREVIOUS_BUILD_NUM"] = str(previous_build_num)
    return env


def job_environment(
    *,
    build_parameters: Mapping[str, Any] | None,
    project_variables: Mapping[str, str],
    builtins: Mapping[str, str],
) -> dict[str, str]:
    """Merge the server-side layers, later winning: parameters < project variables < built-ins.

    The job's own `environment` and the steps' come on top in the runner.
    """
    env: dict[str, str] = {}
    for name, value in (build_parameters or {}).items():
        env[name] = parameter_text(value)
    env.update(project_variables)
    env.update(builtins)
    return env
