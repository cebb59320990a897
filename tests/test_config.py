"""Settings: defaults, precedence, validation with readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tornchat.config import DEV_SECRET, load_settings
from tornchat.errors import ConfigError


def test_defaults_need_nothing_and_use_embedded_backends():
    settings = load_settings(environ={})
    assert settings.port == 4004
    assert settings.database_kind == "sqlite"
    assert settings.redis_url == "" and settings.kafka_broker == ""
    assert settings.access_token_secret == DEV_SECRET and settings.uses_dev_secret
    assert settings.max_connections_per_user == 5
    assert settings.auth_timeout == 5.0 and settings.heartbeat_interval == 30.0
    assert settings.max_frame_bytes == 65536 and settings.max_message_length == 4000


def test_seed_variable_names_are_honoured():
    settings = load_settings(environ={
        "PORT": "5000", "DATABASE_URL": "postgresql://u:p@db:5432/chat",
        "ACCESS_TOKEN_SECRET": "s" * 32, "REDIS_URL": "redis://r:6379/0",
        "KAFKA_BROKER": "kafka:9092", "LOG_LEVEL": "debug"})
    assert (settings.port, settings.database_kind, settings.redis_url, settings.kafka_broker,
            settings.log_level) == (5000, "postgresql", "redis://r:6379/0", "kafka:9092",
                                    "debug")


def test_file_then_environment_then_flags(tmp_path):
    conf = tmp_path / "tornchat.toml"
    conf.write_text('port = 4100\nallowed_origins = ["https://a.example"]\n'
                    "heartbeat_interval = 10\n")
    settings = load_settings(environ={"TORNCHAT_HEARTBEAT_INTERVAL": "12"},
                             config_file=str(conf), overrides={"port": 4200})
    assert settings.port == 4200
    assert settings.heartbeat_interval == 12.0
    assert settings.allowed_origins == ("https://a.example",)


def test_the_shipped_config_file_is_valid():
    shipped = Path(__file__).resolve().parent.parent / "conf" / "tornchat.toml"
    settings = load_settings(environ={}, config_file=str(shipped))
    assert settings.port == 4004


def test_allowed_origins_from_a_comma_list():
    settings = load_settings(environ={"TORNCHAT_ALLOWED_ORIGINS": "https://a.io, https://b.io/"})
    assert settings.allowed_origins == ("https://a.io", "https://b.io")


@pytest.mark.parametrize(("environ", "setting"), [
    ({"PORT": "0"}, "PORT"),
    ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://localhost"}, "DATABASE_URL"),
    ({"KAFKA_BROKER": "kafka://x:9092"}, "KAFKA_BROKER"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"TORNCHAT_ENV": "staging"}, "TORNCHAT_ENV"),
    ({"TORNCHAT_MAX_CONNECTIONS_PER_USER": "0"}, "TORNCHAT_MAX_CONNECTIONS_PER_USER"),
    ({"TORNCHAT_LISTEN_BACKLOG": "0"}, "TORNCHAT_LISTEN_BACKLOG"),
    ({"TORNCHAT_HEALTH_PORT": "70000"}, "TORNCHAT_HEALTH_PORT"),
    ({"PORT": "9000", "TORNCHAT_HEALTH_PORT": "9000"}, "TORNCHAT_HEALTH_PORT"),
    ({"TORNCHAT_AUTH_TIMEOUT": "soon"}, "TORNCHAT_AUTH_TIMEOUT"),
    ({"TORNCHAT_ENV": "production"}, "ACCESS_TOKEN_SECRET"),
    ({"NODE_ENV": "production", "ACCESS_TOKEN_SECRET": "short"}, "ACCESS_TOKEN_SECRET"),
])
def test_invalid_values_name_the_variable(environ, setting):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: ")


def test_unknown_or_malformed_config_file_entries_are_errors(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(environ={}, config_file=str(conf))
    conf.write_text("port = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(environ={}, config_file=str(conf))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, config_file=str(tmp_path / "missing.toml"))


def test_production_accepts_a_long_secret():
    settings = load_settings(environ={"TORNCHAT_ENV": "production",
                                      "ACCESS_TOKEN_SECRET": "k" * 32})
    assert settings.is_production and not settings.uses_dev_secret


def test_every_setting_is_documented_in_the_readme_and_the_shipped_file():
    import dataclasses

    from tornchat.config import Settings

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    shipped = (root / "conf" / "tornchat.toml").read_text()
    for spec in dataclasses.fields(Settings):
        assert f"`{spec.metadata['env']}`" in readme, spec.metadata["env"]
        assert f"{spec.name} =" in shipped, spec.name


def test_in_memory_sqlite_is_refused_and_foreign_node_env_values_ignored():
    with pytest.raises(ConfigError, match="in-memory"):
        load_settings(environ={"DATABASE_URL": "sqlite:///:memory:"})
    assert load_settings(environ={"NODE_ENV": "test"}).env == "development"


def test_the_server_api_key_must_be_long_and_stays_out_of_the_settings_repr():
    with pytest.raises(ConfigError, match="TORNCHAT_API_KEY"):
        load_settings(environ={"TORNCHAT_API_KEY": "short"})
    with pytest.raises(ConfigError, match="white space"):
        load_settings(environ={"TORNCHAT_API_KEY": " " + "s" * 40})
    settings = load_settings(environ={"TORNCHAT_API_KEY": "s" * 32,
                                      "ACCESS_TOKEN_SECRET": "t" * 32})
    assert settings.api_key == "s" * 32
    assert "s" * 32 not in repr(settings) and "t" * 32 not in repr(settings)


@pytest.mark.parametrize(("environ", "message"), [
    ({"TORNCHAT_PROCESSES": "abc"}, "TORNCHAT_PROCESSES: must be a whole number, got 'abc'"),
    ({"TORNCHAT_AUTH_TIMEOUT": "5s"},
     "TORNCHAT_AUTH_TIMEOUT: must be a number of seconds, got '5s'"),
    ({"TORNCHAT_STAGE_TIMING": "true"}, "TORNCHAT_STAGE_TIMING: must be a whole number"),
])
def test_a_value_of_the_wrong_kind_says_what_it_must_be(environ, message):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ)
    assert str(raised.value).startswith(message)
    assert "invalid literal" not in str(raised.value)  # no Python internals


def test_numbers_may_carry_surrounding_white_space():
    assert load_settings(environ={"PORT": " 4100 "}).port == 4100
