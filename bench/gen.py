#!/usr/bin/env python3
"""Pre-generates request pools for the load generator (wrk + bench/load.lua).

The logical workload is the same for every system: 3,000 series (50 services x 20
endpoints x 3 metrics), 100 samples per request. Request i of a pool carries one
sample of each series of block i % 30 (100 series), all with timestamp
base_ms + i // 30, so every (series, timestamp) pair of a pool is unique and a
series' timestamps grow with i. Pools are split round-robin into one file per wrk
thread (request i goes to thread i % threads); each file is a sequence of records
"<length>\n<raw HTTP request bytes>", ready to be written to the socket.

Formats:
  influx  InfluxDB 1.x line protocol, POST /write?db=bench&precision=ms
  prom    Prometheus remote-write 1.0: snappy-compressed protobuf WriteRequest
  json    Tidemark JSON array, POST /v1/samples
  jsongz  the same JSON, gzip Content-Encoding
  health  Tidemark GET /v1/health/services (no samples; for the c10k API load)
"""
import argparse
import gzip
import struct

try:
    import snappy  # Debian: python3-snappy
except ImportError:  # pragma: no cover - run.sh installs it
    snappy = None

SERVICES, ENDPOINTS, METRICS = 50, 20, 3
SERIES = SERVICES * ENDPOINTS * METRICS  # 3,000
PER_REQ = 100
BLOCKS = SERIES // PER_REQ  # 30
METRIC_NAMES = ["http.server.duration", "http.server.request.size", "db.pool.usage"]
PROM_NAMES = [m.replace(".", "_") for m in METRIC_NAMES]
NVALUES = 997  # values cycle through a table of this many


def series(s):
    """(service, endpoint, metric index) of series s."""
    return f"svc-{s // 60:02d}", f"/api/e{(s % 60) // 3:02d}", s % 3


def value(k):
    return round(((k * 7919) % 50000) / 100.0 + 0.25, 2)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, wire, payload):
    return varint((num << 3) | wire) + payload


def pb_bytes(num, data):
    return pb_field(num, 2, varint(len(data)) + data)


class Gen:
    def __init__(self, fmt, host):
        self.fmt, self.host = fmt, host
        vals = [value(k) for k in range(NVALUES)]
        self.vals = vals
        if fmt == "influx":
            self.pre = []
            for s in range(SERIES):
                svc, ep, m = series(s)
                self.pre.append(f"{METRIC_NAMES[m]},endpoint={ep},service={svc} value=")
            self.vstr = [repr(v) for v in vals]
        elif fmt in ("json", "jsongz"):
            self.pre = []
            for s in range(SERIES):
                svc, ep, m = series(s)
                self.pre.append(f'{{"service":"{svc}","metric":"{METRIC_NAMES[m]}","value":')
            self.post = []
            for s in range(SERIES):
                svc, ep, m = series(s)
                self.post.append(f'"tags":{{"endpoint":"{ep}"}}}}')
            self.vstr = [repr(v) for v in vals]
        elif fmt == "prom":
            if snappy is None:
                raise SystemExit("gen.py: python3-snappy is missing (apt-get install python3-snappy)")
            self.labels = []
            for s in range(SERIES):
                svc, ep, m = series(s)
                lab = b"".join(
                    pb_bytes(1, pb_bytes(1, k.encode()) + pb_bytes(2, v.encode()))
                    for k, v in (("__name__", PROM_NAMES[m]), ("endpoint", ep), ("service", svc))
                )
                self.labels.append(lab)
            self.vbytes = [b"\x09" + struct.pack("<d", v) for v in vals]
        elif fmt != "health":
            raise SystemExit(f"gen.py: unknown format {fmt}")

    def body(self, i, base_ms):
        r, b = divmod(i, BLOCKS)
        ts = base_ms + r
        first = b * PER_REQ
        rng = range(first, first + PER_REQ)
        if self.fmt == "influx":
            t = f" {ts}\n"
            pre, vs = self.pre, self.vstr
            return "".join(pre[s] + vs[(s + r) % NVALUES] + t for s in rng).encode()
        if self.fmt in ("json", "jsongz"):
            t = f',"timestamp":{ts},'
            pre, post, vs = self.pre, self.post, self.vstr
            body = ("[" + ",".join(pre[s] + vs[(s + r) % NVALUES] + t + post[s] for s in rng) + "]").encode()
            return gzip.compress(body, 6) if self.fmt == "jsongz" else body
        # prom: WriteRequest{ repeated TimeSeries timeseries = 1 }
        tsb = b"\x10" + varint(ts)
        parts = []
        for s in rng:
            sample = self.vbytes[(s + r) % NVALUES] + tsb
            ts_msg = self.labels[s] + b"\x12" + varint(len(sample)) + sample
            parts.append(b"\x0a" + varint(len(ts_msg)) + ts_msg)
        return snappy.compress(b"".join(parts))

    def request(self, i, base_ms, token):
        if self.fmt == "health":
            return (f"GET /v1/health/services HTTP/1.1\r\nHost: {self.host}\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n").encode()
        body = self.body(i, base_ms)
        h = self.host
        if self.fmt == "influx":
            head = f"POST /write?db=bench&precision=ms HTTP/1.1\r\nHost: {h}\r\nContent-Type: text/plain\r\n"
        elif self.fmt == "prom":
            head = (f"POST /api/v1/write HTTP/1.1\r\nHost: {h}\r\nContent-Type: application/x-protobuf\r\n"
                    "Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n")
        else:
            head = (f"POST /v1/samples HTTP/1.1\r\nHost: {h}\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer {token}\r\n")
            if self.fmt == "jsongz":
                head += "Content-Encoding: gzip\r\n"
        return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", required=True)
    ap.add_argument("--host", required=True, help="host:port for the Host header")
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-ms", type=int, required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--out", required=True, help="file prefix; writes <out>.<thread>")
    ap.add_argument("--only-thread", type=int, default=None, help="write only this thread's file")
    a = ap.parse_args()
    g = Gen(a.format, a.host)
    mine = range(a.threads) if a.only_thread is None else [a.only_thread]
    files = {t: open(f"{a.out}.{t}", "wb") for t in mine}
    total = n = 0
    for i in range(a.requests):
        f = files.get(i % a.threads)
        if f is None:
            continue
        req = g.request(i, a.base_ms, a.token)
        total += len(req)
        n += 1
        f.write(b"%d\n" % len(req))
        f.write(req)
    for f in files.values():
        f.close()
    if a.only_thread is None:
        print(f"{a.format}: {n} requests, {n * PER_REQ} samples, {total / max(n, 1):.0f} bytes/request avg",
              flush=True)


if __name__ == "__main__":
    main()
