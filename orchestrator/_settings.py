"""Every setting of the daemon, from wherever it is given, validated once.

A :class:`Settings` model (pydantic-settings) holds them all. Each value
comes from the first of these that gives it:

1. the command line (``--concurrency 20``),
2. the environment (``ORCHESTRATOR_CONCURRENCY=20``),
3. the TOML file of ``--config FILE`` (``concurrency = 20``),
4. the application's own ``Orchestrator(concurrency=20)``,
5. the default.

:func:`resolve_settings` reads the sources (pydantic-settings' environment
and TOML sources), keeps where each value came from, and validates the
result; a bad value raises :class:`InvalidSetting`, naming the setting,
where it came from and the value (a URL's password hidden), before
anything connects or is written. ``orchestrator config show`` prints the
result with its sources (:func:`describe_settings`).
"""

from __future__ import annotations

import math
import tomllib
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import TomlConfigSettingsSource

from ._app import SettingError, parse_concurrency, parse_queues, parse_shutdown_grace
from ._database_url import check_database_url, redact_url
from ._errors import InvalidInput, quote_prefix
from ._logging import LOG_FORMATS, LOG_LEVELS
from ._metrics import QUEUE_DEPTH_INTERVAL
from ._retention import DEFAULT_AGES, DEFAULT_BATCH, DEFAULT_PRUNE_INTERVAL, MAX_AGE_SECONDS, MAX_BATCH
from ._retention import MAX_PRUNE_INTERVAL, Retention, format_duration, parse_duration
from ._validation import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, PayloadLimits, check_int
from ._validation import check_name, check_seconds

ENV_PREFIX = "ORCHESTRATOR_"
#: Settings whose values are secret: shown and quoted with passwords hidden.
SECRET_SETTINGS = frozenset({"database_url"})
#: Settings measured in seconds (shown as durations).
DURATION_SETTINGS = frozenset(
    {"poll_interval", "lease_seconds", "shutdown_grace", "retention_completed", "retention_failed",
     "retention_cancelled", "prune_interval", "metrics_interval"}
)  # fmt: skip
#: Words for "no value": keep finished jobs forever, never prune.
_NEVER = frozenset({"never", "off", "none", "forever"})


class InvalidSetting(InvalidInput, SettingError):
    """A setting's value is not allowed; nothing was started or written.

    Attributes:
        field: the setting (``concurrency``).
        source: where the value came from (``ORCHESTRATOR_CONCURRENCY``,
            ``--concurrency``, ``orchestrator.toml``...).
    """

    def __init__(self, setting: str, source: str, reason: str) -> None:
        super().__init__(setting, reason)
        self.source = source
        self.args = (f"bad {source}: {reason}",)


# -- the values of each setting ---------------------------------------------------


def _integer(name: str, low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"{quote_prefix(value)} is not an integer") from None
        return check_int(name, value, low, high)

    return parse


def _seconds(name: str, high: float, *, allow_zero: bool, optional: bool = False) -> Callable[[Any], float | None]:
    def parse(value: Any) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, str):
            if optional and value.strip().lower() in _NEVER:
                return None
            return parse_duration(value, name, high=high, allow_zero=allow_zero)
        return check_seconds(name, value, high=high, allow_zero=allow_zero)

    return parse


def _text_only(parse: Callable[[str], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse`` for text (the environment, flags), ``then`` for values a
    TOML file or the app gives typed."""
    return lambda value: parse(value) if isinstance(value, str) else then(value)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None or (isinstance(value, str) and not value.strip()) else parse(value)


def _choice(choices: tuple[str, ...], normalise: Callable[[str], str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or normalise(value.strip()) not in choices:
            raise ValueError(f"{quote_prefix(value)} must be one of: {', '.join(choices)}")
        return normalise(value.strip())

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{quote_prefix(value)} must be true or false")


def _queues(value: Any) -> list[str] | dict[str, int | None]:
    if isinstance(value, list):
        names = [check_name("queues", q) for q in value]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"must name each queue once, got {quote_prefix(value)}")
        return names
    if isinstance(value, dict) and value:
        return {
            check_name("queues", q): None if n is None else check_int(f"queues.{q}", n, 1, 100_000)
            for q, n in value.items()
        }
    raise ValueError(f"must be a list of queues or a table of queue = limit, got {quote_prefix(value)}")


def _database_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a postgresql:// URL, got {type(value).__name__} {quote_prefix(value)}")
    return check_database_url(value)


def _schema(value: Any) -> str:
    from ._store import check_schema_name

    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {quote_prefix(value)}")
    return check_schema_name(value)


def _bind(value: Any) -> str:
    from ._http.server import parse_bind

    if not isinstance(value, str):
        raise ValueError(f"must be HOST:PORT, got {quote_prefix(value)}")
    parse_bind(value)
    return value


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _optional(_database_url),
    "schema": _schema,
    "node_id": _optional(lambda v: check_name("node_id", v)),
    "concurrency": _text_only(parse_concurrency, _integer("concurrency", 1, 10_000)),
    "queues": _optional(_text_only(parse_queues, _queues)),
    "poll_interval": _seconds("poll_interval", 3600, allow_zero=False),
    "lease_seconds": _seconds("lease_seconds", 86_400, allow_zero=False),
    "pool_size": _integer("pool_size", 1, 100),
    "shutdown_grace": _text_only(parse_shutdown_grace, _seconds("shutdown_grace", 86_400, allow_zero=True)),
    "max_payload_bytes": _integer("max_payload_bytes", 2, 1024**3),
    "max_payload_depth": _integer("max_payload_depth", 1, 512),
    "retention_completed": _seconds("retention_completed", MAX_AGE_SECONDS, allow_zero=True, optional=True),
    "retention_failed": _seconds("retention_failed", MAX_AGE_SECONDS, allow_zero=True, optional=True),
    "retention_cancelled": _seconds("retention_cancelled", MAX_AGE_SECONDS, allow_zero=True, optional=True),
    "prune_interval": _seconds("prune_interval", MAX_PRUNE_INTERVAL, allow_zero=False, optional=True),
    "prune_batch": _integer("prune_batch", 1, MAX_BATCH),
    "log_level": _optional(_choice(LOG_LEVELS, str.upper)),
    "log_format": _choice(LOG_FORMATS, str.lower),
    "http": _optional(_bind),
    "http_body_limit": _integer("http_body_limit", 1, 1024**3),
    "metrics": _optional(_bind),
    "metrics_interval": _seconds("metrics_interval", MAX_PRUNE_INTERVAL, allow_zero=False, optional=True),
    "work": _boolean,
    "tracing": _boolean,
}


with warnings.catch_warnings():
    # `schema` shadows BaseModel's deprecated `schema()`; the setting keeps
    # the name of its variable (ORCHESTRATOR_SCHEMA) and of its flag.
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class Settings(BaseSettings):
        """The daemon's settings, validated (see the module's docstring for
        where each one comes from)."""

        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            extra="forbid",
            frozen=True,
            # Values from the environment arrive as text, parsed below with
            # the same rules as the command line's.
            enable_decoding=False,
            env_ignore_empty=True,
            validate_default=False,
        )

        database_url: str | None = None
        schema: str = "orchestrator"  # type: ignore[assignment]
        node_id: str | None = None
        concurrency: int = 10
        queues: list[str] | dict[str, int | None] | None = None
        poll_interval: float = 1.0
        lease_seconds: float = 30.0
        pool_size: int = 4
        shutdown_grace: float = 0.0
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
        max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH
        retention_completed: float | None = DEFAULT_AGES["completed"]
        retention_failed: float | None = DEFAULT_AGES["failed"]
        retention_cancelled: float | None = DEFAULT_AGES["cancelled"]
        prune_interval: float | None = DEFAULT_PRUNE_INTERVAL
        prune_batch: int = DEFAULT_BATCH
        log_level: str | None = None
        log_format: str = "text"
        http: str | None = None
        http_body_limit: int = 1 << 20
        metrics: str | None = None
        metrics_interval: float | None = QUEUE_DEPTH_INTERVAL
        work: bool = True
        tracing: bool = True

        @field_validator("*", mode="before")
        @classmethod
        def _parse(cls, value: Any, info: ValidationInfo) -> Any:
            try:
                return _PARSERS[info.field_name or ""](value)
            except InvalidInput as exc:
                raise ValueError(exc.reason) from None

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # resolve_settings reads and ranks the sources itself, to know
            # where each value came from; the model validates what it chose.
            return (init_settings,)

        def retention(self) -> Retention:
            return Retention(self.retention_completed, self.retention_failed, self.retention_cancelled)


SETTING_NAMES = tuple(Settings.model_fields)


# -- the sources ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from."""

    kind: str  # "flag", "env", "file", "app", "default"
    name: str  # "--concurrency", "ORCHESTRATOR_CONCURRENCY", the file's path, ...

    def describe(self, setting: str) -> str:
        """``concurrency (from ORCHESTRATOR_CONCURRENCY)``: the setting and its source."""
        where = {"app": f"the app {self.name}".rstrip(), "default": "the default"}.get(self.kind, self.name)
        return f"{setting} (from {where})"


@dataclass(frozen=True)
class Resolved:
    """The settings in effect, and where each came from."""

    settings: Settings
    sources: Mapping[str, Source]


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``ORCHESTRATOR_*`` variables that name a setting, as text."""
    source = EnvSettingsSource(Settings)
    if environ is not None:
        source.env_vars = {k.lower(): v for k, v in environ.items()}
    # A variable set to blanks counts as unset, as an empty one does.
    return {
        name: value
        for name, value in source().items()
        if name in Settings.model_fields and not (isinstance(value, str) and not value.strip())
    }


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file (top-level ``key = value`` lines).

    Raises:
        InvalidSetting: the file cannot be read, is not TOML, or names a
            setting that does not exist (naming the file and the key).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            tomllib.load(handle)
    except OSError as exc:
        raise InvalidSetting("config", f"config (from --config {path})", f"cannot read the file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSetting("config", f"config (from --config {path})", f"not valid TOML: {exc}") from None
    values = TomlConfigSettingsSource(Settings, toml_file=file)()
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise InvalidSetting(
            unknown[0],
            f"config (from --config {path})",
            f"unknown setting {unknown[0]!r} (the settings are: {', '.join(SETTING_NAMES)})",
        )
    return values


def app_settings(orch: Any) -> dict[str, Any]:
    """The settings an ``Orchestrator`` was given that differ from the defaults."""
    values: dict[str, Any] = {
        "database_url": orch.database_url,
        "schema": orch.schema,
        "concurrency": orch.concurrency,
        "queues": orch.queues if orch.queues is None or isinstance(orch.queues, (list, dict)) else list(orch.queues),
        "poll_interval": orch.poll_interval,
        "lease_seconds": orch.lease_seconds,
        "pool_size": orch.pool_size,
        "shutdown_grace": orch.shutdown_grace,
        "max_payload_bytes": orch.payload_limits.max_bytes,
        "max_payload_depth": orch.payload_limits.max_depth,
        "retention_completed": orch.retention.completed,
        "retention_failed": orch.retention.failed,
        "retention_cancelled": orch.retention.cancelled,
        "prune_interval": orch.prune_interval,
        "prune_batch": orch.prune_batch,
        "metrics_interval": orch.metrics_interval,
    }
    if getattr(orch, "node_id_given", False):
        values["node_id"] = orch.node_id
    if isinstance(values["queues"], dict):
        values["queues"] = dict(values["queues"])
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    return {name: value for name, value in values.items() if name == "node_id" or value != defaults[name]}


#: Query parameters of a URL that hold secrets (libpq's and common ones).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "token", "secret", "api_key", "apikey"})


def mask_secrets(url: str) -> str:
    """``url`` with its password, and query parameters that hold secrets, as ``***``."""
    masked = redact_url(url)
    parts = urllib.parse.urlsplit(masked) if masked.startswith(("postgres", "http")) else None
    if parts is None or not parts.query:
        return masked
    query = [
        (key, "***" if key.lower() in _SECRET_PARAMS else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def shown_value(setting: str, value: Any) -> str:
    """A value for messages and ``config show``: secrets hidden."""
    if setting in SECRET_SETTINGS and isinstance(value, str):
        return quote_prefix(mask_secrets(value), limit=80)
    return quote_prefix(value, limit=80)


def resolve_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config: str | Path | None = None,
    app: Any = None,
    app_name: str = "",
    environ: Mapping[str, str] | None = None,
    only: set[str] | None = None,
) -> Resolved:
    """The settings in effect: flags > environment > file > app > defaults.

    Args:
        flags: settings given on the command line (``None`` values: not given).
        config: a TOML file of settings.
        app: the ``Orchestrator`` whose own settings come before the defaults.
        only: validate just these settings (a command that needs only its
            log level is not refused for a bad concurrency); the others
            keep their defaults.

    Raises:
        InvalidSetting: naming the setting, where it came from and the bad value.
    """
    layers: list[tuple[Source | None, Mapping[str, Any]]] = []
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    layers.append((None, given))
    env = read_environment(environ)
    layers.append((Source("env", ""), env))
    if config is not None:
        layers.append((Source("file", str(config)), read_config_file(config)))
    if app is not None:
        layers.append((Source("app", app_name), app_settings(app)))
    chosen: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in SETTING_NAMES:
        for source, values in layers:
            if name in values:
                chosen[name] = values[name]
                if source is None:
                    flag = f"--no-{name}" if name in ("work", "tracing") and values[name] is False else flag_name(name)
                    sources[name] = Source("flag", flag)
                elif source.kind == "env":
                    sources[name] = Source("env", env_name(name))
                else:
                    sources[name] = source
                break
        else:
            sources[name] = Source("default", "")
    if only is not None:
        chosen = {k: v for k, v in chosen.items() if k in only}
    try:
        settings = Settings(**chosen)
    except ValidationError as exc:
        raise _refusal(exc, chosen, sources) from None
    return Resolved(settings, sources)


def _refusal(exc: ValidationError, chosen: Mapping[str, Any], sources: Mapping[str, Source]) -> InvalidSetting:
    """The first error, as an InvalidSetting naming the setting, the source and the value."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error.get("loc") else "settings"
    cause = (error.get("ctx") or {}).get("error")
    reason = str(cause) if cause is not None else str(error.get("msg", "invalid"))
    value = chosen.get(name)
    shown = shown_value(name, value)
    if name not in SECRET_SETTINGS and shown not in reason and str(value) not in reason:
        reason += f" (got {shown})"
    source = sources.get(name, Source("default", ""))
    return InvalidSetting(name, source.describe(name), reason)


# -- applying and showing -----------------------------------------------------------


def apply_settings(orch: Any, settings: Settings, names: set[str] | None = None) -> None:
    """Configure ``orch`` with ``settings`` (already validated): all of the
    Orchestrator's, or only ``names``."""
    from ._app import queue_spec_for

    def wanted(*group: str) -> bool:
        return names is None or any(n in names for n in group)

    if wanted("database_url"):
        orch.database_url = settings.database_url
    if wanted("schema"):
        orch.schema = settings.schema
    if wanted("node_id") and settings.node_id is not None:
        orch.node_id = settings.node_id
    if wanted("concurrency"):
        orch.concurrency = settings.concurrency
    if wanted("queues") and settings.queues is not None:
        orch.queues = queue_spec_for(settings.queues, orch.concurrency)
    for name in (
        "poll_interval", "lease_seconds", "pool_size", "shutdown_grace", "prune_interval", "prune_batch",
        "metrics_interval", "tracing",
    ):  # fmt: skip
        if wanted(name):
            setattr(orch, name, getattr(settings, name))
    if wanted("max_payload_bytes", "max_payload_depth"):
        orch.payload_limits = PayloadLimits(settings.max_payload_bytes, settings.max_payload_depth)
    if wanted("retention_completed", "retention_failed", "retention_cancelled"):
        orch.retention = settings.retention()


def display_value(setting: str, value: Any) -> str:
    """A value for ``config show``'s table: durations readable, secrets hidden."""
    if value is None:
        return "-" if setting not in DURATION_SETTINGS else "never"
    if setting in SECRET_SETTINGS:
        return mask_secrets(str(value))
    if setting in DURATION_SETTINGS and isinstance(value, float) and math.isfinite(value):
        return format_duration(value)
    if isinstance(value, dict):
        return ",".join(q if n is None else f"{q}={n}" for q, n in value.items())
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe_settings(resolved: Resolved) -> list[dict[str, Any]]:
    """Each setting: name, value (secrets hidden), and where it came from."""
    rows = []
    for name in SETTING_NAMES:
        value = getattr(resolved.settings, name)
        if name in SECRET_SETTINGS and isinstance(value, str):
            value = mask_secrets(value)
        source = resolved.sources[name]
        rows.append({"setting": name, "value": value, "source": source.kind, "from": source.name or None})
    return rows
