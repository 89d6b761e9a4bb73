"""One grammar for what a resource may hand to a fence agent: options, addresses, plugs.

The same definitions serve both ends: the CRD's CEL rules are generated from the
regular expressions and key lists below (:func:`options_rules` and friends, carried
by ``json_schema_extra``), and the runtime checks values with the Python functions
of this module before anything reaches a fence agent's stdin.  The expressions use
only syntax that Python's ``re`` and RE2 (CEL's ``matches``) read alike; Python
matches the whole string with ``fullmatch``, CEL anchors with ``^(?:...)$``.

Why so strict: fence-agents read ``key=value`` lines from stdin, and some keys run
commands (``passwd_script``, ``*_path``, ``ssh_options``) or write files
(``debug_file``).  A newline in any value would add such a line.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from hafence.api.base import cel

# --- building blocks ------------------------------------------------------------

_PRINTABLE = r"[\x20-\x7e]*"  # one line of printable ASCII, spaces allowed
# A value char: printable ASCII but space, ',' (separates tokens) and '=' (separates
# key from value).  Spaces only inside a value: fence-agents trim values.
_VCHAR = r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_VCHAR_SP = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]"
OPTION_KEY = r"[a-z0-9][a-z0-9_.-]{0,63}"
OPTION_VALUE = rf"{_VCHAR}(?:{_VCHAR_SP}*{_VCHAR})?"
OPTION_TOKEN = rf"{OPTION_KEY}(?: *= *{OPTION_VALUE})?"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label must hold a letter: '10.0.0.256' is a bad IPv4 address, not a name.
_AN = "[A-Za-z0-9]"
_LAST = (
    rf"(?:[A-Za-z]|{_AN}[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*{_AN}"
    rf"|[A-Za-z][A-Za-z0-9-]*{_AN}|{_AN}[A-Za-z0-9-]*[A-Za-z])"
)
HOSTNAME = rf"(?:{_LABEL}\.)*{_LAST}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{IPV4})"
# RFC 3986's IPv6address, without zone identifiers.
IPV6 = (
    "(?:"
    + "|".join(
        (
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        )
    )
    + ")"
)
# An outlet number, a blade slot, a Redfish system id or a VM name.
PLUG = r"[A-Za-z0-9_.:/@+-]+(?: [A-Za-z0-9_.:/@+-]+)*"
CLUSTER = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
HOST_KEY = (
    r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,3}"
    r"(?: [\x20-\x7e]*)?"  # the comment of a .pub line, ignored
)

# --- option keys that a resource may not set -----------------------------------
# Names as fence-agents spell them (``fence_X -o metadata``); '-' and '_' are the
# same to fence-agents, so keys are compared with '-' read as '_'.
CREDENTIAL_KEYS: tuple[str, ...] = (
    "username",
    "login",
    "password",
    "passwd",
    "password_script",
    "passwd_script",
    "snmp_priv_passwd",
    "snmp_priv_passwd_script",
    "community",
    "identity_file",
    "hexadecimal_kg",
    "secret_key",
    "access_key",
    "apikey",
    "token",
    "token_file",
    "tlskey",
    "cookie_file",
)
# Keys that run a program, pass arguments to one, or read/write a file on the host
# that runs the agent (the operator, or a proxy hypervisor).
HOST_KEYS: tuple[str, ...] = (
    "exec",
    "ssh_options",
    "debug",
    "debug_file",
    "logfile",
    "status_file",
    "kubeconfig",
    "openrc",
    "runonwarn",
    "runonfail",
    "use_sudo",
    "sudo",
)
HOST_KEY_SUFFIX = "_path"  # ssh_path, ipmitool_path, snmpget_path, sudo_path, ...
# Keys the spec's own fields set.
RESERVED_KEYS: dict[str, str] = {
    "action": "hafence chooses the action",
    "ip": "use spec.address",
    "ipaddr": "use spec.address",
    "plug": "use spec.plug",
    "port": "use spec.plug for an outlet or slot, spec.port for the TCP port",
}

# Bounded so that the CEL rules stay inside the API server's cost budget; oVirt's
# longest usual strings are under 100 characters.
OPTIONS_MAX = 150
OPTIONS_EXAMPLE = "'lanplus=1,power_wait=4' or 'ssl=yes, ssl_insecure=yes'"
MSG_OPTIONS_CHARS = (
    "options must be one line of printable ASCII: no line breaks, tabs or other "
    f"control characters, e.g. {OPTIONS_EXAMPLE}"
)
MSG_OPTIONS_EMPTY = (
    "options has an empty entry (a leading, trailing or doubled comma): "
    f"write key=value pairs separated by single commas, e.g. {OPTIONS_EXAMPLE}"
)
MSG_OPTIONS_TOKEN = (
    "is not a fence-agent option: write a lower-case name, optionally '=' and one "
    "value without ',' or '=' (no leading '--'), e.g. lanplus=1 or ssl_insecure"
)
MSG_CREDENTIAL = (
    "is a credential: put the username and password in the Secret named by "
    "spec.credentialsSecretRef (for SNMP v1/v2c the Secret's password is the community), "
    "never in spec.options"
)
MSG_HOST_KEY_OPT = (
    "is not allowed: it runs a program or reads or writes a file on the host that runs "
    "the fence agent"
)
MSG_DUPLICATE = "options names a key twice: give each option once"


def _cel_re(regex: str) -> str:
    if "'" in regex:
        raise ValueError("grammar regexes must not contain a quote")
    return f"r'^(?:{regex})$'"


def cel_str(text: str) -> str:
    """``text`` as a CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quoted(what: str, expr: str, tail: str) -> str:
    """A messageExpression: ``what 'VALUE' tail`` with VALUE computed by ``expr``."""
    return f"{cel_str(what + ' ' + chr(39))} + {expr} + {cel_str(chr(39) + ' ' + tail)}"


def matches(regex: str, value: str) -> bool:
    return re.fullmatch(regex, value) is not None


# --- options ----------------------------------------------------------------------


def option_key_name(token: str) -> str:
    """The key of one ``key[=value]`` token as fence-agents read it."""
    return token.split("=", 1)[0].strip().replace("-", "_")


def forbidden_key(name: str) -> str | None:
    """Why an option key may not come from a resource, or None."""
    if name in CREDENTIAL_KEYS:
        return MSG_CREDENTIAL
    if name in HOST_KEYS or name.endswith(HOST_KEY_SUFFIX):
        return MSG_HOST_KEY_OPT
    if name in RESERVED_KEYS:
        return f"is set by hafence: {RESERVED_KEYS[name]}"
    return None


def options_error(text: str) -> str | None:
    """The first thing wrong with an options string, as the API server words it."""
    if not matches(_PRINTABLE, text):
        return MSG_OPTIONS_CHARS
    if not text.strip():
        return None
    tokens = [t.strip() for t in text.split(",")]
    if any(not t for t in tokens):
        return MSG_OPTIONS_EMPTY
    for token in tokens:
        if not matches(OPTION_TOKEN, token):
            return f"option {token!r} {MSG_OPTIONS_TOKEN}"
    for token in tokens:
        why = forbidden_key(option_key_name(token))
        if why:
            return f"option {option_key_name(token)!r} {why}"
    keys = [option_key_name(t) for t in tokens]
    if len(set(keys)) != len(keys):
        return MSG_DUPLICATE
    return None


def parse_options(text: str) -> list[tuple[str, str | None]]:
    """``'ssl=yes, lanplus'`` -> ``[('ssl', 'yes'), ('lanplus', None)]``; ValueError if bad."""
    error = options_error(text)
    if error:
        raise ValueError(error)
    out: list[tuple[str, str | None]] = []
    if not text.strip():
        return out
    for token in text.split(","):
        key, sep, value = token.partition("=")
        out.append((key.strip().replace("-", "_"), value.strip() if sep else None))
    return out


_KEYS_CEL = "self.split(',').map(t, t.split('=')[0].trim().replace('-', '_'))"


# Duplicate keys, in linear cost (the API server refuses a quadratic rule): in
# ',' + the string without spaces + ',', a key starts a token exactly where ',KEY=' or
# ',KEY,' stands, and values hold no ',' or '='.
_FLAT = "(',' + self.replace(' ', '').replace('-', '_') + ',')"
_KEY_T = "t.split('=')[0].trim().replace('-', '_')"
_once = " && ".join(
    (
        f"{_FLAT}.indexOf(',' + {_KEY_T} + '=') == {_FLAT}.lastIndexOf(',' + {_KEY_T} + '=')",
        f"{_FLAT}.indexOf(',' + {_KEY_T} + ',') == {_FLAT}.lastIndexOf(',' + {_KEY_T} + ',')",
        f"!({_FLAT}.contains(',' + {_KEY_T} + '=') && {_FLAT}.contains(',' + {_KEY_T} + ','))",
    )
)


def _list(names: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def options_rules() -> list[dict[str, Any]]:
    """The CEL rules of an options string; the same checks as :func:`options_error`."""
    tokens = "self.split(',')"
    nonempty = f"{tokens}.all(t, t.trim() != '')"
    bad_token = f"!t.trim().matches({_cel_re(OPTION_TOKEN)})"
    return [
        cel(f"self.matches({_cel_re(_PRINTABLE)})", MSG_OPTIONS_CHARS),
        cel(f"self.trim() == '' || {nonempty}", MSG_OPTIONS_EMPTY),
        cel(
            f"self.trim() == '' || {tokens}.all(t, t.trim() == '' || !({bad_token}))",
            f"an option {MSG_OPTIONS_TOKEN}",
            messageExpression=quoted(
                "option",
                f"{tokens}.filter(t, t.trim() != '' && {bad_token})[0].trim()",
                MSG_OPTIONS_TOKEN,
            ),
        ),
        cel(
            f"self.trim() == '' || !{_KEYS_CEL}.exists(k, k in {_list(CREDENTIAL_KEYS)})",
            f"an option {MSG_CREDENTIAL}",
            messageExpression=quoted(
                "option", f"{_KEYS_CEL}.filter(k, k in {_list(CREDENTIAL_KEYS)})[0]", MSG_CREDENTIAL
            ),
        ),
        cel(
            f"self.trim() == '' || !{_KEYS_CEL}.exists(k, k in {_list(HOST_KEYS)} "
            f"|| k.endsWith('{HOST_KEY_SUFFIX}'))",
            f"an option {MSG_HOST_KEY_OPT}",
            messageExpression=quoted(
                "option",
                f"{_KEYS_CEL}.filter(k, k in {_list(HOST_KEYS)} "
                f"|| k.endsWith('{HOST_KEY_SUFFIX}'))[0]",
                MSG_HOST_KEY_OPT,
            ),
        ),
        cel(
            f"self.trim() == '' || !{_KEYS_CEL}.exists(k, k in {_list(list(RESERVED_KEYS))})",
            "options may not set action, ip, ipaddr, plug or port: they come from "
            "spec.address, spec.plug and spec.port",
        ),
        cel(f"self.trim() == '' || {tokens}.all(t, t.trim() == '' || {_once})", MSG_DUPLICATE),
    ]


# --- addresses, plugs, names ----------------------------------------------------------

ADDRESS_EXAMPLE = "bmc1.example.net, 192.0.2.10 or 2001:db8::10"
MSG_ADDRESS_URL = "is a URL: give only the host name or IP address (the port goes in spec.port)"
MSG_ADDRESS = (
    "is not a host name, an IPv4 or an IPv6 address (one address: no URL, port, path, "
    f"spaces or second name), e.g. {ADDRESS_EXAMPLE}"
)


def address_error(value: str) -> str | None:
    if "://" in value:
        return f"address {value!r} {MSG_ADDRESS_URL}"
    if not (matches(HOSTNAME, value) or matches(IPV4, value) or matches(IPV6, value)):
        return f"address {value!r} {MSG_ADDRESS}"
    return None


def address_rules() -> list[dict[str, Any]]:
    ok = " || ".join(f"self.matches({_cel_re(r)})" for r in (HOSTNAME, IPV4, IPV6))
    return [
        cel(
            "!self.contains('://')",
            f"address {MSG_ADDRESS_URL}",
            messageExpression=quoted("address", "self", MSG_ADDRESS_URL),
        ),
        cel(
            ok,
            f"address {MSG_ADDRESS}",
            messageExpression=quoted("address", "self", MSG_ADDRESS),
        ),
    ]


MSG_PLUG = (
    "is not an outlet, slot or system name: letters, digits and _.:/@+- with single "
    "spaces between words, e.g. 12, blade3 or /redfish/v1/Systems/2"
)


def _one_regex(what: str, regex: str, message: str) -> tuple[Any, Any]:
    """The runtime check and the CEL rules of a field that is one regex."""

    def error(value: str) -> str | None:
        return None if matches(regex, value) else f"{what} {value!r} {message}"

    def rules() -> list[dict[str, Any]]:
        return [
            cel(
                f"self.matches({_cel_re(regex)})",
                f"{what} {message}",
                messageExpression=quoted(what, "self", message),
            )
        ]

    return error, rules


plug_error, plug_rules = _one_regex("plug", PLUG, MSG_PLUG)


MSG_CLUSTER = (
    "is not a cluster name: lower-case letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters, e.g. prod-a"
)


cluster_error, cluster_rules = _one_regex("cluster", CLUSTER, MSG_CLUSTER)


MSG_HOST_KEY = (
    "is not an SSH public key: paste one line 'TYPE BASE64 [comment]' as in "
    "/etc/ssh/ssh_host_ed25519_key.pub, TYPE one of ssh-ed25519, ssh-rsa, "
    "ecdsa-sha2-nistp256/384/521"
)


def host_key_error(value: str) -> str | None:
    return None if matches(HOST_KEY, value.strip()) else f"hostKey {MSG_HOST_KEY}"


def host_key_rules() -> list[dict[str, Any]]:
    return [cel(f"self.trim().matches({_cel_re(HOST_KEY)})", f"hostKey {MSG_HOST_KEY}")]


def host_key_material(value: str) -> str:
    """'TYPE BASE64' of a pasted key line, its comment dropped."""
    return " ".join(value.split()[:2])


# --- pydantic types: the runtime check and the CRD rule side by side ------------------


def _checked(error: Any) -> AfterValidator:
    def check(value: str) -> str:
        message = error(value)
        if message:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _extra(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"x-kubernetes-validations": rules}


Address = Annotated[
    str,
    Field(min_length=1, max_length=253, json_schema_extra=_extra(address_rules())),
    _checked(address_error),
]
Plug = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra=_extra(plug_rules())),
    _checked(plug_error),
]
OptionsText = Annotated[
    str,
    Field(max_length=OPTIONS_MAX, json_schema_extra=_extra(options_rules())),
    _checked(options_error),
]
ClusterName = Annotated[
    str,
    Field(min_length=1, max_length=63, json_schema_extra=_extra(cluster_rules())),
    _checked(cluster_error),
]
HostKeyLine = Annotated[
    str,
    Field(max_length=8192, json_schema_extra=_extra(host_key_rules())),
    _checked(host_key_error),
]


# --- libvirt: where a VM's domain lives, and what its XML may be ------------------------

# A host agent runs its VMs on its own host: a local qemu daemon only.  A remote URI
# would run the VM elsewhere than its placement says (S1), and libvirt's ext and ssh
# transports run a program named in the URI itself (``?command=``, ``?netcat=``).
LIBVIRT_URI = r"qemu(?:\+unix)?:///(?:system|session)(?:\?socket=/[A-Za-z0-9._/-]+)?"
MSG_LIBVIRT_URI = (
    "is not a local qemu daemon: qemu:///system, qemu:///session or "
    "qemu+unix:///system?socket=/PATH (a host agent runs VMs on its own host only)"
)
libvirt_uri_error, libvirt_uri_rules = _one_regex("uri", LIBVIRT_URI, MSG_LIBVIRT_URI)

# A production domain definition is a few KiB; the cap keeps objects (and the agent's
# parse) small.  CEL cannot parse XML: the agent checks the elements (agent/domain_policy.py),
# the API refuses early what is never right.
DOMAIN_XML_MAX = 65536
# What an XML DTD can declare: entities (expanded by one parser and not another) and
# default attributes (a <disk> whose type the text never shows).
_DTD_RE = r"<!(?:DOCTYPE|ENTITY|ATTLIST|ELEMENT)"
MSG_DOMAIN_XML_DTD = (
    "domainXML carries a DOCTYPE or an entity/attribute declaration: the agent refuses "
    "DTDs; give the <domain> element without one"
)
MSG_DOMAIN_XML_ROOT = (
    "domainXML is not a libvirt domain definition: it must start with <domain "
    "(an <?xml ...?> declaration may come first), as `virsh dumpxml --inactive` prints"
)
_DOMAIN_ROOT_RE = r"^\s*(?:<\?xml[^>]*\?>\s*)?<domain[\s>]"  # a prefix


def domain_xml_error(value: str) -> str | None:
    if re.search(_DTD_RE, value):
        return MSG_DOMAIN_XML_DTD
    if not re.match(_DOMAIN_ROOT_RE, value):
        return MSG_DOMAIN_XML_ROOT
    return None


def domain_xml_rules() -> list[dict[str, Any]]:
    return [
        cel(f"!self.matches(r'{_DTD_RE}')", MSG_DOMAIN_XML_DTD),
        cel(f"self.matches(r'{_DOMAIN_ROOT_RE}')", MSG_DOMAIN_XML_ROOT),
    ]


LibvirtURI = Annotated[
    str,
    Field(min_length=1, max_length=253, json_schema_extra=_extra(libvirt_uri_rules())),
    _checked(libvirt_uri_error),
]
DomainXMLText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DOMAIN_XML_MAX,
        json_schema_extra=_extra(domain_xml_rules()),
        description="A libvirt <domain> definition.  The agent defines only a safe subset "
        "(file disks under its image directories, network/bridge interfaces, pty "
        "consoles; no host devices, host paths or qemu arguments) unless started with "
        "--libvirt-unrestricted-domain-xml; see docs/deploy.md, Security notes.",
    ),
    _checked(domain_xml_error),
]


# --- Redfish: the one system of a service's Systems collection ---------------------------

REDFISH_SYSTEMS = "/redfish/v1/Systems/"
# One id (at least one character that is not a dot: no way up), a trailing '/' as some
# BMCs list it; as an id alone or as the full path.
REDFISH_SYSTEM_ID = r"[A-Za-z0-9_.:@+-]*[A-Za-z0-9_:@+-][A-Za-z0-9_.:@+-]*/?"
REDFISH_SYSTEM = rf"(?:{REDFISH_SYSTEMS})?{REDFISH_SYSTEM_ID}"
REDFISH_TYPES = ("redfish", "fence_redfish")
MSG_REDFISH_SYSTEM = (
    f"is not a Redfish system: give its id or {REDFISH_SYSTEMS}ID, e.g. 1 or "
    f"{REDFISH_SYSTEMS}System.Embedded.1"
)


def redfish_plug_rule() -> dict[str, Any]:
    types = ", ".join(cel_str(t) for t in REDFISH_TYPES)
    return cel(
        f"!has(self.plug) || !(self.type in [{types}])"
        f" || self.plug.matches({_cel_re(REDFISH_SYSTEM)})",
        f"plug {MSG_REDFISH_SYSTEM}",
        messageExpression=quoted("plug", "self.plug", MSG_REDFISH_SYSTEM),
        fieldPath=".plug",
    )
