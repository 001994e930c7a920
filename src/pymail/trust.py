"""The TLS context: which servers pymail trusts, and how strictly."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

from pymail import cadir, logs
from pymail.errors import ConfigError
from pymail.settings import Settings, cache_dir

log = logs.Logger(__name__)


def make_context(settings: Settings, *, verify: bool | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or newer, SNI, host name checked.

    Trusted: certifi's bundle, the system's default paths (internal relays
    signed by a private CA installed there) and any ssl-ca-file or
    ssl-ca-dir. With verify=False (ssl-verify=ignore), nothing is checked.
    """
    mode = settings.verify_mode()
    if verify is None:
        verify = mode != "ignore" and not fingerprint(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Whatever the verification, nothing older than TLS 1.2 (RFC 8996).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if not settings.flag("tls-ca-no-defaults") and \
            not settings.flag("ssl-no-default-ca"):
        load_default_cas(context)
    _load_ca(context, settings, ("tls-ca-file", "ssl-ca-file"), "cafile")
    _load_ca(context, settings, ("tls-ca-dir", "ssl-ca-dir"), "capath")
    return context


def load_default_cas(context: ssl.SSLContext) -> None:
    """certifi's bundle and what set_default_verify_paths() would add: the
    system's bundle and hashed directory. The bundles come from the hashed
    directory cached for them when there is one (see cadir)."""
    paths = ssl.get_default_verify_paths()
    bundles = [certifi_bundle()]
    if paths.cafile and os.path.realpath(paths.cafile) != \
            os.path.realpath(bundles[0]):
        bundles.append(paths.cafile)
    capath = cadir.hashed_dir(bundles, str(cache_dir()))
    if capath is None:
        context.load_verify_locations(cafile=bundles[0])
        context.set_default_verify_paths()
        return
    context.load_verify_locations(capath=capath)
    # As OpenSSL reads it: SSL_CERT_DIR may list several directories.
    system = os.environ.get(paths.openssl_capath_env) or paths.openssl_capath
    context.load_verify_locations(capath=system)


def certifi_bundle() -> str:
    """certifi's cacert.pem, found without importing certifi, which costs
    more than the rest of the TLS setup; where() when it is not beside the
    package (in a zip, or a distribution's certifi that points elsewhere).

    A where() replaced when certifi is imported (certifi-linux) is not
    consulted: the Mozilla bundle beside it is trusted, as documented, and
    the system's CAs are trusted anyway."""
    import importlib.util

    spec = importlib.util.find_spec("certifi")
    if spec is not None and spec.origin:
        bundle = os.path.join(os.path.dirname(spec.origin), "cacert.pem")
        if os.path.isfile(bundle):
            return bundle
    import certifi

    return certifi.where()


def fingerprint(settings: Settings) -> str | None:
    """tls-fingerprint as lower-case hex: SHA-256 of the certificate, as
    `openssl x509 -noout -fingerprint -sha256` prints it (any case, with
    or without colons, with or without the `SHA256 Fingerprint=` label)."""
    value, name = settings.for_relay("tls-fingerprint", "ssl-fingerprint")
    if not value:
        return None
    text = value.rpartition("=")[2] if "=" in value else value
    text = text.replace(":", "").replace(" ", "").lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(f"{settings.origin(name)}: {name} is not a SHA-256 "
                          "fingerprint (64 hex digits, colons allowed)",
                          hint="openssl x509 -noout -fingerprint -sha256 "
                          "-in cert.pem prints one")
    return text


def digest(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pretty(hexdigest: str) -> str:
    """AB:CD:... as openssl prints it."""
    upper = hexdigest.upper()
    return ":".join(upper[i:i + 2] for i in range(0, len(upper), 2))


def _load_ca(context: ssl.SSLContext, settings: Settings,
             names: tuple[str, ...], kind: str) -> None:
    value, name = settings.for_relay(*names)
    if not value:
        return
    path = Path(value).expanduser()
    where = f"{settings.origin(name)}: {name}={value}"
    if kind == "cafile" and not path.is_file():
        raise ConfigError(f"{where}: no such file")
    if kind == "capath" and not path.is_dir():
        raise ConfigError(f"{where}: no such directory")
    try:
        if kind == "cafile":
            context.load_verify_locations(cafile=str(path))
        else:
            context.load_verify_locations(capath=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}: cannot load certificates: {exc}") from exc
