"""The wire as truth: pcap files read back, segments paired with tagged requests, errors by hand."""

import io
import struct

import pytest

from bench.calibrate import wire
from bench.calibrate.wire import (
    Segment,
    capture_method,
    errors_against_wire,
    read_pcap,
    tag_prompt,
    wire_requests,
    write_pcap_header,
    write_pcap_record,
)

SERVER, CLIENT = 8000, 40001
T0 = 1_700_000_000_000_000_000  # capture times are CLOCK_REALTIME
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
TOKEN = b'5c\r\ndata: {"choices":[{"text":" tok","index":0,"finish_reason":null}],"object":"text_completion"}\n\n\r\n'


def frame(src: int, dst: int, seq: int, payload: bytes, ipv6: bool = False) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", src, dst, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    if ipv6:
        ip = struct.pack(">IHBB", 6 << 28, len(tcp), 6, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x01"
        return bytes(12) + b"\x86\xdd" + ip + tcp
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    return bytes(12) + b"\x08\x00" + ip + tcp


def pcap(frames: list[tuple[int, bytes]], snaplen: int = 512) -> bytes:
    out = io.BytesIO()
    write_pcap_header(out, snaplen)
    for t, f in frames:
        write_pcap_record(out, t, f[:snaplen], len(f))
    return out.getvalue()


def request(tag: int) -> bytes:
    body = b'{"model":"calibration","max_tokens":3,"stream":true,"prompt":"%s"}' % tag_prompt(tag).encode()
    return b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def exchange(tag: int, t: int, client_seq: int = 1000, server_seq: int = 5000, port: int = CLIENT):
    """One request and its response on a connection: headers 0.1 ms after the request, a token every 10 ms
    from 50 ms, the third token retransmitted, then the final chunk."""
    frames = [(t, frame(port, SERVER, client_seq, request(tag))), (t + 100_000, frame(SERVER, port, server_seq, HEAD))]
    seq = server_seq + len(HEAD)
    for i in range(3):
        frames.append((t + 50_000_000 + i * 10_000_000, frame(SERVER, port, seq, TOKEN)))
        if i == 2:
            frames.append((t + 50_000_000 + i * 10_000_000 + 200_000_000, frame(SERVER, port, seq, TOKEN)))
        seq += len(TOKEN)
    frames.append((t + 71_000_000, frame(SERVER, port, seq, b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")))
    return frames


def test_pcap_round_trip_keeps_segments_with_payload(tmp_path):
    path = tmp_path / "w.pcap"
    frames = exchange(7, T0) + [(T0 + 1, frame(SERVER, CLIENT, 1, b""))]  # a bare ACK carries no payload
    path.write_bytes(pcap(frames))
    segments = read_pcap(path)
    assert len(segments) == len(frames) - 1
    first = segments[0]
    assert (first.t_ns, first.src_port, first.dst_port, first.seq) == (T0, CLIENT, SERVER, 1000)
    assert first.payload_len == len(request(7)) and b"calibrate #7" in first.head


def test_snaplen_keeps_the_whole_length_from_the_ip_header(tmp_path):
    path = tmp_path / "w.pcap"
    big = b"x" * 2000
    path.write_bytes(pcap([(T0, frame(SERVER, CLIENT, 1, big))], snaplen=100))
    (segment,) = read_pcap(path)
    assert segment.payload_len == 2000 and len(segment.head) < 100


def test_ipv6_and_microsecond_pcaps_are_read(tmp_path):
    out = io.BytesIO()
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 512, 1))  # microsecond timestamps
    f = frame(CLIENT, SERVER, 9, request(1), ipv6=True)
    out.write(struct.pack("<IIII", 1_700_000_000, 250, len(f), len(f)) + f)
    path = tmp_path / "us.pcap"
    path.write_bytes(out.getvalue())
    (segment,) = read_pcap(path)
    assert segment.t_ns == 1_700_000_000_000_250_000 and segment.dst_port == SERVER


def test_requests_pair_with_their_body_segments_by_connection_and_tag():
    frames = exchange(3, T0) + exchange(4, T0 + 5_000_000, 2000, 9000, CLIENT + 1)
    frames += exchange(5, T0 + 90_000_000, 1000 + len(request(3)), 6000)  # the next request on the first connection
    segments = [Segment(t, *struct.unpack(">HHI", f[34:42]), len(f) - 54, f[54:]) for t, f in frames]
    found = wire_requests(sorted(segments, key=lambda s: s.t_ns), SERVER)
    assert sorted(found) == [3, 4, 5]
    three = found[3]
    assert three.t_request_ns == T0 and three.client_port == CLIENT
    # headers are not body; the retransmitted third token counts once; the final chunk is body too
    assert [t - T0 for t, _ in three.body] == [50_000_000, 60_000_000, 70_000_000, 71_000_000]
    assert three.token_times(len(TOKEN), 3) == [T0 + 50_000_000, T0 + 60_000_000, T0 + 70_000_000]
    assert found[4].client_port == CLIENT + 1 and found[5].t_request_ns == T0 + 90_000_000


def test_coalesced_tokens_get_the_time_of_the_segment_that_completed_them():
    req = wire.WireRequest(1, CLIENT, T0)
    # one segment with headers and the first token, then two tokens in one segment, the last split in two
    wire._response_segment(req, Segment(T0 + 1, SERVER, CLIENT, 100, len(HEAD + TOKEN), HEAD + TOKEN))
    seq = 100 + len(HEAD + TOKEN)
    wire._response_segment(req, Segment(T0 + 2, SERVER, CLIENT, seq, 2 * len(TOKEN), TOKEN * 2))
    seq += 2 * len(TOKEN)
    wire._response_segment(req, Segment(T0 + 3, SERVER, CLIENT, seq, 10, TOKEN[:10]))
    wire._response_segment(req, Segment(T0 + 4, SERVER, CLIENT, seq + 10, len(TOKEN) - 10, TOKEN[10:]))
    assert req.token_times(len(TOKEN), 4) == [T0 + 1, T0 + 2, T0 + 2, T0 + 4]
    assert req.token_times(None, 2) == [T0 + 1, T0 + 2]  # without a token size: one segment per token


def test_errors_against_the_wire_by_hand():
    req = wire.WireRequest(1, CLIENT, T0 + 1_000_000)
    req.body = [(T0 + 51_000_000, 100), (T0 + 61_000_000, 200), (T0 + 71_000_000, 300)]
    offset = T0  # realtime = monotonic + offset
    # the client read its clock 0.01 ms before the request segment and saw the tokens 0.2, 0.2, 0.4 ms late
    errors = errors_against_wire(990_000, [51_200_000, 61_200_000, 71_400_000], 3, req, offset, 100)
    assert errors["ttft_error_ms"] == pytest.approx(0.21)  # measured 50.21 ms, the wire's 50 ms
    assert errors["receive_lag_ms"] == pytest.approx(0.2) and errors["send_lead_ms"] == pytest.approx(-0.01)
    assert errors["tpot_error_ms"] == pytest.approx(0.1)  # (20.2 - 20.0) / 2
    assert errors["first_read_with_next"] == 0.0
    assert errors_against_wire(0, [], 0, req, offset) is None
    # the first token read with the second (one read, one time: the second's) though 10 ms apart on the wire
    merged = errors_against_wire(990_000, [61_200_000, 61_200_000, 71_400_000], 3, req, offset, 100)
    assert merged["ttft_error_ms"] == pytest.approx(10.21) and merged["first_read_with_next"] == 1.0
    together = wire.WireRequest(1, CLIENT, T0 + 1_000_000)  # the server sent the two in one segment: not a merge
    together.body = [(T0 + 51_000_000, 200), (T0 + 71_000_000, 300)]
    same = errors_against_wire(990_000, [51_200_000, 51_200_000, 71_400_000], 3, together, offset, 100)
    assert same["first_read_with_next"] == 0.0
    # ...but a read that also took the third token's later segment made the first one late
    late = errors_against_wire(990_000, [71_200_000] * 3, 3, together, offset, 100)
    assert late["first_read_with_next"] == 1.0 and late["ttft_error_ms"] == pytest.approx(20.21)


def test_a_levels_late_first_tokens_are_counted_with_those_read_with_the_next():
    from bench.calibrate import late_first_tokens

    req = wire.WireRequest(1, CLIENT, T0 + 1_000_000)
    req.body = [(T0 + 51_000_000, 100), (T0 + 61_000_000, 200)]
    errors = [
        errors_against_wire(990_000, times, 2, req, T0, 100)
        for times in (
            [51_200_000, 61_200_000],  # on time
            [61_200_000, 61_200_000],  # 10 ms late: read with the next token
            [52_000_000, 61_200_000],  # 0.8 ms late, read alone (the loop was late)
        )
    ]
    assert late_first_tokens(errors) == {"over_ms": 0.5, "count": 2, "read_with_the_next_token": 1}


def test_without_tcpdump_or_root_it_says_so(monkeypatch):
    monkeypatch.setattr(wire.shutil, "which", lambda name: None)
    monkeypatch.setattr(wire.os, "access", lambda path, mode: False)
    monkeypatch.setattr(wire.os, "geteuid", lambda: 1000)
    method, note = capture_method("auto")
    assert method is None
    assert "tcpdump is not installed" in note and "root" in note and "server's log" in note


def test_capture_preference(monkeypatch):
    monkeypatch.setattr(wire.shutil, "which", lambda name: "/usr/bin/tcpdump")
    monkeypatch.setattr(wire.os, "geteuid", lambda: 0)
    assert capture_method("auto")[0] == "tcpdump"
    assert capture_method("raw-socket")[0] == ("raw-socket" if wire.sys.platform.startswith("linux") else None)


def test_the_raw_socket_filter_is_well_formed():
    program = wire._bpf_payload_on_port(8000, 512)
    for index, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert index + 1 + jt < len(program) and index + 1 + jf < len(program)
    assert program[-2] == (0x06, 0, 0, 512) and program[-1] == (0x06, 0, 0, 0)
