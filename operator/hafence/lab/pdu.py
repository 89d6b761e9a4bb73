"""An APC switched rack PDU (AP79xx, PowerNet MIB) answering SNMP v1/v2c on loopback UDP.

Debian's ``fence_apc_snmp`` drives it through net-snmp's snmpwalk/snmpget/snmpset:
it walks ``sysObjectID`` (``.1.3.6.1.4.1.318.1.3.4.5`` = rPDU: snmpwalk of a scalar
returns nothing and then GETs it), reads ``rPDUOutletStatusOutletState.N`` (1 on,
2 off) and writes ``rPDUOutletControlOutletCommand.N`` (1 immediateOn, 2 immediateOff,
3 immediateReboot); an outlet given by name is found by walking
``rPDUOutletStatusOutletName``.  So the emulator answers GET, GETNEXT (GETBULK for
v2c walks) and SET, with the read community for reads and the write community for
everything.

This is the protocol's own BER, written here rather than snmpsim or snmpd with a pass
script: each outlet's power must act on the lab's virtual host in this process, the
way :mod:`hafence.lab.bmc` does (``on_power_change``), and failures are switches on
the object (``dead``: no answer; ``refuse_writes``: SETs answered noAccess/readOnly,
a PDU whose write community was changed).  Each outlet is a
:class:`~hafence.lab.power.SimulatedPower`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from hafence.lab.power import Action, PowerCallback, SimulatedPower

Oid = tuple[int, ...]
Value = tuple[int, bytes]  # BER tag, encoded content

SYS_DESCR: Oid = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 2, 1, 1, 2, 0)
APC_RPDU: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 3, 4, 5)
OUTLET_NAME: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 2)
OUTLET_STATE: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 4)
OUTLET_CONTROL: Oid = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1, 4)

_INT, _OCTETS, _NULL, _OID, _SEQ = 0x02, 0x04, 0x05, 0x06, 0x30
_GET, _GETNEXT, _RESPONSE, _SET, _GETBULK = 0xA0, 0xA1, 0xA2, 0xA3, 0xA5
_NO_SUCH_NAME, _READ_ONLY, _NO_ACCESS, _WRONG_VALUE = 2, 4, 6, 10
_END_OF_MIB = 0x82


# -- BER ------------------------------------------------------------------------------
def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _int(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)


def _oid(oid: Oid) -> bytes:
    out = bytearray([40 * oid[0] + oid[1]])
    for arc in oid[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def _read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the TLV at ``pos``."""
    tag, n = data[pos], data[pos + 1]
    pos += 2
    if n & 0x80:
        width = n & 0x7F
        n = int.from_bytes(data[pos : pos + width], "big")
        pos += width
    return tag, data[pos : pos + n], pos + n


def _items(content: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(content):
        tag, value, pos = _read(content, pos)
        out.append((tag, value))
    return out


def _decode_oid(raw: bytes) -> Oid:
    arcs, value = [raw[0] // 40, raw[0] % 40], 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return tuple(arcs)


class ApcPdu:
    """One PDU: its outlets, an SNMP agent on 127.0.0.1:``port`` served by one thread."""

    def __init__(
        self, name: str, *, read_community: str = "public", write_community: str = "private"
    ) -> None:
        self.name = name
        self.read_community, self.write_community = read_community, write_community
        self.outlets: dict[int, SimulatedPower] = {}
        self.outlet_names: dict[int, str] = {}
        self.dead = False
        self.refuse_writes = False
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"pdu-{name}", daemon=True)
        self._thread.start()

    def add_outlet(
        self,
        number: int,
        label: str,
        *,
        power: str = "on",
        on_power_change: PowerCallback | None = None,
        power_delay: float = 0.0,
    ) -> SimulatedPower:
        outlet = SimulatedPower(f"{self.name}:{number}", power, on_power_change, power_delay)
        self.outlets[number] = outlet
        self.outlet_names[number] = label
        return outlet

    # -- the MIB --------------------------------------------------------------------
    def _mib(self) -> dict[Oid, Value]:
        mib: dict[Oid, Value] = {
            SYS_DESCR: (_OCTETS, f"APC Web/SNMP Management Card ({self.name})".encode()),
            SYS_OBJECT_ID: (_OID, _oid(APC_RPDU)),
        }
        for n, outlet in self.outlets.items():
            mib[(*OUTLET_NAME, n)] = (_OCTETS, self.outlet_names[n].encode())
            state = 1 if outlet.power == "on" else 2
            mib[(*OUTLET_STATE, n)] = (_INT, _int(state))
            mib[(*OUTLET_CONTROL, n)] = (_INT, _int(state))
        return mib

    def _set(self, oid: Oid, tag: int, raw: bytes) -> int:
        """Apply one SET varbind; returns an SNMP error status (0 = noError)."""
        if oid[:-1] != OUTLET_CONTROL or oid[-1] not in self.outlets:
            return _NO_SUCH_NAME
        if tag != _INT:
            return _WRONG_VALUE
        command = int.from_bytes(raw, "big", signed=True)
        outlet = self.outlets[oid[-1]]
        if command == 1:
            outlet.record("on", "on")
        elif command == 2:
            outlet.record("off", "off")
        elif command == 3:
            outlet.record("reboot", "off")
            outlet.record("reboot-on", "on")
        else:
            return _WRONG_VALUE
        return 0

    # -- the protocol ---------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            if self.dead:
                continue
            try:
                reply = self._answer(data)
            except (IndexError, ValueError):
                continue  # not SNMP: a real agent drops it too
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, peer)

    def _answer(self, data: bytes) -> bytes | None:
        _, message, _ = _read(data, 0)
        (_, version), (_, community), (pdu_type, pdu) = _items(message)
        fields = _items(pdu)
        request_id = fields[0][1]
        binds = [(_decode_oid(b[0][1]), b[1]) for b in (_items(v) for _, v in _items(fields[3][1]))]
        v1 = int.from_bytes(version, "big") == 0
        text = community.decode(errors="replace")
        writing = pdu_type == _SET
        allowed = {self.write_community} | (set() if writing else {self.read_community})
        if text not in allowed:
            return None  # a wrong community gets no answer (authenticationFailure)
        mib = self._mib()
        status, index, out = 0, 0, []
        if writing:
            if self.refuse_writes:
                status, index = (_READ_ONLY if v1 else _NO_ACCESS), 1
            else:
                for i, (oid, (tag, raw)) in enumerate(binds, 1):
                    status = self._set(oid, tag, raw)
                    if status:
                        index = i
                        break
            out = [(oid, value) for oid, value in binds]
        elif pdu_type in (_GET, _GETNEXT, _GETBULK):
            ordered = sorted(mib)
            repeat = int.from_bytes(fields[2][1], "big") if pdu_type == _GETBULK else 1
            for i, (oid, _) in enumerate(binds, 1):
                found = self._lookup(mib, ordered, oid, pdu_type, max(1, repeat))
                if found is None:
                    if v1:
                        status, index = _NO_SUCH_NAME, i
                        break
                    found = [(oid, (0x81 if pdu_type == _GET else _END_OF_MIB, b""))]
                out.extend(found)
        else:
            return None
        if status and v1:
            out = [(oid, value) for oid, value in binds]
        varbinds = b"".join(
            _tlv(_SEQ, _tlv(_OID, _oid(oid)) + _tlv(tag, raw)) for oid, (tag, raw) in out
        )
        body = (
            _tlv(_INT, request_id)
            + _tlv(_INT, _int(status))
            + _tlv(_INT, _int(index))
            + _tlv(_SEQ, varbinds)
        )
        reply = _tlv(_INT, version) + _tlv(_OCTETS, community) + _tlv(_RESPONSE, body)
        return _tlv(_SEQ, reply)

    @staticmethod
    def _lookup(
        mib: dict[Oid, Value], ordered: list[Oid], oid: Oid, pdu_type: int, count: int
    ) -> list[tuple[Oid, Value]] | None:
        if pdu_type == _GET:
            return [(oid, mib[oid])] if oid in mib else None
        after = [o for o in ordered if o > oid][:count]
        return [(o, mib[o]) for o in after] or None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> ApcPdu:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class DualFeed:
    """A host with two power supplies, each on an outlet of its own PDU.

    The host has power while either outlet is on (which is why off needs both), and
    looks to the lab like one power device: ``set_power`` by hand switches both
    outlets, ``dead`` silences both PDUs, ``on_power_change`` is told of the host's
    power, not of each outlet's.
    """

    def __init__(
        self, name: str, outlets: list[tuple[ApcPdu, SimulatedPower]], power: str = "on"
    ) -> None:
        self.name = name
        where = ", ".join(f"{pdu.name} SNMP 127.0.0.1:{pdu.port}" for pdu, _ in outlets)
        self.label = f"PDU outlets ({where})"
        self.feeds = outlets
        self.on_power_change: PowerCallback | None = None
        self.power = power
        for _, outlet in outlets:
            outlet.on_power_change = self._outlet_changed

    def _outlet_changed(self, _state: str) -> None:
        power = "on" if any(o.power == "on" for _, o in self.feeds) else "off"
        if power != self.power:
            self.power = power
            if self.on_power_change is not None:
                self.on_power_change(power)

    @property
    def actions(self) -> list[Action]:
        """Both outlets' commands in the order they came."""
        return sorted((a for _, o in self.feeds for a in list(o.actions)), key=lambda a: a.time)

    @property
    def action_names(self) -> list[str]:
        return [f"{pdu.name}:{a}" for pdu, outlet in self.feeds for a in outlet.action_names]

    @property
    def dead(self) -> bool:
        return all(pdu.dead for pdu, _ in self.feeds)

    @dead.setter
    def dead(self, value: bool) -> None:
        for pdu, _ in self.feeds:
            pdu.dead = value

    def set_power(self, state: str) -> None:
        for _, outlet in self.feeds:
            outlet.set_power(state)
