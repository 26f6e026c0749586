"""The wire as the truth: capture loopback TCP segments during calibration and pair them with requests.

A server's own log of when it wrote a token cannot see its parse and scheduling delay, so it can
flatter or blame the client. The packets cannot: every TCP segment with payload to or from the
calibration server's port is captured on the loopback interface with the kernel's timestamp,
taken as the segment is handed to the receiving socket, before the client can read it.

Capture, in order of preference:

- ``tcpdump`` (Debian's package; the test command installs it) writing a nanosecond pcap file;
- a raw ``AF_PACKET`` socket on ``lo`` (root or CAP_NET_RAW), in a child process of its own so its
  per-packet work never shares the client's interpreter, with a kernel BPF filter that keeps only
  segments with payload on the port, writing the same pcap format;
- neither: `start_capture` says why, and calibration falls back to the server's log.

Pairing. Each calibration request carries a unique prompt (``calibrate #N``) that the server
echoes in its truth; on the wire the client-to-server segment carrying that tag is the request,
and the first server-to-client segment after it on the same connection that carries body bytes
(not only the response headers) is the first token, the next ones the following tokens. Per
request, with both clocks' differences only (so no clock mapping enters it):

    wire TTFT        = t(first body segment) - t(request segment)
    TTFT error       = (t_1 - t_send) - wire TTFT            the client's measured minus the wire's
    TPOT error       = (t_k - t_1)/(n-1) - (w_k - w_1)/(n-1)  over the first n body segments

and, with the capture's clock (CLOCK_REALTIME) mapped onto the client's (CLOCK_MONOTONIC) by an
offset read at both ends of the level (the two differ only by a clock step, which is reported):

    receive lag = t_1 - w_1       (how late the client read the first token)
    send lead   = t_send - w_req  (negative: the clock is read just before the write)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engines.process import die_with_parent

SNAPLEN = 512  # a request's headers and the start of its JSON body (where the tag is), a segment's start
TAG = re.compile(rb'"prompt":"calibrate #(\d+)"')
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_NULL, LINKTYPE_EN10MB, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 0, 1, 101, 113, 276
READY_TIMEOUT_S = 10.0
TCPDUMP_FLUSH_S = 1.2  # longer than libpcap's 1 s buffer timeout, which tcpdump uses


def tag_prompt(number: int) -> str:
    """The prompt that names calibration request `number` on the wire and in the server's truth."""
    return f"calibrate #{number}"


def clock_offset_ns(samples: int = 16) -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC (perf_counter_ns), from the tightest of several bracketed reads."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        a = time.perf_counter_ns()
        real = time.time_ns()
        b = time.perf_counter_ns()
        if best is None or b - a < best[0]:
            best = (b - a, real - (a + b) // 2)
    assert best is not None
    return best[1]


# -- pcap --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Segment:
    t_ns: int  # capture time, CLOCK_REALTIME
    src_port: int
    dst_port: int
    seq: int
    payload_len: int  # the segment's whole payload, from the IP header (the capture may hold less)
    head: bytes  # the captured start of the payload


def read_pcap(path: Path) -> list[Segment]:
    """Every IPv4/IPv6 TCP segment with payload in a pcap file (nanosecond or microsecond timestamps)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic_le = struct.unpack_from("<I", data, 0)[0]
    if magic_le in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
        endian = "<"
    elif struct.unpack_from(">I", data, 0)[0] in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (pcapng is not read; tcpdump -w writes pcap)")
    magic = struct.unpack_from(endian + "I", data, 0)[0]
    scale = 1 if magic == PCAP_MAGIC_NS else 1000
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    segments: list[Segment] = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = record.unpack_from(data, offset)
        offset += 16
        frame = data[offset : offset + caplen]
        offset += caplen
        segment = _tcp_segment(frame, linktype, sec * 1_000_000_000 + frac * scale)
        if segment is not None:
            segments.append(segment)
    return segments


def _tcp_segment(frame: bytes, linktype: int, t_ns: int) -> Segment | None:
    if linktype == LINKTYPE_EN10MB:
        if len(frame) < 14:
            return None
        ethertype, ip = struct.unpack_from(">H", frame, 12)[0], 14
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        ethertype, ip = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        ethertype, ip = struct.unpack_from(">H", frame, 0)[0], 20
    elif linktype == LINKTYPE_NULL:
        family = struct.unpack_from("=I", frame, 0)[0] if len(frame) >= 4 else 0
        ethertype, ip = (0x0800 if family == 2 else 0x86DD), 4
    elif linktype == LINKTYPE_RAW:
        ethertype, ip = (0x0800 if frame[:1] and frame[0] >> 4 == 4 else 0x86DD), 0
    else:
        return None
    if ethertype == 0x0800:
        if len(frame) < ip + 20 or frame[ip + 9] != 6:
            return None
        ihl = (frame[ip] & 0x0F) * 4
        total = struct.unpack_from(">H", frame, ip + 2)[0]
        tcp, end = ip + ihl, ip + total
    elif ethertype == 0x86DD:
        if len(frame) < ip + 40 or frame[ip + 6] != 6:  # no extension headers on loopback TCP
            return None
        tcp, end = ip + 40, ip + 40 + struct.unpack_from(">H", frame, ip + 4)[0]
    else:
        return None
    if len(frame) < tcp + 20:
        return None
    src, dst, seq = struct.unpack_from(">HHI", frame, tcp)
    payload = tcp + (frame[tcp + 12] >> 4) * 4
    if end <= payload:
        return None
    return Segment(t_ns, src, dst, seq, end - payload, frame[payload:end])


def write_pcap_header(handle, snaplen: int = SNAPLEN, linktype: int = LINKTYPE_EN10MB) -> None:
    handle.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))


def write_pcap_record(handle, t_ns: int, frame: bytes, orig_len: int) -> None:
    handle.write(struct.pack("<IIII", t_ns // 1_000_000_000, t_ns % 1_000_000_000, len(frame), orig_len) + frame)


# -- pairing -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class WireRequest:
    tag: int
    client_port: int
    t_request_ns: int  # the request's segment
    # every response segment that carried body bytes: (capture time, body bytes up to its end)
    body: list[tuple[int, int]] = field(default_factory=list)
    _body_seq: int | None = None  # TCP sequence number of the body's first byte, once the headers were seen

    def token_times(self, token_bytes: int | None, tokens: int) -> list[int]:
        """When each of the first `tokens` tokens had fully arrived: with fixed-size token chunks (the
        calibration server's), the segment holding each one's last byte, whatever the segmentation;
        else one body segment per token."""
        if not token_bytes:
            return [t for t, _ in self.body[:tokens]]
        times, i = [], 0
        for t, end in self.body:
            while i < tokens and end >= (i + 1) * token_bytes:
                times.append(t)
                i += 1
            if i == tokens:
                break
        return times


def wire_requests(segments: list[Segment], server_port: int) -> dict[int, WireRequest]:
    """Tagged requests on the wire with their response's body segments, by tag."""
    by_port: dict[int, list[Segment]] = {}
    for seg in segments:
        if seg.dst_port == server_port:
            by_port.setdefault(seg.src_port, []).append(seg)
        elif seg.src_port == server_port:
            by_port.setdefault(seg.dst_port, []).append(seg)
    found: dict[int, WireRequest] = {}
    for port, segs in by_port.items():
        segs.sort(key=lambda s: s.t_ns)
        seen: set[tuple[bool, int]] = set()
        current: WireRequest | None = None
        for seg in segs:
            upstream = seg.dst_port == server_port
            if (upstream, seg.seq) in seen:  # a retransmission: the first copy is the one that counts
                continue
            seen.add((upstream, seg.seq))
            if upstream:
                match = TAG.search(seg.head)
                if match:
                    current = WireRequest(int(match.group(1)), port, seg.t_ns)
                    found.setdefault(current.tag, current)
            elif current is not None:
                _response_segment(current, seg)
    return found


def _response_segment(request: WireRequest, seg: Segment) -> None:
    if request._body_seq is None:
        if not seg.head.startswith(b"HTTP/"):
            request._body_seq = seg.seq  # no headers seen: take the body to start here
        else:
            end = seg.head.find(b"\r\n\r\n")
            if end < 0:  # headers longer than the capture: take them to end in this segment
                request._body_seq = (seg.seq + seg.payload_len) & 0xFFFFFFFF
                return
            if seg.head.startswith((b"HTTP/1.1 1", b"HTTP/1.0 1")):  # interim response: the real one follows
                if seg.payload_len > end + 4:
                    _response_segment(request, _rest(seg, end + 4))
                return
            request._body_seq = (seg.seq + end + 4) & 0xFFFFFFFF
    end_offset = (seg.seq + seg.payload_len - request._body_seq) & 0xFFFFFFFF
    if end_offset > 0 and end_offset < 1 << 31:
        request.body.append((seg.t_ns, end_offset))


def _rest(seg: Segment, skip: int) -> Segment:
    return Segment(seg.t_ns, seg.src_port, seg.dst_port, seg.seq + skip, seg.payload_len - skip, seg.head[skip:])


def errors_against_wire(
    t_send_ns: int,
    output_times_ns: list[int],
    tokens: int | None,
    wire: WireRequest,
    offset_ns: int,
    token_bytes: int | None = None,
) -> dict[str, float] | None:
    """One request's errors (ms) against its wire times; client times are absolute perf_counter_ns."""
    n = len(output_times_ns)
    wire_times = wire.token_times(token_bytes, n)
    if not n or not wire_times:
        return None
    t_1, w_1 = output_times_ns[0], wire_times[0]
    last = 0  # the last token read with the first
    while last + 1 < n and output_times_ns[last + 1] == t_1:
        last += 1
    out = {
        "ttft_error_ms": ((t_1 - t_send_ns) - (w_1 - wire.t_request_ns)) / 1e6,
        "receive_lag_ms": (t_1 - (w_1 - offset_ns)) / 1e6,
        "send_lead_ms": (t_send_ns - (wire.t_request_ns - offset_ns)) / 1e6,
        # the first token came in one read with later ones (one time: the last's), though before them on the wire
        "first_read_with_next": float(0 < last < len(wire_times) and wire_times[last] > w_1),
    }
    if n >= 2 and tokens == n and len(wire_times) == n:
        measured = (output_times_ns[-1] - t_1) / (n - 1)
        true = (wire_times[-1] - w_1) / (n - 1)
        out["tpot_error_ms"] = (measured - true) / 1e6
    return out


# -- capture -----------------------------------------------------------------------------------------


def _bpf_payload_on_port(port: int, snaplen: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program: IPv4 TCP to or from `port` whose segment carries payload (Ethernet framing,
    as on Linux's loopback); the same test as tcpdump's `tcp port P and <payload length> != 0`."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]                  ethertype
        (0x15, 0, 18, 0x0800),  # jeq IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]                  IP protocol
        (0x15, 0, 16, 6),  # jeq TCP, else drop
        (0x28, 0, 0, 20),  # ldh [20]                  flags and fragment offset
        (0x45, 14, 0, 0x1FFF),  # jset fragment -> drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)         X = IP header length
        (0x48, 0, 0, 14),  # ldh [x+14]                source port
        (0x15, 2, 0, port),  # jeq port -> payload check
        (0x48, 0, 0, 16),  # ldh [x+16]                destination port
        (0x15, 0, 9, port),  # jeq port, else drop
        (0x50, 0, 0, 26),  # ldb [x+26]                TCP data offset << 4
        (0x74, 0, 0, 4),  # rsh 4
        (0x64, 0, 0, 2),  # lsh 2                     A = TCP header length
        (0x0C, 0, 0, 0),  # add x                     A = IP + TCP header length
        (0x02, 0, 0, 0),  # st M[0]
        (0x28, 0, 0, 16),  # ldh [16]                  IP total length
        (0x61, 0, 0, 0),  # ldx M[0]
        (0x2D, 0, 1, 0),  # jgt x -> accept, else drop
        (0x06, 0, 0, snaplen),  # accept
        (0x06, 0, 0, 0),  # drop
    ]


def _raw_capture(port: int, out: Path, snaplen: int) -> int:
    """The raw-socket capture loop (run in a child process): segments with payload on `port` to `out`."""
    sol_packet, packet_statistics, so_attach_filter, so_timestampns, packet_outgoing = 263, 6, 26, 35, 4
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    program = _bpf_payload_on_port(port, snaplen)
    filters = (ctypes.c_ubyte * (8 * len(program))).from_buffer_copy(
        b"".join(struct.pack("HBBI", *insn) for insn in program)
    )
    sock.setsockopt(socket.SOL_SOCKET, so_attach_filter, struct.pack("HL", len(program), ctypes.addressof(filters)))
    sock.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): ride out a burst
    sock.bind(("lo", 0x0003))  # ETH_P_ALL
    sock.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    captured = 0
    with out.open("wb") as handle:
        write_pcap_header(handle, snaplen)
        print(f"listening on lo (raw socket), port {port}", file=sys.stderr, flush=True)
        cmsg_space = socket.CMSG_SPACE(16)
        draining = False
        while True:
            if stop and not draining:  # what the kernel queued before the stop was sent is part of the capture
                draining = True
                sock.setblocking(False)
            try:
                frame, ancdata, _, address = sock.recvmsg(snaplen, cmsg_space)
            except (TimeoutError, InterruptedError):
                continue
            except BlockingIOError:
                break
            if address[2] == packet_outgoing:  # loopback shows every packet twice: keep the delivered copy
                continue
            t_ns = time.time_ns()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == so_timestampns:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t_ns = sec * 1_000_000_000 + nsec
            orig = 14 + struct.unpack_from(">H", frame, 16)[0] if len(frame) >= 18 else len(frame)
            write_pcap_record(handle, t_ns, frame, orig)
            captured += 1
    stats = sock.getsockopt(sol_packet, packet_statistics, 8)
    received, dropped = struct.unpack("II", stats)
    print(f"{captured} packets captured\n{dropped} packets dropped by kernel", file=sys.stderr, flush=True)
    return 0


@dataclass
class Capture:
    """A running capture of one port's loopback segments, stopped by `stop`."""

    method: str  # "tcpdump" or "raw-socket"
    port: int
    path: Path
    log_path: Path
    process: subprocess.Popen
    offsets_ns: list[int] = field(default_factory=list)

    def stop(self) -> dict[str, Any]:
        """Stop and read the capture: segments plus what to say about it (drops, clock step)."""
        self.offsets_ns.append(clock_offset_ns())
        if self.method == "tcpdump":
            time.sleep(TCPDUMP_FLUSH_S)  # libpcap hands over a ring block on its timeout; SIGINT drops the rest
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        dropped = re.search(r"(\d+) packets? dropped by kernel", log)
        segments = read_pcap(self.path) if self.path.exists() else []
        with contextlib.suppress(OSError):
            self.path.unlink()  # a level's capture is large and read once
        first, last = self.offsets_ns[0], self.offsets_ns[-1]
        return {
            "segments": segments,
            "offset_ns": (first + last) // 2,
            "clock_step_ms": (last - first) / 1e6,
            "dropped": int(dropped.group(1)) if dropped else None,
        }


def capture_method(prefer: str = "auto") -> tuple[str | None, str]:
    """Which capture this machine allows ("tcpdump", "raw-socket" or None) and a sentence why."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    tcpdump = shutil.which("tcpdump") or next(
        (p for p in ("/usr/sbin/tcpdump", "/usr/bin/tcpdump") if os.access(p, os.X_OK)), None
    )
    raw_ok = root and sys.platform.startswith("linux")
    if prefer in ("auto", "tcpdump") and tcpdump:
        return "tcpdump", f"tcpdump ({tcpdump}) on lo"
    if prefer in ("auto", "raw-socket") and raw_ok:
        return "raw-socket", "a raw AF_PACKET socket on lo (root), in a child process"
    why = []
    if prefer in ("auto", "tcpdump"):
        why.append("tcpdump is not installed (apt-get install tcpdump)")
    if prefer in ("auto", "raw-socket"):
        why.append("a raw socket needs root (CAP_NET_RAW)" if not raw_ok else "no raw socket here")
    return None, "no packet capture: " + "; ".join(why) + "; errors are against the server's log only"


def start_capture(port: int, directory: Path, method: str, name: str = "wire") -> Capture:
    """Start capturing `port` on loopback; returns once the capture is listening. Raises OSError if it cannot."""
    path, log_path = directory / f"{name}.pcap", directory / f"{name}.log"
    log = log_path.open("wb")
    try:
        if method == "tcpdump":
            tcpdump = shutil.which("tcpdump") or "/usr/sbin/tcpdump"
            argv = [tcpdump, "-i", "lo", "-n", "-s", str(SNAPLEN), "-B", "65536", "--time-stamp-precision=nano"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                argv += ["-Z", "root"]  # keep the right to write the file where we are
            expr = f"tcp port {port} and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)"
            argv += ["-w", str(path), expr]
        else:
            argv = [sys.executable, "-m", "bench.calibrate.wire", "--port", str(port), "--out", str(path)]
        process = subprocess.Popen(  # dies with the rig, even by SIGKILL (Linux)
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    finally:
        log.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "listening on" in text:
            time.sleep(0.05)  # the filter is attached before the line is printed; let the ring settle
            return Capture(method, port, path, log_path, process, [clock_offset_ns()])
        if process.poll() is not None:
            raise OSError(f"{method} exited ({process.returncode}): {text.strip()[-300:]}")
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise OSError(f"{method} did not start listening within {READY_TIMEOUT_S:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description="raw-socket loopback capture (used by bench calibrate --wire)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--snaplen", type=int, default=SNAPLEN)
    args = parser.parse_args()
    return _raw_capture(args.port, args.out, args.snaplen)


if __name__ == "__main__":
    sys.exit(main())
