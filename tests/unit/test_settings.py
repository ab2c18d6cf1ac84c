"""load_settings: defaults, precedence (environment > TOML > default), conversions and errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from circlet.settings import Settings, SettingsError, load_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and no XDG_DATA_HOME, so defaults never point at the real user's files."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def env_for(data: Path, **variables: str) -> dict[str, str]:
    return {"CIRCLET_DATA_DIR": str(data), **{f"CIRCLET_{k.upper()}": v for k, v in variables.items()}}


# ------------------------------------------------------------------ defaults


def test_defaults_live_in_the_xdg_data_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))  # the mapping given wins
    settings = load_settings({"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert settings.data_dir == tmp_path / "xdg" / "circlet"
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/xdg/circlet/circlet.db"
    assert settings.logs_dir == tmp_path / "xdg" / "circlet" / "logs"
    assert settings.mirrors_dir == tmp_path / "xdg" / "circlet" / "mirrors"
    assert settings.workspaces_dir == tmp_path / "xdg" / "circlet" / "workspaces"
    assert settings.blob_dir is None and settings.blobs_dir == tmp_path / "xdg" / "circlet" / "blobs"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.effective_base_url == "http://127.0.0.1:8080"
    assert (settings.executor, settings.runner) == ("local", "process")
    assert settings.slots == 0 and settings.effective_slots == (os.cpu_count() or 1)
    assert settings.keep_workspaces is False
    assert settings.orbs_dir is None
    assert settings.kill_grace == 3.0
    assert settings.log_level == "info"


def test_without_xdg_data_home_the_data_folder_is_under_home(home: Path) -> None:
    assert load_settings({}).data_dir == home / ".local" / "share" / "circlet"


def test_xdg_data_home_is_read_from_the_given_environment(home: Path, tmp_path: Path) -> None:
    assert load_settings({"XDG_DATA_HOME": str(tmp_path / "xdg")}).data_dir == tmp_path / "xdg" / "circlet"


def test_data_dir_expands_tilde(home: Path) -> None:
    assert load_settings({"CIRCLET_DATA_DIR": "~/ci"}).data_dir == home / "ci"


@pytest.mark.parametrize(
    ("variables", "base_url"),
    [
        pytest.param({}, "http://127.0.0.1:8080", id="default"),
        pytest.param({"host": "10.1.2.3", "port": "9000"}, "http://10.1.2.3:9000", id="host-and-port"),
        pytest.param({"host": "0.0.0.0"}, "http://127.0.0.1:8080", id="any-ipv4-means-loopback"),
        pytest.param({"host": "::"}, "http://127.0.0.1:8080", id="any-ipv6-means-loopback"),
        pytest.param(
            {"host": "0.0.0.0", "base_url": "https://ci.example.com/"},
            "https://ci.example.com",
            id="explicit-wins-without-trailing-slash",
        ),
    ],
)
def test_base_url(data: Path, variables: dict[str, str], base_url: str) -> None:
    assert load_settings(env_for(data, **variables)).effective_base_url == base_url


def test_explicit_database_url_and_slots(data: Path) -> None:
    settings = load_settings(env_for(data, database_url="postgresql://u@h/db", slots="3"))
    assert settings.effective_database_url == "postgresql://u@h/db"
    assert settings.effective_slots == 3


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("toml", "variables", "overrides", "port"),
    [
        pytest.param("", {}, {}, 8080, id="default"),
        pytest.param("port = 9000\n", {}, {}, 9000, id="toml-beats-default"),
        pytest.param("port = 9000\n", {"port": "9001"}, {}, 9001, id="env-beats-toml"),
        pytest.param("port = 9000\n", {"port": "9001"}, {"port": 9002}, 9002, id="override-beats-env"),
        pytest.param("port = 9000\n", {"port": "9001"}, {"port": None}, 9001, id="none-override-ignored"),
        pytest.param("PORT = 9000\n", {}, {}, 9000, id="toml-keys-are-case-insensitive"),
    ],
)
def test_precedence_in_the_data_folder_toml(
    data: Path, toml: str, variables: dict[str, str], overrides: dict[str, Any], port: int
) -> None:
    (data / "circlet.toml").write_text(toml)
    assert load_settings(env_for(data, **variables), **overrides).port == port


def test_toml_named_by_circlet_config(data: Path, tmp_path: Path) -> None:
    (data / "circlet.toml").write_text('host = "ignored"\n')
    config = tmp_path / "elsewhere.toml"
    config.write_text('host = "10.0.0.1"\nport = 9100\n')
    settings = load_settings(env_for(data, config=str(config)))
    assert (settings.host, settings.port) == ("10.0.0.1", 9100)


def test_circlet_config_naming_a_missing_file_is_an_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.toml"):
        load_settings(env_for(data, config=str(tmp_path / "nope.toml")))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("toml", "variables", "message"),
    [
        pytest.param("port = \n", {}, r"circlet\.toml", id="bad-toml-names-the-file"),
        pytest.param('colour = "blue"\n', {}, "unknown settings: colour", id="unknown-toml-key"),
        pytest.param('b = 1\na = "x"\n', {}, "unknown settings: a, b", id="unknown-keys-all-named-sorted"),
        pytest.param('port = "abc"\n', {}, "CIRCLET_PORT: 'abc' is not a valid int", id="bad-int-in-toml"),
        pytest.param("", {"port": "abc"}, "CIRCLET_PORT: 'abc' is not a valid int", id="bad-int-in-env"),
        pytest.param("", {"slots": "two"}, "CIRCLET_SLOTS", id="bad-slots"),
        pytest.param("", {"kill_grace": "soon"}, "CIRCLET_KILL_GRACE", id="bad-float"),
        pytest.param(
            "", {"executor": "bogus"}, "CIRCLET_EXECUTOR must be local or celery", id="bad-executor"
        ),
        pytest.param("", {"runner": "bogus"}, "CIRCLET_RUNNER must be process or thread", id="bad-runner"),
        pytest.param(
            "", {"executor": "celery"}, "celery executor needs a database", id="celery-with-default-sqlite"
        ),
        pytest.param(
            "",
            {"executor": "celery", "database_url": "sqlite:////x.db"},
            "CIRCLET_DATABASE_URL=postgresql",
            id="celery-with-explicit-sqlite",
        ),
        pytest.param(
            "",
            {"executor": "celery", "database_url": "postgresql://u@h/db"},
            "needs CIRCLET_WORKER_TOKEN",
            id="celery-without-worker-token",
        ),
        pytest.param(
            "",
            {"executor": "celery", "database_url": "postgresql://u@h/db", "worker_token": "t", "broker_url": "sqs://q"},
            "CIRCLET_BROKER_URL must be a redis:// or amqp:// URL, not 'sqs'",
            id="celery-with-unknown-broker",
        ),
    ],
)
def test_errors(data: Path, toml: str, variables: dict[str, str], message: str) -> None:
    (data / "circlet.toml").write_text(toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(env_for(data, **variables))


def test_bad_toml_error_names_the_file_given_by_circlet_config(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[unclosed\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_for(data, config=str(config)))
    assert str(caught.value).startswith(f"{config}: ")


def test_celery_with_postgres_is_accepted(data: Path) -> None:
    settings = load_settings(
        env_for(data, executor="celery", database_url="postgresql://u@h/db", worker_token="t")
    )
    assert settings.executor == "celery"
    assert settings.worker_lost_after == 30.0  # docs/workers.md


# ------------------------------------------------------------------ conversions


@pytest.mark.parametrize(
    ("source", "name", "raw", "expected"),
    [
        pytest.param("env", "port", "9000", 9000, id="int-env"),
        pytest.param("toml", "port", "9000", 9000, id="int-toml"),
        pytest.param("env", "kill_grace", "0.25", 0.25, id="float-env"),
        pytest.param("toml", "kill_grace", "1", 1.0, id="float-from-toml-int"),
        *[
            pytest.param("env", "keep_workspaces", word, True, id=f"bool-{word}")
            for word in ("1", "true", "TRUE", "yes", "on", " On ")
        ],
        *[
            pytest.param("env", "keep_workspaces", word, False, id=f"bool-{word or 'empty'}")
            for word in ("0", "false", "no", "off", "")
        ],
        pytest.param("toml", "keep_workspaces", "true", True, id="bool-toml-true"),
        pytest.param("toml", "keep_workspaces", "false", False, id="bool-toml-false"),
        pytest.param("env", "orbs_dir", "/srv/orbs", Path("/srv/orbs"), id="path-absolute"),
        pytest.param("env", "orbs_dir", "~/orbs", "HOME/orbs", id="path-tilde-env"),
        pytest.param("toml", "orbs_dir", '"~/orbs"', "HOME/orbs", id="path-tilde-toml"),
        pytest.param("env", "orbs_dir", "", None, id="path-empty-is-none"),
        pytest.param("env", "blob_dir", "~/blobs", "HOME/blobs", id="blob-dir-env"),
        pytest.param("env", "log_level", "debug", "debug", id="str"),
    ],
)
def test_conversions(home: Path, data: Path, source: str, name: str, raw: str, expected: Any) -> None:
    if source == "toml":
        (data / "circlet.toml").write_text(f"{name} = {raw}\n")
        env = env_for(data)
    else:
        env = env_for(data, **{name: raw})
    if isinstance(expected, str) and expected.startswith("HOME/"):
        expected = home / expected.removeprefix("HOME/")
    value = getattr(load_settings(env), name)
    assert value == expected
    assert type(value) is type(expected)


def test_unknown_bool_word_is_an_error(data: Path) -> None:
    with pytest.raises(SettingsError, match="CIRCLET_KEEP_WORKSPACES"):
        load_settings(env_for(data, keep_workspaces="ture"))


def test_settings_are_frozen(data: Path) -> None:
    settings = load_settings(env_for(data))
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.with_changes(port=1, host=None) == Settings(data_dir=data, port=1)


# ------------------------------------------------------------------ secret key


def test_secret_key_is_made_once_private_and_stable(tmp_path: Path) -> None:
    data = tmp_path / "not-yet"
    settings = load_settings({"CIRCLET_DATA_DIR": str(data)})
    key = settings.secret_key()
    path = data / "secret.key"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_text()
    assert settings.secret_key() == key
    assert load_settings({"CIRCLET_DATA_DIR": str(data)}).secret_key() == key
    assert path.read_text() == written
    other = load_settings({"CIRCLET_DATA_DIR": str(tmp_path / "other")}).secret_key()
    assert other != key
