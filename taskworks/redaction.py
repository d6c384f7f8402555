"""Hide secrets in what taskworks stores, sends and prints: the one place for it.

- ``Redactor``: the values of secret-looking keys in task arguments and settings (the
  journal, ``/api/dlq`` and ``taskworks dlq show``, ``taskworks doctor``);
- ``redact_url``: a URL's password and secret-looking query values, for configuration
  shown to its operator (doctor, settings errors);
- ``url_for_display``: a URL with no credentials and no query values, for URLs in errors
  (``HttpCallError``), which travel further (journal, dead letters, notifications);
- ``redact_text`` / ``error_message``: free text (exception messages, tracebacks, log
  lines): SQLAlchemy's bound parameters, the values PostgreSQL quotes in its messages,
  URLs as ``url_for_display`` shows them, ``password=...`` pairs and bearer tokens;
- ``redact_settings``: the settings as ``taskworks doctor`` prints them.

Everything here is textual and never raises on odd input: a redaction that fails would
lose the error it was meant to clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["MASK", "SECRET_WORDS", "Redactor", "error_message", "redact_settings", "redact_text",
           "redact_url", "url_for_display"]

MASK = "***"
#: key words that mark a value as secret (substring, case-insensitive; '-' counts as '_'
#: so that a header such as X-Api-Key matches api_key)
SECRET_WORDS = ("password", "passwd", "token", "secret", "api_key", "apikey",
                "authorization", "credential", "private_key")


def _words_pattern(words: Iterable[str]) -> str:
    return "|".join(re.escape(w.replace("-", "_")) for w in words)


class Redactor:
    """Replaces the values of keys that look secret, at any depth of dicts and lists;
    a string holding a URL loses its password and secret query values (``redact_url``)."""

    def __init__(self, words: Iterable[str] = SECRET_WORDS) -> None:
        pattern = _words_pattern(words)
        self._pattern = re.compile(pattern, re.IGNORECASE) if pattern else None

    def is_secret(self, key: object) -> bool:
        return self._pattern is not None and isinstance(key, str) \
            and self._pattern.search(key.replace("-", "_")) is not None

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: MASK if self.is_secret(k) and v is not None else self._walk(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        if isinstance(value, str) and "://" in value:
            # a URL given as an argument (http_call's, a DSN) under a harmless key
            return redact_url(value)
        return value


_SECRET_KEYS = Redactor()


# -- URLs -----------------------------------------------------------------------------
# the userinfo runs to the last @ of the authority: an unencoded @ in a password is hidden
_PASSWORD = re.compile(r"(://[^:/?#@]*:)[^/?#]*@")
_SPLIT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", re.DOTALL)


def redact_url(url: str) -> str:
    """Hide the password in a URL (user:password@ and ?password=...), for printing.

    Textual, so the rest stays as written and a URL no parser accepts (a port that is
    not a number, an unencoded @ in the password) is still redacted.
    """
    shown = _PASSWORD.sub(r"\1***@", url, count=1)
    for key, _ in parse_qsl(shown.partition("?")[2], keep_blank_values=True):
        if _SECRET_KEYS.is_secret(key):
            shown = re.sub(rf"([?&]{re.escape(key)}=)[^&#]*", r"\g<1>***", shown)
    return shown


def _mask_pairs(part: str) -> str:
    """``a=1&b=2`` as ``a=***&b=***``; a bare value (``?abc``) as ``***``."""
    pairs = []
    for pair in re.split(r"([&;])", part):
        if pair in ("&", ";", ""):
            pairs.append(pair)
        else:
            key, eq, _ = pair.partition("=")
            pairs.append(f"{key}={MASK}" if eq else MASK)
    return "".join(pairs)


def url_for_display(url: str, *, keep_path: bool = True) -> str:
    """The URL without credentials and with every query value as ``***``, for errors.

    ``keep_path=False`` hides the path too: where the path is the secret (a Slack
    webhook URL). Textual like ``redact_url``.
    """
    match = _SPLIT.match(url)
    if match is None and not keep_path:
        return MASK
    scheme, authority, rest = match.groups() if match else ("", "", url)
    if "@" in authority:  # user:password@ or a token as the user name
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    rest, hash_, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    if not keep_path:
        return f"{scheme}{authority}" + (f"/{MASK}" if path.strip("/") or query else "")
    if "=" in fragment:  # #access_token=... (OAuth); a plain #anchor stays
        fragment = _mask_pairs(fragment)
    return f"{scheme}{authority}{path}{question}{_mask_pairs(query)}{hash_}{fragment}"


# -- free text --------------------------------------------------------------------------
#: the secret words as running text spells them: X-Api-Key, private-key
_WORDS = "|".join(re.escape(w).replace("_", "[_-]") for w in SECRET_WORDS)
#: SQLAlchemy's "[parameters: {...}]": a repr, so always one line
_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
#: SQLAlchemy's "[SQL: ...]" (may span lines): its quoted literals are masked
_SQL = re.compile(r"\[SQL: .*?(?:\](?=\n\[|\n\(Background on this error|\s*\Z)|\Z)",
                  re.DOTALL)
_LITERAL = re.compile(r"'(?:[^']|'')*'")
#: a URL in running text; trailing punctuation is the sentence's, not the URL's
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_TRAILING = ".,:;!?)]}"
#: a key holding a secret word, from the start of a word (or a quote) and bounded: no
#: text makes the search quadratic
_KEY = rf"[\w.-]{{0,64}}(?:{_WORDS})[\w.-]{{0,64}}"
_VALUE = r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|[^\s,;&)}\]'"]+)"""
#: password=hunter2 (a DSN, a query), 'password': 'x' and "token": "x" (a repr, JSON);
#: not "token: x", which is prose as often as not
_PAIR = re.compile(
    rf"""((?<![\w.-]){_KEY}\s*=\s*|(['"]){_KEY}\2\s*[:=]\s*)"""
    # not a placeholder (password = %(password)s, :token, $1, ?) nor what is masked already
    + r"(?!%\(|:\w|\$\d|\?|\*\*\*)" + _VALUE, re.IGNORECASE)
#: an Authorization header's credentials: a word with a digit or a base64/JWT character
_BEARER = re.compile(r"\b(Bearer|Basic)\s+(?=\S*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}",
                     re.IGNORECASE)


#: the messages in which PostgreSQL quotes the offending values: (where the message
#: starts, where the value starts, where it ends, whether at that text's last occurrence
#: on the line rather than its first after the value)
_PG_VALUES = (
    # DETAIL:  Key (email)=(a@b.c) already exists. / is not present / conflicts with ...
    ("Key (", ")=(", ")", True),
    # DETAIL:  Failing row contains (1, x, null).
    ("Failing row contains (", "Failing row contains (", ")", True),
    # invalid input syntax for type integer: "x" / invalid input value for enum e: "x"
    ("invalid input ", ': "', '"', True),
    # DETAIL:  Token "x" is invalid. / CONTEXT:  JSON data, line 1: x (a json value)
    ('Token "', 'Token "', '" is invalid', False),
    ("JSON data, line ", ": ", "", True),
    # value "x" is out of range for type integer / ... out of range: "x"
    ('value "', 'value "', '" is out of range', False),
    ("out of range: ", 'out of range: "', '"', True),
)
_PG_MARKERS = tuple(marker for marker, *_ in _PG_VALUES)
#: one search tells whether anything here may apply (log lines rarely need more)
_ANY = re.compile("|".join(re.escape(m) for m in ("[parameters: ", "[SQL: ", *_PG_MARKERS))
                  + rf"|://|Bearer|Basic|{_WORDS}", re.IGNORECASE)


def _pg_values(line: str) -> str:
    """``line`` with the values PostgreSQL quotes masked. String search, not regular
    expressions: linear whatever the line (an error message may be any text)."""
    for marker, opening, closing, last in _PG_VALUES:
        at = line.find(marker)
        begin = line.find(opening, at) if at >= 0 else -1
        if begin < 0:
            continue
        begin += len(opening)
        end = line.rfind(closing) if last else line.find(closing, begin)
        if end >= begin:
            line = line[:begin] + MASK + line[end:]
    return line


def _display_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    core = url.rstrip(_TRAILING)
    return url_for_display(core) + url[len(core):]


def _quoted_mask(match: re.Match[str]) -> str:
    value = match.group(3)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def redact_text(text: str) -> str:
    """``text`` (an exception message, a traceback, a log line) without the values it
    may carry: SQL parameters, quoted values in PostgreSQL's messages, URL credentials
    and query values, secret-looking ``key=value`` pairs and bearer tokens."""
    if not _ANY.search(text):
        return text
    if "[parameters: " in text:
        text = _PARAMETERS.sub(f"[parameters: {MASK}]", text)
    if "[SQL: " in text:
        text = _SQL.sub(lambda m: _LITERAL.sub(f"'{MASK}'", m.group(0)), text)
    if any(marker in text for marker in _PG_MARKERS):
        text = "\n".join(_pg_values(line) for line in text.split("\n"))
    if "://" in text:
        text = _URL.sub(_display_in_text, text)
    text = _PAIR.sub(_quoted_mask, text)
    return _BEARER.sub(rf"\1 {MASK}", text)


def error_message(exc: BaseException) -> str:
    """The text of ``exc`` as taskworks stores and sends it (journal, dead letters,
    notifications, breakers): ``str(exc)`` through ``redact_text``."""
    return redact_text(str(exc))


# -- settings ---------------------------------------------------------------------------
def redact_settings(data: Mapping[str, Any], words: Iterable[str] = ()) -> dict[str, Any]:
    """Settings (``model_dump(mode="json")``) fit to print: secret keys (SECRET_WORDS and
    ``words``) masked, URLs through ``redact_url``, every webhook header value masked
    and the webhook URL's path hidden (it is often the secret itself)."""
    shown: dict[str, Any] = Redactor([*SECRET_WORDS, *words])(dict(data))
    notify = shown.get("notify")
    webhook = notify.get("webhook") if isinstance(notify, dict) else None
    if isinstance(webhook, dict):
        if isinstance(webhook.get("url"), str):
            webhook["url"] = url_for_display(webhook["url"], keep_path=False)
        if isinstance(webhook.get("headers"), dict):
            webhook["headers"] = dict.fromkeys(webhook["headers"], MASK)
    return shown
