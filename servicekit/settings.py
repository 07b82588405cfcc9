"""Settings: declared once per service, read from the environment, a TOML file and ``<NAME>_FILE`` secrets.

Each service's ``settings.py`` declares its settings as a table of :class:`Setting` (the environment name, the
parser, the default, a one-line description, whether it is a secret) in a :class:`Declarations`. That table is the
single source for reading the environment, the TOML file's keys, the ``config`` command and the generated reference
(``python -m servicekit.settings_doc``, ``docs/reference/settings.md``).

Where a value comes from, the first that has it (an empty variable counts as unset):

1. the environment: ``BFF_CLIENT_SECRET``, or for a secret ``BFF_CLIENT_SECRET_FILE`` (a path; the file's content,
   trailing newline stripped, as compose and Kubernetes mount secrets); both set is an error;
2. the TOML file that ``BFF_CONFIG`` (``bff serve --config``) names: the same setting in lower case without the
   service prefix (``client_secret``, ``client_secret_file``; shared ones keep theirs: ``redis_url``);
3. the declared default.

Every parser raises ``SettingsError`` with a message naming the variable (or the file's key), so a bad deployment
fails at start-up and says what to fix.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# -- parsers: (label, raw text) -> value; the label names the setting in the error ------------------------------------

Parser = Callable[[str, str], Any]


def text(label: str, raw: str) -> str:
    return raw


def stripped(label: str, raw: str) -> str:
    return raw.strip()


def integer(*, minimum: int = 0) -> Parser:
    def parse(label: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{label} must be an integer, got {raw.strip()!r}") from None
        if value < minimum:
            raise SettingsError(f"{label} must be >= {minimum}, got {value}")
        return value

    return parse


def number(*, positive: bool = False) -> Parser:
    """A finite number, >= 0 (``positive``: > 0)."""

    def parse(label: str, raw: str) -> float:
        raw = raw.strip()
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{label} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise SettingsError(f"{label} must be {'> 0' if positive else '>= 0'}, got {raw!r}")
        return value

    return parse


def flag(label: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(f"{label} must be true or false (1 or 0), got {value!r}")


def url(*, strip_slash: bool = True, plain: bool = False) -> Parser:
    def parse(label: str, raw: str) -> str:
        return http_url(label, raw, strip_slash=strip_slash, plain=plain)

    return parse


def choice(*options: str) -> Parser:
    def parse(label: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise SettingsError(f"{label} must be {', '.join(options[:-1])} or {options[-1]}, got {value!r}")
        return value

    return parse


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = (env.get(name) or "").strip()
    return integer(minimum=minimum)(name, raw) if raw else default


def env_float(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    """A finite number, >= 0 (``positive``: > 0)."""
    raw = (env.get(name) or "").strip()
    return number(positive=positive)(name, raw) if raw else default


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip()
    return flag(name, raw) if raw else default


def http_url(name: str, raw: str, *, strip_slash: bool = True, plain: bool = False) -> str:
    """An absolute http(s) URL; ``plain`` also refuses a query or fragment; ``strip_slash=False`` keeps it verbatim
    (an issuer is compared exactly, RFC 9068 §4)."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or (plain and (parts.query or parts.fragment)):
        rule = " without query or fragment" if plain else ""
        raise SettingsError(f"{name} must be an http(s) URL{rule}, got {raw!r}")
    return raw.rstrip("/") if strip_slash else raw


# -- declarations ------------------------------------------------------------------------------------------------------

# The TOML type each kind of setting takes in the file (a list is joined with ``sep``; a table or an array of tables
# becomes the JSON the environment variable holds).
KINDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "list": "a list of strings",
    "table": "a table",
    "tables": "an array of tables",
}


@dataclass(frozen=True)
class Setting:
    """One setting: its environment variable, how it is parsed, its default, and what it is for."""

    name: str  # the environment variable, e.g. BFF_IDLE_TTL
    default: str | None  # as the environment would spell it; None: unset unless given (or required)
    help: str  # one line for the reference and `config`
    parse: Parser = text
    secret: bool = False  # never printed; also read from <NAME>_FILE
    kind: str = "string"  # the TOML type (KINDS)
    sep: str = ","  # how a TOML list joins into the variable's text
    required: bool = False  # no default: the service does not start without it (the reference marks it required)
    default_doc: str | None = None  # the reference's words for a default that is not a plain value
    derive: Callable[[Mapping[str, Any]], Any] | None = None  # unset: the default from the other values (by key)
    show: Callable[[str], str] | None = None  # a secret's printable form (e.g. JSON with its secrets masked)
    # A structured value's format, for the reference: its fields (name -> meaning), and a file holding a valid value
    # (a path from the repository's root, under docs_src/), which tests/test_settings_reference.py parses.
    fields: Mapping[str, str] | None = field(default=None, compare=False)
    example: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name}_FILE"


class Layered(dict[str, str]):
    """The environment over the config file, as variable -> text; ``sources`` says where each came from."""

    def __init__(self, values: Mapping[str, str], sources: Mapping[str, str], path: str | None) -> None:
        super().__init__(values)
        self.sources = dict(sources)
        self.path = path

    def __repr__(self) -> str:  # it holds the secrets of the environment and the file: never shown
        return f"Layered({len(self)} variables, path={self.path!r})"


@dataclass(frozen=True)
class Effective:
    """One row of ``config``: a setting's value as printed (secrets redacted) and where it came from."""

    setting: Setting
    key: str
    value: str
    source: str  # env | file | default | <NAME>_FILE | file (<key>_file)


REDACTED = "<redacted>"
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


def mask_url_passwords(value: str) -> str:
    """``redis://:hunter2@host`` -> ``redis://:***@host``: URLs in ``config`` output keep their passwords hidden."""
    return _URL_PASSWORD.sub(r"\1***@", value)


def _parse(setting: Setting, label: str, raw: str) -> Any:
    """The declared parser, with any error it lets escape (a NUL byte in a path is a ValueError of os.path) turned
    into a SettingsError naming the setting: a start-up message, never a traceback."""
    try:
        return setting.parse(label, raw)
    except SettingsError:
        raise
    except (ValueError, TypeError, OSError, UnicodeError) as exc:
        reason = "" if setting.secret else f": {exc}"
        raise SettingsError(f"{label} is not a valid value{reason}") from None


MAX_FILE_BYTES = 1 << 20  # a settings or secret file larger than this is a mistake (a device, a log), not settings


def read_small(path: str) -> bytes:
    """A file's bytes, refusing one over MAX_FILE_BYTES (``/dev/zero`` named by mistake must not hang start-up)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


class Declarations:
    """A service's settings table: reads them (environment over TOML file over default) and describes them."""

    def __init__(
        self,
        service: str,
        prefix: str,
        settings: Iterable[Setting],
        *,
        config_var: str | None = None,
        retired: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.prefix = prefix
        self.config_var = config_var
        # settings of earlier releases, no longer read: variable -> what to do instead. Given, each is ignored with a
        # warning (environment or file alike), never an error: an upgrade must not stop a service over one.
        self.retired = dict(retired or {})
        self.settings = tuple(settings)
        self.by_name = {s.name: s for s in self.settings}
        if len(self.by_name) != len(self.settings):
            raise ValueError(f"{service}: a setting is declared twice")
        self.by_key = {self.key(s): s for s in self.settings}

    def key(self, setting: Setting) -> str:
        """The TOML key (and the settings' attribute): the name in lower case, without the service prefix."""
        name = setting.name
        return (name[len(self.prefix) :] if name.startswith(self.prefix) else name).lower()

    # -- the file -----------------------------------------------------------------------------------------------------

    def _file_keys(self) -> list[str]:
        keys = list(self.by_key)
        keys += [f"{k}_file" for k, s in self.by_key.items() if s.secret]
        return keys

    def _from_file(self, path: str) -> dict[str, str]:
        """The file's settings as variable -> text, each checked against its declaration's type."""
        try:
            data = tomllib.loads(read_small(path).decode("utf-8"))
        except (OSError, ValueError) as exc:
            if isinstance(exc, tomllib.TOMLDecodeError):
                raise SettingsError(f"{path}: not valid TOML: {exc}") from None
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SettingsError(f"{self.config_var}: cannot read {path!r}: {reason}") from None
        out: dict[str, str] = {}
        for key, value in data.items():
            if key.endswith("_file") and key[: -len("_file")] in self.by_key and self.by_key[key[:-5]].secret:
                if not isinstance(value, str) or not value:
                    raise SettingsError(f"{path}: {key} must be a path (a string)")
                out[self.by_key[key[:-5]].file_name] = value
                continue
            setting = self.by_key.get(key)
            retired = next((name for name in self.retired if name[len(self.prefix) :].lower() == key), None)
            if setting is None and retired is not None:
                log.warning("%s: %s", path, self._retired(retired))
                continue
            if setting is None:
                close = difflib.get_close_matches(key, self._file_keys(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SettingsError(f"{path}: unknown setting {key!r}{hint}")
            out[setting.name] = self._as_text(path, key, setting, value)
        return out

    @staticmethod
    def _as_text(path: str, key: str, setting: Setting, value: Any) -> str:
        kind = setting.kind
        ok: bool
        if kind == "string":
            ok = isinstance(value, str)
            result = value if ok else ""
        elif kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
            result = str(value)
        elif kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            result = repr(value)
        elif kind == "boolean":
            ok = isinstance(value, bool)
            result = "true" if value else "false"
        elif kind == "list":
            if isinstance(value, str):
                value = [value]
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            result = setting.sep.join(value) if ok else ""
        elif kind == "table":
            ok = isinstance(value, dict)
            result = json.dumps(value, default=str) if ok else ""
        elif kind == "tables":
            ok = isinstance(value, list) and all(isinstance(v, dict) for v in value)
            result = json.dumps(value, default=str) if ok else ""
        else:  # pragma: no cover - a declaration's typo
            raise ValueError(f"{setting.name}: unknown kind {kind!r}")
        if not ok:
            shown = f"a {type(value).__name__}" if setting.secret else repr(value)
            raise SettingsError(f"{path}: {key} must be {KINDS[kind]}, got {shown}")
        return result

    def layer(self, env: Mapping[str, str]) -> Layered:
        """``env`` over the TOML file its ``config_var`` names (if any). A secret given either way in the
        environment (value or ``_FILE``) hides both of the file's."""
        if isinstance(env, Layered):
            return env
        given = {name: value for name, value in env.items() if value}
        sources = dict.fromkeys(given, "env")
        path = given.get(self.config_var) if self.config_var else None
        if not path:
            return Layered(env, sources, None)
        values = dict(env)
        for name, value in self._from_file(path).items():
            setting = self.by_name.get(name) or self.by_name[name.removesuffix("_FILE")]
            if setting.secret and (given.get(setting.name) or given.get(setting.file_name)):
                continue  # the environment gave this secret (either way): it wins over both of the file's
            if name not in given:
                values[name] = value
                sources[name] = "file"
        return Layered(values, sources, path)

    # -- reading ------------------------------------------------------------------------------------------------------

    def _raw(self, setting: Setting, env: Layered) -> tuple[str | None, str, str]:
        """(text or None, source, label for errors)."""
        key = self.key(setting)
        from_file = env.path is not None and env.sources.get(setting.name) == "file"
        label = f"{env.path}: {key}" if from_file else setting.name
        value = env.get(setting.name) or None
        file_name = env.get(setting.file_name) or None if setting.secret else None
        if value is not None and file_name is not None:
            raise SettingsError(f"{setting.name} and {setting.file_name} are both set: keep one")
        if file_name is not None:
            secret_file = env.path is not None and env.sources.get(setting.file_name) == "file"
            where = f"{env.path}: {key}_file" if secret_file else setting.file_name
            try:
                content = read_small(file_name).decode("utf-8").rstrip("\r\n")
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise SettingsError(f"{setting.name}: cannot read {where}={file_name!r}: {reason}") from None
            if not content:
                raise SettingsError(f"{setting.name}: {where}={file_name!r} is empty")
            return content, (f"file ({key}_file)" if secret_file else setting.file_name), setting.name
        if value is not None:
            return value, ("file" if from_file else "env"), label
        return None, "default", setting.name

    def text(self, name: str, env: Mapping[str, str]) -> str | None:
        """One setting's text as given (environment, ``_FILE``, file), unparsed; None when it is left to default."""
        raw, _, _ = self._raw(self.by_name[name], self.layer(env))
        return raw

    def read(self, env: Mapping[str, str]) -> dict[str, Any]:
        """Every setting parsed, by key (``issuer``, ``redis_url``, …); None for an unset one without default."""
        layered = self.layer(env)
        out: dict[str, Any] = {}
        for setting in self.settings:
            raw, _, label = self._raw(setting, layered)
            key = self.key(setting)
            if raw is None:
                if setting.required:
                    ways = [f"{setting.file_name}"] if setting.secret else []
                    if layered.path:
                        ways.append(f"{key} in {layered.path}")
                    elif self.config_var:
                        ways.append(f"{key} in the file {self.config_var} names")
                    also = f" (or {', or '.join(ways)})" if ways else ""
                    raise SettingsError(f"{setting.name} is required{also}")
                out[key] = None if setting.default is None else setting.parse(setting.name, setting.default)
            else:
                out[key] = _parse(setting, label, raw)
        for setting in self.settings:
            if setting.derive is not None and out[self.key(setting)] is None:
                out[self.key(setting)] = setting.derive(out)
        return out

    def unknown(self, env: Mapping[str, str]) -> list[str]:
        """A sentence for each variable with the service's prefix that is no setting (a typo is otherwise silently
        ignored: ``BFF_IDEL_TTL`` would leave the default in force)."""
        if not self.prefix:
            return []
        known = set(self.by_name) | {s.file_name for s in self.settings if s.secret}
        known |= {self.config_var} if self.config_var else set()
        found = []
        for name in sorted(env):
            if name in self.retired:
                found.append(self._retired(name))
            elif name.startswith(self.prefix) and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                found.append(f"{name} is not a setting of the {self.service}, it is ignored{hint}")
        return found

    def _retired(self, name: str) -> str:
        return f"{name} is a setting of an earlier release of the {self.service}, no longer read: {self.retired[name]}"

    def effective(self, env: Mapping[str, str]) -> list[Effective]:
        """What ``config`` prints: each setting's text (a secret redacted), and its source."""
        layered = self.layer(env)
        values = self.read(layered)  # a bad value fails here, with its message, before anything is printed
        rows = []
        for setting in self.settings:
            raw, source, _ = self._raw(setting, layered)
            if raw is None and setting.derive is not None:
                shown = f"{values[self.key(setting)]}  ({setting.default_doc})"
            elif raw is None:
                shown = setting.default if setting.default is not None else f"({setting.default_doc or 'unset'})"
            elif setting.secret:
                shown = setting.show(raw) if setting.show is not None else REDACTED
            else:
                shown = raw
            rows.append(Effective(setting, self.key(setting), mask_url_passwords(shown), source))
        return rows

    def render(self, env: Mapping[str, str]) -> str:
        """The ``config`` command's output: ``NAME = value  # source``, one setting a line."""
        rows = self.effective(env)
        width = max(len(r.setting.name) for r in rows)
        lines = []
        layered = self.layer(env)
        if layered.path:
            lines.append(f"# {self.service}: environment over {layered.path} over defaults")
        else:
            lines.append(f"# {self.service}: environment over defaults")
        for row in rows:
            lines.append(f"{row.setting.name:<{width}} = {row.value}  # {row.source}")
        lines += [f"# WARNING: {message}" for message in self.unknown(env)]
        return "\n".join(lines) + "\n"


def combine(*tables: Iterable[Setting]) -> list[Setting]:
    """Several declaration lists as one (a service's own and servicekit's shared ones)."""
    return [s for table in tables for s in table]
