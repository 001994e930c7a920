"""Settings: the one place that knows variable names and their precedence.

The sources, later ones winning (see resolve_variables):
  1. /etc/mail.rc, unless -n
  2. $MAILRC, or else ~/.mailrc
  3. .env files: /etc/pymail.env, the per-user file, $PYMAIL_ENV_FILE
  4. PYMAIL_* variables in the environment
  5. -S var[=value] on the command line
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pymail import logs
from pymail.errors import ConfigError
from pymail.files import read_regular
from pymail.rcfile import Interpreter, RcState

log = logs.Logger(__name__)

SYSTEM_RC = Path("/etc/mail.rc")
SYSTEM_ENV = Path("/etc/pymail.env")
SYSTEM_CACHE = Path("/var/cache/pymail")
ENV_PREFIX = "PYMAIL_"
ENV_FILE_VARIABLE = "PYMAIL_ENV_FILE"

# Variables whose names are not lower case; PYMAIL_ORGANIZATION finds them.
UPPER_CASE_NAMES = {"organization": "ORGANIZATION", "dead": "DEAD"}

# Variables that are only set or unset; PYMAIL_X=0 (or no, false, off)
# unsets one of these rather than setting it to the string "0".
BOOLEANS = frozenset({
    "smtp-use-starttls", "save", "dot", "sendwait", "v15-compat", "verbose",
    "debug", "tls-ca-no-defaults", "ssl-no-default-ca",
})
FALSE_WORDS = frozenset({"0", "no", "false", "off"})

DEFAULT_TIMEOUT = 30.0
# Longest socket timeout and deadline (a day), and queue lifetime (a year):
# larger numbers overflow the system's timers.
MAX_WAIT = 86400.0
MAX_LIFETIME = 365 * 86400.0
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
# Names of letters, digits and inner hyphens (RFC 1123 2.1), no `--` where
# IDNA reserves it (RFC 5891 4.2.3.1), 253 characters at most: valid IDNA.
_LDH_LABEL = r"(?!..--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
LDH_NAME = re.compile(rf"(?=.{{1,253}}\Z)(?:{_LDH_LABEL}\.)*{_LDH_LABEL}")
DEFAULT_LIFETIME = 5 * 86400.0
DEFAULT_DEADLINE = 300.0

SCHEMES = {
    # scheme: (default port, implicit TLS, STARTTLS)
    "smtp": (25, False, False),
    "smtps": (465, True, False),
    "submission": (587, False, True),
    "submissions": (465, True, False),
}

VERIFY_MODES = {"strict": "strict", "ask": "strict", "warn": "warn",
                "ignore": "ignore"}

def relay_hint() -> str:
    """What to add where, naming $MAILRC's file when it is set (then
    ~/.mailrc is not read)."""
    user = os.environ.get("MAILRC") or "~/.mailrc"
    return ("add `set smtp=smtps://smtp.example.com:465`, "
            "`set smtp-auth-user=you@example.com` and "
            f"`set from=you@example.com` to {user} or /etc/mail.rc, and "
            "PYMAIL_SMTP_AUTH_PASSWORD=... to /etc/pymail.env")


@dataclass(repr=False, eq=False)
class Relay:
    """Where and how to connect."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    where: str

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# The names a password may have: heirloom's, then s-nail's.
PASSWORDS = ("smtp-auth-password", "password")


@dataclass(repr=False, eq=False)
class Settings:
    """Everything a send needs, resolved from every source."""

    variables: dict[str, str]
    origins: dict[str, str]
    aliases: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    secrets: list[tuple[str, str]] = field(default_factory=list)
    account: str | None = None

    def get(self, *names: str) -> str | None:
        """The value of the first of names that is set."""
        for name in names:
            if name in self.variables:
                return self.variables[name]
        return None

    def flag(self, name: str) -> bool:
        return name in self.variables

    def text(self, *names: str) -> str | None:
        """Like get, but an empty value counts as unset."""
        value = self.get(*names)
        return value if value else None

    def origin(self, name: str) -> str:
        return self.origins.get(name, "the configuration")

    # What the relay needs ------------------------------------------------

    def relay_variable(self) -> str | None:
        """Which of `mta` (an SMTP URL) and `smtp` names the relay: the one
        set last, so that -S and later files win whichever name they use."""
        mta = self.text("mta")
        names = [n for n in self.variables
                 if (n == "mta" and mta and "://" in mta) or
                 (n == "smtp" and self.text("smtp"))]
        return names[-1] if names else None

    def relay(self) -> Relay:
        """The relay from `mta` (an SMTP URL) or `smtp`; exit 78 if neither."""
        mta = self.text("mta")
        name = self.relay_variable()
        relay = None
        if name:
            relay = parse_url(self.variables[name], self.origin(name))
        if relay is not None:
            if self.flag("smtp-use-starttls") and not relay.implicit_tls:
                relay.starttls = True
            return relay
        if mta:
            raise ConfigError(f"mta={redact_url(mta)} names a local program; "
                              "pymail only "
                              "relays over SMTP", hint=relay_hint())
        raise ConfigError("no relay configured (smtp is not set)",
                          hint=relay_hint())

    def auth(self) -> tuple[str | None, str | None, str | None]:
        """(mechanism or None for automatic, user, password)."""
        mechanism, user, password, _ = self.credentials()
        return mechanism, user, password

    def credentials(self) -> tuple[str | None, str | None, str | None,
                                   str | None]:
        """(mechanism, user, password, the variable the password came from).

        Each may be given for one relay or one login, as s-nail and heirloom
        document: smtp-auth-password-USER@HOST, then -HOST, then the plain
        name (also for smtp-auth, and smtp-auth-user, -HOST only); s-nail's
        user and password stand beside the smtp-auth- names. Of names that
        are alike, and of a login or password in the relay's URL, the one
        set last wins, as for any variable (-S beats the files). The URL's
        password goes only with the URL's login.
        """
        try:
            host: str | None = self.relay().host
        except ConfigError:
            host = None
        # A relay that cannot be read has no login either (relay() says why).
        url = self.relay_variable() if host else None
        url_user, url_password = self._url_credentials(url)
        named = self._chosen([[f"smtp-auth-user-{host}", f"user-{host}"]
                              if host else [], ["smtp-auth-user", "user"]])
        user = url_user if url_user and self._newest(url, named) == url \
            else self.text(named) if named else None
        mechanism = (self._variant("smtp-auth", user, host) or "").lower()
        levels = [[f"{n}-{user}@{host}" for n in PASSWORDS] if user and host
                  else [], [f"{n}-{host}" for n in PASSWORDS] if host else [],
                  list(PASSWORDS)]
        # An empty password is none (an unset secret in docker or CI often
        # comes as PYMAIL_SMTP_AUTH_PASSWORD=): pymail-password-command or
        # the error that no password is set follow.
        named = self._chosen(levels)
        if url_password and user == url_user and \
                self._newest(url, named) == url:
            return mechanism or None, user, url_password, url
        password = self.text(named) if named else None
        return mechanism or None, user, password, named

    def _chosen(self, levels: list[list[str]]) -> str | None:
        """The variable set last among the first level of names that has
        one set to a non-empty value."""
        for names in levels:
            found = [n for n in names if self.text(n) is not None]
            if found:
                return self._newest(*found)
        return None

    def _newest(self, *names: str | None) -> str | None:
        """Of the variables named (None: not set), the one set last."""
        order = {name: i for i, name in enumerate(self.variables)}
        found = [n for n in names if n is not None and n in order]
        return max(found, key=order.__getitem__) if found else None

    def _variant(self, name: str, user: str | None,
                 host: str | None) -> str | None:
        names = []
        if user and host:
            names.append(f"{name}-{user}@{host}")
        if host:
            names.append(f"{name}-{host}")
        names.append(name)
        return self.text(*names)

    def command_password(self) -> str | None:
        """The standard output of `pymail-password-command`, run by the
        shell, less its final newline: for vaults and keyrings."""
        command = self.text("pymail-password-command")
        if not command:
            return None
        import subprocess

        where = self.origin("pymail-password-command")
        try:
            result = subprocess.run(command, shell=True, capture_output=True,
                                    stdin=subprocess.DEVNULL,
                                    timeout=self.timeout(), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"{where}: pymail-password-command failed: "
                              f"{exc}") from exc
        if result.returncode != 0:
            reason = result.stderr.decode("utf-8", "replace").strip()
            reason = reason.splitlines()[0] if reason else "no message"
            raise ConfigError(f"{where}: pymail-password-command exited "
                              f"{result.returncode}: {reason}")
        password = result.stdout.decode("utf-8", "surrogateescape")
        password = password.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"{where}: pymail-password-command printed "
                              "nothing")
        return password

    def _url_credentials(self, name: str | None
                         ) -> tuple[str | None, str | None]:
        """The login and password in the URL of variable `name`, if any."""
        value = self.variables[name] if name else ""
        if "://" not in value:
            return None, None
        parts = urlsplit(value)
        user = unquote(parts.username) if parts.username else None
        password = (unquote(parts.password) if parts.password is not None
                    else None)
        return user, password

    def for_relay(self, *names: str) -> tuple[str | None, str]:
        """(value, variable) of the first of names that is set, trying the
        s-nail variants for this login and relay first: NAME-USER@HOST,
        then NAME-HOST, then NAME (tls-verify, tls-ca-file, ...)."""
        try:
            host: str | None = self.relay().host
        except ConfigError:
            host = None
        _, user, _ = self.auth()
        suffixes = [f"-{user}@{host}"] if user and host else []
        suffixes += [f"-{host}"] if host else []
        for suffix in [*suffixes, ""]:
            for name in names:
                value = self.text(name + suffix)
                if value:
                    return value, name + suffix
        return None, names[0]

    def verify_mode(self) -> str:
        value, name = self.for_relay("tls-verify", "ssl-verify")
        mode = VERIFY_MODES.get((value or "strict").lower())
        if mode is None:
            raise ConfigError(f"{self.origin(name)}: {name}={value} is not "
                              "one of strict, warn, ignore")
        return mode

    def timeout(self) -> float:
        value = self.text("socket-connect-timeout")
        if value is None:
            return DEFAULT_TIMEOUT
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if not (0 < seconds <= MAX_WAIT):
            raise ConfigError(f"{self.origin('socket-connect-timeout')}: "
                              f"socket-connect-timeout={value} is not a "
                              "positive number of seconds")
        return seconds

    def hostname(self) -> str:
        """The name pymail gives itself in EHLO and Message-ID."""
        value = self.text("hostname")
        if value is None:
            found = socket.gethostname()
            return found if HOST_NAME.fullmatch(found or "") else "localhost"
        if not HOST_NAME.fullmatch(value):
            raise ConfigError(f"{self.origin('hostname')}: hostname={value!r}"
                              " is not a host name (letters, digits, - and .)")
        return value

    def dead_letter(self) -> Path | None:
        """Where failed messages go, or None when `nosave` is set."""
        if not self.flag("save"):
            return None
        name = self.text("DEAD") or os.environ.get("DEAD")
        if name:
            return Path(os.path.expanduser(name))
        return home_dir() / "dead.letter"


    # Reliability ----------------------------------------------------------

    def queue_dir(self) -> Path | None:
        """The spool directory when the queue is on (`pymail-queue`); set
        without a value, a directory of the user's."""
        if not self.flag("pymail-queue"):
            return None
        value = self.text("pymail-queue")
        if value:
            return Path(os.path.expanduser(value))
        base = os.environ.get("XDG_STATE_HOME")
        state = Path(base) if base else home_dir() / ".local" / "state"
        return state / "pymail" / "queue"

    def queue_lifetime(self) -> float:
        """Seconds a message may stay queued (`pymail-queue-lifetime`)."""
        value = self.text("pymail-queue-lifetime")
        if value is None:
            return DEFAULT_LIFETIME
        return parse_duration(value, self.origin("pymail-queue-lifetime"),
                              longest=MAX_LIFETIME)

    def deadline(self) -> float:
        """Seconds a whole delivery attempt may take (`pymail-deadline`)."""
        value = self.text("pymail-deadline")
        if value is None:
            return DEFAULT_DEADLINE
        return parse_duration(value, self.origin("pymail-deadline"))


    def all_aliases(self) -> dict[str, list[str]]:
        """mail.rc aliases, then /etc/aliases (or the file named) when
        `pymail-etc-aliases` is set; mail.rc wins."""
        aliases = dict(self.aliases)
        if not self.flag("pymail-etc-aliases"):
            return aliases
        path = Path(self.text("pymail-etc-aliases") or "/etc/aliases")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"pymail-etc-aliases: cannot read {path}: "
                              f"{exc.strerror or exc}") from exc
        for name, members in parse_aliases(text).items():
            aliases.setdefault(name, members)
        return aliases

    def catchall(self) -> str | None:
        """`pymail-catchall`: where mail for any other bare name goes."""
        return self.text("pymail-catchall")

    def delivery_log(self) -> str | None:
        """`pymail-log`: "syslog", a file, or None (no record)."""
        value = self.text("pymail-log")
        return os.path.expanduser(value) if value else None


def parse_aliases(text: str) -> dict[str, list[str]]:
    """/etc/aliases: `name: member, member`, continued on indented lines.
    Members that are files, programs or :include: lists cannot be relayed
    and are left out."""
    entries: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    aliases: dict[str, list[str]] = {}
    for entry in entries:
        name, colon, rest = entry.partition(":")
        if not colon:
            continue
        members = [m.strip() for m in rest.split(",")]
        members = [m for m in members if m and not m.startswith(
            ("|", "/", ":include:", '"|'))]
        if members:
            aliases[name.strip().lower()] = members
    return aliases


def parse_duration(value: str, where: str,
                   longest: float = MAX_WAIT) -> float:
    """Seconds from `3600`, `90m`, `36h` or `5d`, at most `longest`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= longest:
        raise ConfigError(f"{where}: {value!r} is not a duration such as "
                          f"3600, 90m, 36h or 5d, up to {longest / 86400:g} "
                          "days")
    return seconds


def parse_url(value: str, where: str) -> Relay:
    """Parse smtp=host, host:port, smtp://, smtps://, submission(s)://."""
    text = value if "://" in value else "smtp://" + value
    shown = redact_url(value)
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read {shown!r} as an SMTP URL "
                          f"({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"{where}: unknown scheme '{parts.scheme}://' in "
                          f"{shown!r}; use smtps://, smtp:// or "
                          "submission://")
    default_port, implicit, starttls = SCHEMES[scheme]
    try:
        port = default_port if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: bad port in {shown!r}")
    host = parts.hostname
    if not host or not valid_host(host):
        raise ConfigError(f"{where}: no valid host name in {shown!r}",
                          hint="percent-encode a password's @ : / ? # "
                          "characters (%40 %3A %2F %3F %23)")
    # Nothing speaks plain SMTP on 465: it is the implicit TLS port.
    if port == 465:
        implicit, starttls = True, False
    return Relay(host, port, implicit, starttls, where)


def redact_url(value: str) -> str:
    """The value with whatever could be a password replaced, for messages:
    everything between the user's `:` and the last `@`, parseable or not."""
    scheme, separator, rest = value.partition("://")
    if not separator:
        scheme, rest = "", value
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return value
    user = userinfo.partition(":")[0]
    return f"{scheme}{separator}{user}:****@{host}"


def valid_host(host: str) -> bool:
    """A name that can be looked up: IDNA-encodable, or an IP literal."""
    if ":" in host:  # IPv6, from [..]
        return True
    if LDH_NAME.fullmatch(host):
        return True  # as IDNA leaves it; no need to import idna
    try:
        import idna

        idna.encode(host, uts46=True)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def home_dir() -> Path:
    """$HOME, or the home in the password database when HOME is unset."""
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return Path("/")


def default_user() -> str:
    """The local user name, for a From address when nothing else is set."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "root")


def user_rc() -> Path:
    mailrc = os.environ.get("MAILRC")
    return Path(os.path.expanduser(mailrc)) if mailrc else home_dir() / ".mailrc"


def user_env_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    config = Path(base) if base else home_dir() / ".config"
    return config / "pymail" / "pymail.env"


def cache_dir() -> Path:
    """Where pymail keeps what it can rebuild (the hashed CA directory).
    Root's is /var/cache/pymail: under sudo, $HOME may be another user's."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base and os.path.isabs(base):  # a relative one is invalid (XDG)
        return Path(base) / "pymail"
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    return home_dir() / ".cache" / "pymail"


def env_name(key: str) -> str | None:
    """PYMAIL_SMTP_AUTH_PASSWORD -> smtp-auth-password; None if not ours."""
    if not key.startswith(ENV_PREFIX) or key == ENV_FILE_VARIABLE:
        return None
    name = key[len(ENV_PREFIX):].lower().replace("_", "-")
    return UPPER_CASE_NAMES.get(name, name) if name else None


def resolve_variables(*, read_system: bool, assignments: list[str],
                      account: str | None = None,
                      notes: list[str] | None = None) -> Settings:
    """Read every source in order and return the resolved settings."""
    notes = [] if notes is None else notes
    state = RcState()
    state.assign("save", "", "default")
    interpreter = Interpreter(state)

    # 1. The system file, unless -n.
    if read_system:
        _load_rc(interpreter, SYSTEM_RC, notes)
    # 2. The user's file.
    _load_rc(interpreter, user_rc(), notes)
    if account:
        interpreter.apply_account(account)
    # 3. .env files from fixed places only, never the current directory.
    env_files = [SYSTEM_ENV, user_env_file()]
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named:
        env_files.append(Path(named))
    for path in env_files:
        _load_env_file(state, path, required=(path == Path(named or "")),
                       notes=notes, sources=interpreter.sources)
    # 4. The real environment beats the .env files.
    for key, value in os.environ.items():
        name = env_name(key)
        if name:
            _assign_env(state, name, value, f"environment {key}",
                        "environment")
    # 5. -S on the command line beats everything.
    for word in assignments:
        interpreter.set_word(word, f"-S {word.partition('=')[0]}", "-S")

    return Settings(state.variables, state.origins, state.aliases, notes,
                    interpreter.sources, state.secrets, account)


def _load_rc(interpreter: Interpreter, path: Path, notes: list[str]) -> None:
    try:
        interpreter.load_file(path)
    except FileNotFoundError:
        if path == user_rc() and os.environ.get("MAILRC"):
            notes.append(f"MAILRC names {path}, which does not exist")
        return
    except OSError as exc:
        notes.append(f"skipped {path}: {exc.strerror or exc}")
        return
    interpreter.sources.append(str(path))


def _load_env_file(state: RcState, path: Path, *, required: bool,
                   notes: list[str], sources: list[str]) -> None:

    try:
        text = read_regular(path).decode("utf-8", errors="surrogateescape")
        values = _parse_env(text, path)
    except FileNotFoundError as exc:
        if required:
            raise ConfigError(f"{ENV_FILE_VARIABLE} names {path}, "
                              "which does not exist") from exc
        return
    except OSError as exc:
        if required:
            raise ConfigError(f"cannot read {path} ({ENV_FILE_VARIABLE}): "
                              f"{exc.strerror or exc}") from exc
        notes.append(f"skipped {path}: {exc.strerror or exc}")
        return
    sources.append(str(path))
    for key, value in values.items():
        name = env_name(key)
        if name and value is not None:
            if "\0" in value:
                raise ConfigError(f"{path}: {key} holds a NUL byte")
            _assign_env(state, name, value, f"{path} {key}", str(path))


def _parse_env(text: str, path: Path) -> dict[str, str | None]:
    """python-dotenv's reading of a .env file; a line it cannot parse is an
    error naming the file and the line (python-dotenv only logs it)."""
    import io
    import logging as logging_module

    from dotenv import dotenv_values

    problems: list[str] = []

    class Collect(logging_module.Handler):
        def emit(self, record: logging_module.LogRecord) -> None:
            problems.append(record.getMessage())

    logger = logging_module.getLogger("dotenv.main")
    handler = Collect()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        # No interpolation: a password may well contain a `$`.
        values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    for problem in problems:
        line = problem.rpartition(" ")[2]
        raise ConfigError(f"{path}:{line}: a line that is not KEY=value",
                          hint="quote values with spaces or # in them")
    return values


def _assign_env(state: RcState, name: str, value: str, where: str,
                source: str) -> None:
    """An empty value sets nothing (docker and CI give an unset secret as
    PYMAIL_SMTP_AUTH_PASSWORD=): what the files say stands."""
    if name not in BOOLEANS and not value:
        return
    if name in BOOLEANS and value.strip().lower() in FALSE_WORDS:
        state.assign(name, None, where, source)
    elif name in BOOLEANS:
        state.assign(name, "", where, source)
    else:
        state.assign(name, value, where, source)
