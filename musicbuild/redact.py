"""Keep secrets out of everything musicbuild prints or writes: one function, every form.

A secret is the value of an environment variable whose name says it holds one (``*_API_KEY``,
``*_TOKEN``, ``*_SECRET*``, ``*_PASSWORD``, ``*_AUTH``, ...), the password in the userinfo of a
URL held by any environment variable (``MUSICBUILD_REMOTE_CACHE=https://ci:pw@cache/``), or a
value registered with ``remember`` (a key read from a provider's ``api_key_env``, a URL password
from the manifest or the command line). Services echo keys back in many shapes, so each secret is
found as:

- itself;
- URL-encoded (``quote`` and ``quote_plus``, hex digits in either case);
- hex (either case);
- base64, standard and URL-safe, with or without padding, at each of the three byte alignments, so
  the base64 of ``Bearer <key>`` or ``<user>:<key>`` (HTTP Basic) is found too: the whole base64
  word that contains it is replaced.

A secret found is replaced by ``$NAME`` (the variable that holds it) or ``***``. Secrets shorter
than 6 characters are not looked for: they would match ordinary words.
"""
from __future__ import annotations

import base64
import functools
import os
import re
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, quote_plus, urlsplit

MIN_LENGTH = 6
_SECRET_NAME = re.compile(r"(?i)(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)(?:$|_)")
_NOT_SECRET_NAME = re.compile(r"(?i)_(?:SOCK|FILE|PATH|DIR|ID|NAME|ENV|URL|TYPE|REGION|PROFILE)$")
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:([^/@\s]+)@")
_B64_CHARS = "[A-Za-z0-9+/_-]"

_remembered: dict[str, str] = {}  # secret -> label, added at run time


def remember(value: str | None, label: str = "***") -> None:
    """Treat ``value`` as a secret from now on (e.g. a key named by a provider's ``api_key_env``)."""
    value = (value or "").strip()
    if len(value) >= MIN_LENGTH and value not in _remembered:
        _remembered[value] = label


def remember_url(url: str | None) -> None:
    """Register the password of ``url``'s userinfo, if it has one."""
    for password in _USERINFO.findall(url or ""):
        remember(password)


def remember_config(key_envs: Iterable[str | None], urls: Iterable[str | None],
                    env: Mapping[str, str] | None = None) -> None:
    """Register the keys held by the variables a manifest names (``api_key_env``) and URL passwords."""
    env = os.environ if env is None else env
    for name in key_envs:
        if name:
            remember(env.get(name), f"${name}")
    for url in urls:
        remember_url(url)


def secrets(env: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """(secret, label) pairs, longest first."""
    env = os.environ if env is None else env
    found = dict(_remembered)
    for name, value in env.items():
        for password in _USERINFO.findall(value):
            found.setdefault(password, "***")
        if _SECRET_NAME.search(name) and not _NOT_SECRET_NAME.search(name):
            for part in {value.strip(), *value.strip().split(":", 1)[1:]}:  # user:password pairs
                if len(part) >= MIN_LENGTH:
                    found.setdefault(part, f"${name}")
    return tuple(sorted(found.items(), key=lambda kv: (-len(kv[0]), kv[0])))


def redact(text: str, env: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> str:
    """``text`` with every form of every secret replaced by its label."""
    pairs = secrets(env)
    if extra:
        pairs = tuple(sorted({**dict(pairs), **{k: v for k, v in extra.items() if len(k) >= 4}}.items(),
                             key=lambda kv: (-len(kv[0]), kv[0])))
    if not pairs or not text:
        return text
    return _redactor(pairs)(text)


def redactor(env: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """``redact`` with the secrets looked up once, for many texts (a report written row by row)."""
    pairs = secrets(env)
    if not pairs:
        return lambda text: text
    replace = _redactor(pairs)
    return lambda text: replace(text) if text else text


def redact_data(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Every string inside ``value`` (mappings, lists) redacted."""
    if isinstance(value, str):
        return redact(value, env)
    if isinstance(value, dict):
        return {k: redact_data(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, env) for v in value]
    return value


def url_without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed (what may be shown or stored)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: m.group(0).split("://")[0] + "://", url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _forms(secret: str) -> list[str]:
    """Regex alternatives matching ``secret`` in every encoding we look for."""
    raw = secret.encode("utf-8", "surrogateescape")
    forms = [re.escape(secret), "(?i:" + re.escape(raw.hex()) + ")"]
    for quoted in {quote(secret, safe=""), quote_plus(secret, safe="")} - {secret}:
        forms.append(re.sub(r"%([0-9A-F]{2})", lambda m: f"%(?i:{m.group(1)})", re.escape(quoted).replace("\\%", "%")))
    for offset in range(3):
        size = offset + len(raw)
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        core = encoded[4 if offset else 0: 4 * (size // 3)]  # the characters that depend on the secret alone
        if len(core) >= 8:
            for variant in {core, core.replace("+", "-").replace("/", "_")}:
                forms.append(f"{_B64_CHARS}*{re.escape(variant)}{_B64_CHARS}*=*")
    return forms


@functools.lru_cache(maxsize=32)
def _redactor(pairs: tuple[tuple[str, str], ...]) -> Any:
    groups = [f"(?P<s{i}>{'|'.join(_forms(secret))})" for i, (secret, _) in enumerate(pairs)]
    pattern = re.compile("|".join(groups))
    labels = [label for _, label in pairs]
    return functools.partial(pattern.sub, lambda m: labels[int(m.lastgroup[1:])])


class RedactingStream:
    """A text stream (stdout, stderr) that redacts everything written through it."""

    def __init__(self, stream: Any, env: Mapping[str, str] | None = None) -> None:
        self._stream = stream
        self._env = env
        self._known = -1  # how many remembered secrets the redactor was built with
        self._redact: Any = None

    def write(self, text: str) -> int:
        if self._known != len(_remembered):
            self._known = len(_remembered)
            pairs = secrets(self._env)
            self._redact = _redactor(pairs) if pairs else None
        return self._stream.write(self._redact(text) if self._redact and text else text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
