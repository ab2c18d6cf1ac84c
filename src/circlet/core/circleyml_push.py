"""circle.yml's rules of pushes (config.md 12.1): `general.branches` and tag pushes decide
whether a push builds at all, before any plan is made. Pure; pipeline_trigger.py asks them.

API triggers build any branch or tag; these rules are for pushes (webhooks) only.
"""

from __future__ import annotations

from circlet.core.circleyml import Problems, branch_lists, load, section_matches
from circlet.core.errors import ConfigError
from circlet.core.workflow import branch_rule_verdict


def branch_verdict(text: str, branch: str) -> str | None:
    """`general.branches` (config.md 12.1) for a push of `branch`: None when it builds, else the
    build's `dont_build`, as the 2.0 job-level rule (config.Config's branch_verdict):
    `branch-blacklisted` (an `ignore` pattern matches; with `ignore` given, `only` is not
    looked at) or `branch-not-whitelisted` (no `only` pattern matches). Pushes only: API
    triggers build any branch. ConfigError for a circle.yml that cannot be read."""
    data, root = load(text)
    general = data.get("general")
    if not isinstance(general, dict) or general.get("branches") is None:
        return None
    problems = Problems(root)
    lists = branch_lists(general["branches"], problems)
    if problems.items:
        raise ConfigError(problems.items)
    return branch_rule_verdict(lists, branch)


def builds_tag(text: str, tag: str, username: str | None) -> bool:
    """Whether a push of `tag` builds (config.md 12.1): only when some `deployment` section's
    `tag` matches it (a name, a /regex/ full match, or a list), among the sections whose `owner`
    (if any) is `username`, the project's. ConfigError for a circle.yml that cannot be read."""
    data, _root = load(text)
    deployment = data.get("deployment")
    if not isinstance(deployment, dict):
        return False
    return any(isinstance(s, dict) and section_matches(s, None, tag, username) for s in deployment.values())
