"""Settings precedence: flags > VOLT_* environment > config file > defaults; bad values are one line."""

from pathlib import Path

import pytest

from voltci.config import Settings, as_environment, load_settings
from voltci.errors import BadInput


def test_defaults_work_on_one_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.queue == "volt" and settings.poll == 5 and settings.build_timeout == 1800
    assert (settings.heartbeat, settings.heartbeat_ttl, settings.max_attempts) == (2, 6, 3)
    assert settings.redis_url is None and settings.effective_redis_url == "redis://127.0.0.1:6379/0"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "volt.toml"
    config.write_text('queue = "from-file"\npoll = 7\nbuild_timeout = 10\nredis_url = "redis://file:1/0"\n')
    env = {"VOLT_POLL": "3", "VOLT_REDIS_URL": "redis://env:2/0"}
    settings = load_settings(str(config), {"redis_url": "redis://flag:3/0", "poll": None}, environ=env)
    assert settings.redis_url == "redis://flag:3/0"
    assert settings.poll == 3.0
    assert settings.queue == "from-file"
    assert settings.build_timeout == 10.0


def test_config_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text("max_attempts = 5\n")
    assert load_settings(environ={"VOLT_CONFIG": str(config)}).max_attempts == 5


def test_shipped_config_file_is_valid_and_changes_nothing() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config" / "volt.toml"
    settings = load_settings(str(shipped), environ={})
    assert settings == Settings(workspace_dir=settings.workspace_dir)
    text = shipped.read_text()
    for name in Settings.__dataclass_fields__:
        assert f"# {name} = " in text, f"config/volt.toml does not document '{name}'"


@pytest.mark.parametrize("text, message", [
    ("nonsense = 1\n", "unknown setting 'nonsense'"),
    ("poll = 'soon'\n", "'poll' must be a float"),
    ("max_attempts = 0\n", "'max_attempts' must be positive"),
    ("poll = [\n", "not valid TOML"),
])
def test_bad_config_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "volt.toml"
    config.write_text(text)
    with pytest.raises(BadInput, match=message):
        load_settings(str(config), environ={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(BadInput, match="VOLT_BUILD_TIMEOUT"):
        load_settings(environ={"VOLT_BUILD_TIMEOUT": "forever"})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="config file not found"):
        load_settings(str(tmp_path / "absent.toml"), environ={})


def test_settings_round_trip_through_the_environment() -> None:
    settings = Settings(redis_url="redis://h:1/0", poll=1.5, max_attempts=4, workspace_dir="/w")
    assert load_settings(environ=as_environment(settings)) == settings
