#!/usr/bin/env python3
"""Tidemark ingest benchmark: Tidemark vs InfluxDB 1.6 vs Prometheus remote write.

Run it through bench/run.sh (which installs what is missing and builds Tidemark).
Everything listens on 127.0.0.1 only. Modes:

  full     (default) trivial-endpoint ceiling (nginx), InfluxDB, Prometheus and
           Tidemark (JSON, gzip JSON) at each connection count; verification; the
           table; JSON under target/bench/
  c10k     10,000 keep-alive connections to Tidemark ingest and 10,000 to the API,
           each sending at a modest rate
  profile  Tidemark JSON at 64 connections with `perf record` on the ingest process

Figures are printed, never asserted. See docs/performance.md.
"""
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen  # noqa: E402


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_float(name, default):
    return float(os.environ.get(name, default))


CFG = {
    "duration_s": env_float("BENCH_DURATION", 15),
    "conns": [int(c) for c in os.environ.get("BENCH_CONNS", "64,1000").split(",") if c],
    "threads": env_int("BENCH_THREADS", 2),
    "drain_max_s": env_float("BENCH_DRAIN_MAX", 20),
    "systems": os.environ.get("BENCH_SYSTEMS", "ceiling,influxdb,prometheus,tidemark").split(","),
    "tm_formats": os.environ.get("BENCH_TM_FORMATS", "json,jsongz").split(","),
    # pool sizes: the most samples/s a system could reach; a pool that runs out ends
    # that phase early (reported), it never repeats a sample
    "cap_influxdb": env_int("BENCH_CAP_INFLUXDB", 600_000),
    "cap_prometheus": env_int("BENCH_CAP_PROMETHEUS", 800_000),
    "cap_tidemark": env_int("BENCH_CAP_TIDEMARK", 1_000_000),
    "catchup_max_s": env_float("BENCH_CATCHUP_MAX", 300),
    "warmup_s": env_float("BENCH_WARMUP", 3),
    "health_interval_s": env_float("BENCH_HEALTH_INTERVAL", 0.25),
    "c10k_conns": env_int("BENCH_C10K_CONNS", 10_000),
    "c10k_duration_s": env_float("BENCH_C10K_DURATION", 90),
    "c10k_ingest_pace_ms": env_int("BENCH_C10K_INGEST_PACE_MS", 20_000),
    "c10k_api_pace_ms": env_int("BENCH_C10K_API_PACE_MS", 300_000),
    "c10k_seed_s": env_float("BENCH_C10K_SEED", 5),
    # wrk connects all connections of a thread at once; more threads started `ramp`
    # seconds apart keep each burst under the servers' listen backlog (4,096)
    "c10k_threads": env_int("BENCH_C10K_THREADS", 10),
    "c10k_ramp_s": env_float("BENCH_C10K_RAMP", 10),
    "c10k_api_ceiling_conns": env_int("BENCH_C10K_API_CEILING_CONNS", 16),
    "timeout_s": env_int("BENCH_TIMEOUT", 120),
    "tansu_port": env_int("BENCH_TANSU_PORT", 29092),
    "port_base": env_int("BENCH_PORT_BASE", 28000),
}
PORTS = {
    "nginx": CFG["port_base"] + 80,
    "influxdb": CFG["port_base"] + 86,
    "influxdb_rpc": CFG["port_base"] + 88,
    "prometheus": CFG["port_base"] + 90,
    "ingest": CFG["port_base"] + 180,
    "api": CFG["port_base"] + 181,
    "aggregator": CFG["port_base"] + 182,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = None  # the run's Procs, set by main()
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- processes

class Procs:
    """Every process the benchmark starts; all are stopped at exit."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.procs = []
        self.pidfile = os.environ.get("BENCH_PIDFILE") or os.path.join(run_dir, "pids")

    def start(self, name, argv, env=None, cwd=None):
        logf = open(os.path.join(self.run_dir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                             cwd=cwd or self.run_dir, start_new_session=True)
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p, sig=signal.SIGTERM, wait=15):
        try:
            self._stop(p, sig, wait)
        finally:
            self._forget(p)

    def _stop(self, p, sig, wait):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)

    def track(self, name, p):
        """Registers a process started elsewhere, so that it is stopped at exit too."""
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")

    def forget(self, p):
        self._forget(p)

    def _forget(self, p):
        self.procs = [(n, q) for (n, q) in self.procs if q is not p]
        with open(self.pidfile, "w") as f:
            f.write("".join(f"{q.pid}\n" for _, q in self.procs))

    def stop_all(self):
        for _, p in reversed(self.procs):
            self.stop(p)
        self.procs = []


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def http(method, url, body=None, headers=None, timeout=30):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url, ok=(200, 204), timeout=120, proc=None, what=""):
    t_end = time.time() + timeout
    last = None
    while time.time() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start (see its log)")
        try:
            st, _ = http("GET", url, timeout=2)
            if st in ok:
                return
            last = st
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{what}: {url} not ready after {timeout}s (last: {last})")


def proc_cpu(pid):
    """utime+stime of a process in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return None


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def pids_by_comm(comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def machine_busy():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuWindow:
    """CPU seconds of named process groups between start() and stop()."""

    def __init__(self, groups):
        self.groups = groups  # name -> callable returning pids

    def _snap(self):
        snap = {}
        for name, pids in self.groups.items():
            snap[name] = {pid: proc_cpu(pid) for pid in pids()}
        return snap

    def start(self):
        self.a = self._snap()
        self.ma = machine_busy()
        self.ta = time.time()

    def stop(self):
        b = self._snap()
        mb = machine_busy()
        out = {}
        for name in self.groups:
            tot = 0.0
            for pid, v in b[name].items():
                if v is None:
                    continue
                tot += v - (self.a[name].get(pid) or 0.0)
            out[name] = round(tot, 2)
        out["_machine_busy"] = round((mb[0] - self.ma[0]) / CLK_TCK, 2)
        out["_wall"] = round(time.time() - self.ta, 2)
        return out


# ---------------------------------------------------------------- load generation

def make_pool(run_dir, name, fmt, host, nreq, base_ms, token="", threads=None):
    """Writes one pool file per wrk thread (in parallel, one process per file)."""
    threads = threads or CFG["threads"]
    prefix = os.path.join(run_dir, "pools", name)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    t = time.time()
    ps = []
    argv = lambda th: [sys.executable, os.path.join(HERE, "gen.py"), "--format", fmt, "--host", host,
                            "--requests", str(nreq), "--threads", str(threads), "--base-ms", str(base_ms),
                            "--token", token, "--out", prefix, "--only-thread", str(th)]
    for th in range(threads):
        if len(ps) >= (os.cpu_count() or 1):
            if ps.pop(0).wait() != 0:
                raise RuntimeError(f"gen.py failed for pool {name}")
        ps.append(subprocess.Popen(argv(th)))
    for p in ps:
        if p.wait() != 0:
            raise RuntimeError(f"gen.py failed for pool {name}")
    size = sum(os.path.getsize(f"{prefix}.{th}") for th in range(threads))
    log(f"pool {name}: {nreq:,} requests ({nreq * gen.PER_REQ:,} samples, {size / 2**20:.0f} MiB) "
        f"generated in {time.time() - t:.1f}s")
    return prefix


class Phases:
    """Pools for the phases of one system: a fresh pool per connection count, sized from
    the rate seen so far (pools are never reused, so every sample of the run is unique and
    a series' timestamps only grow), and an unmeasured warm-up before the first phase."""

    def __init__(self, run_dir, name, fmt, host, port, cap, base_ms, token=""):
        self.run_dir, self.name, self.fmt, self.host, self.port = run_dir, name, fmt, host, port
        self.est, self.cap, self.base_ms, self.token = cap, cap, base_ms, token
        self.pool = None
        self.warm_ok_samples = 0

    def prepare(self, i, conns):
        """Makes the pool for phase i; runs the warm-up before phase 0. Returns start indexes."""
        warm = CFG["warmup_s"] if i == 0 else 0
        nreq = int(self.est * (CFG["duration_s"] + warm) * 1.5 / gen.PER_REQ) + CFG["threads"] * 4 + 64
        self.pool = make_pool(self.run_dir, f"{self.name}-{conns}", self.fmt, self.host, nreq, self.base_ms,
                              self.token)
        self.base_ms += nreq // gen.BLOCKS + 1000
        starts = [0] * CFG["threads"]
        if warm > 0:
            w = run_wrk(self.run_dir, f"{self.name}-warmup", self.port, self.pool, conns, warm, starts)
            self.warm_ok_samples = w["ok_requests"] * gen.PER_REQ
            log(f"{self.name} warm-up ({warm:.0f}s @{conns}): {w['req_per_s'] * gen.PER_REQ:,.0f} samples/s, "
                f"statuses {w['statuses']}, unanswered {w['unanswered']}")
            starts = w["next_index"]
        return starts

    def done(self, r):
        drop_pool(self.pool)
        self.est = min(self.cap, max(2 * r["samples_per_s"], 20_000))


def drop_pool(prefix):
    for t in range(64):
        try:
            os.remove(f"{prefix}.{t}")
        except FileNotFoundError:
            pass


def run_wrk(run_dir, tag, port, pool, conns, duration, starts, cycle=False, pace_ms=0,
            on_start=None, drain_max=None, threads=None, ramp_s=0):
    """Runs wrk with bench/load.lua; returns the parsed result with derived figures."""
    threads = min(threads or CFG["threads"], conns)
    out = os.path.join(run_dir, f"wrk-{tag}.json")
    for f in os.listdir(run_dir):
        if f.startswith(os.path.basename(out) + "."):
            os.remove(os.path.join(run_dir, f))
    drain_max = CFG["drain_max_s"] if drain_max is None else drain_max
    total = int(duration + drain_max + ramp_s + 2)
    argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{total}s", "--timeout", f"{CFG['timeout_s']}s",
            "-s", os.path.join(HERE, "load.lua"), f"http://127.0.0.1:{port}/", "--",
            pool, str(conns // threads), str(duration), out, ",".join(str(s) for s in starts),
            "1" if cycle else "0", str(pace_ms), str(threads), str(ramp_s)]
    logf = open(os.path.join(run_dir, f"wrk-{tag}.log"), "wb")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=run_dir, start_new_session=True)
    if PROCS is not None:
        PROCS.track(f"wrk-{tag}", p)
    try:
        return _run_wrk_wait(p, run_dir, tag, out, threads, conns, duration, total, on_start)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if PROCS is not None:
            PROCS.forget(p)


def _run_wrk_wait(p, run_dir, tag, out, threads, conns, duration, total, on_start):
    ready = [f"{out}.ready.{t}" for t in range(threads)]
    drained = [f"{out}.drained.{t}" for t in range(threads)]
    t_end = time.time() + total + 60
    while not all(os.path.exists(r) for r in ready):
        if p.poll() is not None or time.time() > t_end:
            raise RuntimeError(f"wrk {tag} failed before start; see wrk-{tag}.log")
        time.sleep(0.02)
    wrk_cpu0 = proc_cpu(p.pid) or 0.0
    ctx = on_start() if on_start else None
    t_start = time.time()
    while p.poll() is None:
        if all(os.path.exists(d) for d in drained):
            break
        if time.time() > t_end:
            break
        time.sleep(0.1)
    t_drained = time.time()
    wrk_cpu1 = proc_cpu(p.pid)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if not os.path.exists(out):
        raise RuntimeError(f"wrk {tag} wrote no result; see wrk-{tag}.log")
    with open(out) as f:
        r = json.load(f)
    for t in range(threads):
        for m in (f"{out}.ready.{t}", f"{out}.drained.{t}"):
            if os.path.exists(m):
                os.remove(m)
    ths = r["threads"]
    ok = sum(t["ok"] for t in ths)
    rate_req = 0.0
    for t in ths:
        stop = t["exhausted_at"] if t["exhausted_at"] else t["t_start"] + duration
        span = max(stop - t["t_start"], 1e-6)
        rate_req += t["ok_before"] / span
    statuses = {}
    for t in ths:
        for k, v in t["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    sent = sum(t["sent"] for t in ths) - 1  # wrk calls request() once to verify the script
    responses = sum(statuses.values())
    e = r["wrk"]["errors"]
    non2xx = sum(v for k, v in statuses.items() if not k.startswith("2"))
    res = {
        "conns": conns,
        "ok_requests": ok,
        "sent_requests": sent,
        "responses": responses,
        "unanswered": max(sent - responses, 0),
        "statuses": statuses,
        "socket_errors": {"connect": e["connect"], "read": e["read"], "write": e["write"]},
        "non2xx": non2xx,
        "errors": non2xx + e["connect"] + e["read"] + e["write"] + max(sent - responses, 0),
        "req_per_s": rate_req,
        "p50_ms": r["latency_us"]["p50"] / 1000.0,
        "p90_ms": r["latency_us"]["p90"] / 1000.0,
        "p99_ms": r["latency_us"]["p99"] / 1000.0,
        "max_ms": r["latency_us"]["max"] / 1000.0,
        "exhausted": any(t["exhausted_at"] for t in ths),
        "next_index": [t["next_index"] for t in ths],
        "accepted_sum": sum(t["accepted_sum"] for t in ths),
        "client_cpu_s": round((wrk_cpu1 or 0.0) - wrk_cpu0, 2),
        "drain_s": round(t_drained - t_start - duration, 2),
        "ctx": ctx,
    }
    return res


# ---------------------------------------------------------------- systems

def bench_ceiling(run_dir, procs, results):
    conf_dir = os.path.join(run_dir, "nginx")
    os.makedirs(os.path.join(conf_dir, "logs"), exist_ok=True)
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/logs/error.log warn;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  client_body_temp_path {conf_dir}/body;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_max_body_size 16m;
  server {{
    listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location / {{ return 204; }}
  }}
}}
""")
    p = procs.start("nginx", ["nginx", "-c", conf, "-p", conf_dir, "-g", "daemon off;"])
    wait_http(f"http://127.0.0.1:{PORTS['nginx']}/", ok=(204,), proc=p, what="nginx")
    pool = make_pool(run_dir, "ceiling", "json", f"127.0.0.1:{PORTS['nginx']}", 2000,
                     int(time.time() * 1000))
    for c in CFG["conns"]:
        win = CpuWindow({"server": lambda: pids_by_comm("nginx")})
        r = run_wrk(run_dir, f"ceiling-{c}", PORTS["nginx"], pool, c, CFG["duration_s"], [0] * CFG["threads"],
                    cycle=True, on_start=win.start)
        cpu = win.stop()
        r.update(system="ceiling", format="nginx 204, same JSON bodies", cpu=cpu,
                 samples_per_s=r["req_per_s"] * gen.PER_REQ)
        add_other_cpu(r)
        log(f"ceiling @{c}: {r['req_per_s']:.0f} req/s ({r['samples_per_s']:.0f} samples/s equiv), "
            f"p99 {r['p99_ms']:.1f} ms, wrk CPU {r['client_cpu_s']}s")
        results.append(r)
    procs.stop(p)
    drop_pool(pool)


def measure_peer(run_dir, results, p, system, kind, fmt, count):
    """Runs every connection-count phase against a peer process `p` and appends a row per
    phase; `count()` returns (stored samples, extra fields for the row)."""
    port = PORTS[system]
    ph = Phases(run_dir, system, kind, f"127.0.0.1:{port}", port,
                CFG[f"cap_{system}"], int(time.time() * 1000) - 20 * 60 * 1000)
    acked = 0
    for i, c in enumerate(CFG["conns"]):
        starts = ph.prepare(i, c)
        acked += ph.warm_ok_samples if i == 0 else 0
        win = CpuWindow({"server": lambda: [p.pid]})
        r = run_wrk(run_dir, f"{system}-{c}", port, ph.pool, c, CFG["duration_s"], starts,
                    on_start=lambda: (reset_hwm(p.pid), win.start()))
        cpu = win.stop()
        acked += r["ok_requests"] * gen.PER_REQ
        stored, extra = count()
        r.update(system=system, format=fmt, cpu=cpu, server_cpu_s=cpu["server"],
                 samples_per_s=r["req_per_s"] * gen.PER_REQ,
                 peak_rss_bytes=proc_status(p.pid, "VmHWM"),
                 acked_total=acked, stored_total=stored, **extra,
                 verified=(stored == acked) if r["unanswered"] == 0 else
                 (acked <= stored <= acked + r["unanswered"] * gen.PER_REQ))
        finish_row(r)
        results.append(r)
        ph.done(r)


def bench_influxdb(run_dir, procs, results):
    d = os.path.join(run_dir, "influxdb")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "influxdb.conf")
    with open(conf, "w") as f:
        f.write(f"""reporting-disabled = true
bind-address = "127.0.0.1:{PORTS['influxdb_rpc']}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{PORTS['influxdb']}"
  log-enabled = false
[continuous_queries]
  enabled = false
""")
    p = procs.start("influxdb", ["influxd", "-config", conf])
    base = f"http://127.0.0.1:{PORTS['influxdb']}"
    wait_http(base + "/ping", ok=(204,), proc=p, what="influxd")
    st, body = http("POST", base + "/query?q=" + urllib.parse.quote("CREATE DATABASE bench"))
    if st != 200:
        raise RuntimeError(f"influxdb: CREATE DATABASE answered {st} {body[:200]!r}")
    measure_peer(run_dir, results, p, "influxdb", "influx", "line protocol",
                 lambda: influx_count(base))
    procs.stop(p)


def influx_count(base):
    q = urllib.parse.quote('SELECT count("value") FROM /.*/')
    st, body = http("GET", f"{base}/query?db=bench&q={q}", timeout=300)
    if st != 200:
        log(f"influxdb count query answered {st}: {body[:200]!r}")
        return None, {}
    total = 0
    for res in json.loads(body).get("results", []):
        for s in res.get("series", []) or []:
            for v in s["values"]:
                total += int(v[1])
    return total, {}




def bench_prometheus(run_dir, procs, results):
    d = os.path.join(run_dir, "prometheus")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "prometheus.yml")
    with open(conf, "w") as f:
        # No scrapes. A wrk connection cannot own its series, so requests for the same
        # series can overtake each other in flight: accept them (out-of-order window)
        # instead of counting them as errors.
        f.write("global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\n"
                "scrape_configs: []\n")
    p = procs.start("prometheus", ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={d}/data",
                                   f"--web.listen-address=127.0.0.1:{PORTS['prometheus']}",
                                   "--web.enable-remote-write-receiver", "--log.level=warn",
                                   # default 512: connections past it would wait in the accept queue
                                   f"--web.max-connections={max(CFG['conns']) + 1024}"])
    base = f"http://127.0.0.1:{PORTS['prometheus']}"
    wait_http(base + "/-/ready", proc=p, what="prometheus")
    measure_peer(run_dir, results, p, "prometheus", "prom", "remote write (snappy protobuf)",
                 lambda: prom_count(base))
    procs.stop(p)


def prom_count(base):
    stored = 0
    for name in gen.PROM_NAMES:
        q = urllib.parse.quote(f"sum(count_over_time({name}[3h]))")
        st, body = http("GET", f"{base}/api/v1/query?query={q}&time={time.time():.3f}", timeout=300)
        if st != 200:
            log(f"prometheus count query answered {st}: {body[:300]!r}")
            stored = None
            break
        res = json.loads(body)["data"]["result"]
        stored += int(float(res[0]["value"][1])) if res else 0
    selfm = {}
    st, body = http("GET", f"{base}/metrics")
    for line in body.decode().splitlines():
        for k in ("prometheus_tsdb_head_samples_appended_total", "prometheus_tsdb_out_of_order_samples_total",
                  "prometheus_tsdb_head_out_of_order_samples_appended_total",
                  "prometheus_tsdb_out_of_bound_samples_total", "prometheus_tsdb_head_series"):
            if line.startswith(k):
                selfm[line.split(" ")[0]] = float(line.split(" ")[1])
    return stored, {"prometheus_self": selfm}


# ---------------------------------------------------------------- tidemark

class Tidemark:
    def __init__(self, run_dir, procs, run_id, binary):
        self.run_dir, self.procs, self.bin = run_dir, procs, binary
        self.db = f"tm_bench_{run_id}"
        self.prefix = f"bench{run_id}"
        self.env = dict(os.environ)
        self.env.update({
            "TIDEMARK_KAFKA_BROKERS": f"127.0.0.1:{CFG['tansu_port']}",
            "TIDEMARK_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.db}",
            "TIDEMARK_REDIS_URL": "redis://127.0.0.1:6379",
            "TIDEMARK_TOPIC_PREFIX": self.prefix,
            "TIDEMARK_INGEST_ADDR": f"127.0.0.1:{PORTS['ingest']}",
            "TIDEMARK_API_ADDR": f"127.0.0.1:{PORTS['api']}",
            "TIDEMARK_AGGREGATOR_ADDR": f"127.0.0.1:{PORTS['aggregator']}",
            "TIDEMARK_ALERTER_ADDR": f"127.0.0.1:{CFG['port_base'] + 183}",
            "TIDEMARK_LOG": os.environ.get("TIDEMARK_LOG", "warn"),
        })
        self.p = {}
        self.acked = 0
        self.pg = None

    def start(self):
        port = CFG["tansu_port"]
        if not port_free(port):
            raise RuntimeError(f"port {port} is taken; set BENCH_TANSU_PORT")
        for name in ("ingest", "api", "aggregator"):
            if not port_free(PORTS[name]):
                raise RuntimeError(f"port {PORTS[name]} is taken; set BENCH_PORT_BASE")
        self.p["tansu"] = self.procs.start("tansu", [
            os.path.expanduser(os.environ.get("TANSU", "~/.cargo/bin/tansu")), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
            "--storage-engine", "memory://tansu/"])
        t_end = time.time() + 30
        while port_free(port):
            if self.p["tansu"].poll() is not None or time.time() > t_end:
                raise RuntimeError("tansu did not start; see tansu.log")
            time.sleep(0.2)
        subprocess.run([self.bin, "migrate"], env=self.env, cwd=self.run_dir, check=True,
                       stdout=subprocess.DEVNULL)
        out = subprocess.run([self.bin, "keys", "create", "--role", "admin", "--name", "bench"], env=self.env,
                             cwd=self.run_dir, check=True, capture_output=True, text=True).stdout
        toks = re.findall(r"\S{20,}", out)
        if not toks:
            raise RuntimeError(f"no token in `tidemark keys create` output: {out!r}")
        self.token = toks[-1]
        for role in ("ingest", "aggregator", "api"):
            self.p[role] = self.procs.start(role, [self.bin, role], env=self.env)
        for role in ("ingest", "aggregator", "api"):
            wait_http(f"http://127.0.0.1:{PORTS[role]}/readyz", ok=(200,), proc=self.p[role], what=role)
        self.pg = Pg(self.db)
        log(f"tidemark pipeline up (db {self.db}, topic prefix {self.prefix})")

    def pids(self, *names):
        return [self.p[n].pid for n in names if n in self.p]

    def groups(self):
        return {
            "ingest": lambda: self.pids("ingest"),
            "aggregator": lambda: self.pids("aggregator"),
            "api": lambda: self.pids("api"),
            "tansu": lambda: self.pids("tansu"),
            "postgres": lambda: pids_by_comm("postgres"),
            "redis": lambda: pids_by_comm("redis-server"),
        }

    def stored(self):
        return self.pg.scalar("SELECT COALESCE(sum(count), 0)::bigint FROM buckets")

    def ingest_metrics(self):
        """Ingest's /metrics text, or None if ingest does not answer."""
        try:
            st, body = http("GET", f"http://127.0.0.1:{PORTS['ingest']}/metrics", timeout=5)
        except Exception:  # noqa: BLE001
            return None
        return body.decode()

    def ingest_accepted(self):
        text = self.ingest_metrics()
        if text is None:
            return None
        m = re.search(r"^tidemark_ingest_samples_accepted_total(?:\{[^}]*\})? (\S+)$", text, re.M)
        return int(float(m.group(1))) if m else 0

    def histograms(self):
        """Ingest's own cumulative histograms of POST /v1/samples request time and of
        broker acknowledgement time, as {"request"|"ack": {le: count}}; None if ingest
        does not answer."""
        text = self.ingest_metrics()
        if text is None:
            return None
        out = {"request": {}, "ack": {}}
        for line in text.splitlines():
            m = re.match(r'^(\w+)_bucket\{(.*)\} (\S+)$', line)
            if not m:
                continue
            name, labels, v = m.groups()
            le = re.search(r'le="([^"]+)"', labels).group(1)
            if name == "tidemark_http_request_duration_seconds" and 'route="/v1/samples"' in labels:
                out["request"][le] = out["request"].get(le, 0) + float(v)
            elif name == "tidemark_ingest_broker_ack_seconds":
                out["ack"][le] = float(v)
        return out

    def wait_caught_up(self, target, limit):
        t0 = time.time()
        s = self.stored()
        while s < target and time.time() - t0 < limit:
            time.sleep(0.5)
            s = self.stored()
        return s, time.time() - t0

    def stop(self):
        for role in ("api", "aggregator", "ingest", "tansu"):
            if role in self.p:
                self.procs.stop(self.p[role])
        if self.pg:
            self.pg.close()

    def cleanup(self):
        if os.environ.get("BENCH_KEEP"):
            log(f"kept database {self.db} and Redis keys {self.prefix}:*")
            return
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'], check=False)
        keys = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern",
                               f"{self.prefix}:*"], capture_output=True, text=True).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "del", *keys[i:i + 500]],
                           stdout=subprocess.DEVNULL, check=False)


class Pg:
    """A persistent psql session (one query at a time)."""

    def __init__(self, db):
        self.p = subprocess.Popen(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-At", "-q",
                                   "-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lock = threading.Lock()

    def scalar(self, sql):
        with self.lock:
            self.p.stdin.write(sql.rstrip(";") + ";\n\\echo __bench_end__\n")
            self.p.stdin.flush()
            lines = []
            while True:
                line = self.p.stdout.readline()
                if not line or line.strip() == "__bench_end__":
                    break
                lines.append(line.strip())
        try:
            return int(lines[-1])
        except (IndexError, ValueError):
            raise RuntimeError(f"psql: {lines!r}")

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(5)
        except Exception:  # noqa: BLE001
            self.p.kill()


class Sampler(threading.Thread):
    """During a Tidemark phase: stored samples, ingest's accepted counter (lag), and
    the health-view read latency."""

    def __init__(self, tm):
        super().__init__(daemon=True)
        self.tm = tm
        self.stop_ev = threading.Event()
        self.series = []  # (t, accepted_by_ingest, stored)
        self.health = []  # latency seconds
        self.health_errors = {}
        self.health_thread = threading.Thread(target=self.health_loop, daemon=True)

    def run(self):
        self.health_thread.start()
        while not self.stop_ev.is_set():
            t = time.time()
            try:
                self.series.append((t, self.tm.ingest_accepted(), self.tm.stored()))
            except Exception as e:  # noqa: BLE001
                log(f"sampler: {e}")
            self.stop_ev.wait(max(0.0, 1.0 - (time.time() - t)))

    def health_loop(self):
        import http.client
        conn = None
        while not self.stop_ev.is_set():
            t = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", PORTS["api"], timeout=30)
                conn.request("GET", "/v1/health/services", headers={"Authorization": f"Bearer {self.tm.token}"})
                r = conn.getresponse()
                r.read()
                dtm = time.time() - t
                if r.status == 200:
                    self.health.append(dtm)
                else:
                    self.health_errors[str(r.status)] = self.health_errors.get(str(r.status), 0) + 1
            except Exception as e:  # noqa: BLE001
                self.health_errors[type(e).__name__] = self.health_errors.get(type(e).__name__, 0) + 1
                conn = None
            self.stop_ev.wait(max(0.0, CFG["health_interval_s"] - (time.time() - t)))

    def finish(self):
        self.stop_ev.set()
        self.join(10)
        self.health_thread.join(35)


def pct(vals, p):
    if not vals:
        return None
    v = sorted(vals)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def add_other_cpu(r):
    cpu = r.get("cpu") or {}
    if "_machine_busy" in cpu:
        # CPU the machine spent on anything but the measured processes and wrk (other
        # users' builds and tests, the benchmark's own sampler): a sign of interference
        own = sum(v for k, v in cpu.items() if not k.startswith("_")) + (r.get("client_cpu_s") or 0.0)
        r["other_cpu_s"] = round(cpu["_machine_busy"] - own, 2)
        r["other_cpu_share"] = round(r["other_cpu_s"] / max(cpu["_wall"] * (os.cpu_count() or 1), 1e-6), 3)


def finish_row(r):
    add_other_cpu(r)
    ok = r["ok_requests"] * gen.PER_REQ
    r["accepted_samples"] = ok
    srv = r.get("server_cpu_s")
    r["cpu_s_per_msample"] = (srv / (ok / 1e6)) if (srv is not None and ok) else None
    if r.get("pipeline_cpu_s") is not None and ok:
        r["pipeline_cpu_s_per_msample"] = r["pipeline_cpu_s"] / (ok / 1e6)
    note = " (POOL EXHAUSTED: raise BENCH_CAP_*)" if r["exhausted"] else ""
    log(f"{r['system']} {r['format']} @{r['conns']}: {r['samples_per_s']:.0f} samples/s, p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']} {r['statuses']}, "
        f"CPU {r['cpu_s_per_msample'] or 0:.2f} s/Msample, stored {r.get('stored_total')} / acked "
        f"{r.get('acked_total')} -> {'OK' if r.get('verified') else 'MISMATCH'}{note}")


SHARE_LIMITS = ("0.01", "0.025", "0.05", "0.25")


def shares_within(before, after):
    """Share of POST /v1/samples requests (as timed inside ingest) and of broker
    acknowledgements that took at most each of SHARE_LIMITS seconds between two
    snapshots of ingest's histograms; tells server-side from client-side latency."""
    if not before or not after:
        return None
    out = {}
    for kind in ("request", "ack"):
        total = after[kind].get("+Inf", 0) - before[kind].get("+Inf", 0)
        out[kind] = {le: (after[kind].get(le, 0) - before[kind].get(le, 0)) / total
                     for le in SHARE_LIMITS} if total else {}
        out[kind + "_n"] = int(total)
    return out


def bench_tidemark(run_dir, procs, results, run_id, binary, profile=False):
    tm = Tidemark(run_dir, procs, run_id, binary)
    try:
        tm.start()
        host = f"127.0.0.1:{PORTS['ingest']}"
        now_ms = int(time.time() * 1000)
        formats = CFG["tm_formats"]
        for fi, fmt in enumerate(formats):
            # distinct time ranges per format, all within the accepted window
            ph = Phases(run_dir, f"tidemark-{fmt}", fmt, host, PORTS["ingest"], CFG["cap_tidemark"],
                        now_ms - (40 - 15 * fi) * 60 * 1000, tm.token)
            for i, c in enumerate(CFG["conns"]):
                starts = ph.prepare(i, c)
                if i == 0:
                    tm.acked += ph.warm_ok_samples
                    tm.wait_caught_up(tm.acked, CFG["catchup_max_s"])
                stored0 = tm.stored()
                win = CpuWindow(tm.groups())
                sampler = Sampler(tm)
                perf = {}

                def on_start(win=win, sampler=sampler, perf=perf):
                    for role in ("ingest", "aggregator", "api"):
                        reset_hwm(tm.p[role].pid)
                    win.start()
                    sampler.start()
                    if profile:
                        perf["p"] = start_perf(run_dir, tm.p["ingest"].pid, CFG["duration_s"])

                hist0 = tm.histograms()
                r = run_wrk(run_dir, f"tidemark-{fmt}-{c}", PORTS["ingest"], ph.pool, c, CFG["duration_s"],
                            starts, on_start=on_start)
                cpu_phase = win.stop()
                ingest_side = shares_within(hist0, tm.histograms())
                rss = {role: proc_status(tm.p[role].pid, "VmHWM") for role in ("ingest", "aggregator", "api")}
                rss["tansu"] = proc_status(tm.p["tansu"].pid, "VmRSS")
                starts = r["next_index"]
                phase_acked = r["ok_requests"] * gen.PER_REQ
                tm.acked += phase_acked
                # let the aggregator fold the rest; its CPU for this phase's samples counts too
                t_c = time.time()
                stored_end_of_load = tm.stored()
                stored, catchup_s = tm.wait_caught_up(tm.acked, CFG["catchup_max_s"])
                sampler.finish()
                cpu_all = win.stop()
                if profile and perf.get("p"):
                    finish_perf(run_dir, perf["p"])
                # aggregator fold rate: stored delta over the load phase, and while catching up
                ser = sampler.series
                load_pts = [s for s in ser if s[0] <= t_c]
                lags = [a - s for (_, a, s) in ser if a is not None]
                if len(load_pts) >= 2:
                    fold_load = (load_pts[-1][2] - load_pts[0][2]) / max(load_pts[-1][0] - load_pts[0][0], 1e-6)
                else:
                    fold_load = None
                fold_overall = (stored - stored0) / max(time.time() - (ser[0][0] if ser else t_c), 1e-6)
                hl = sampler.health
                pipeline_cpu = sum(cpu_all[k] for k in ("ingest", "aggregator", "api", "tansu", "postgres", "redis"))
                r.update(
                    system="tidemark", format={"json": "JSON", "jsongz": "gzip JSON"}[fmt], cpu=cpu_phase,
                    cpu_with_catchup=cpu_all, server_cpu_s=cpu_phase["ingest"], pipeline_cpu_s=pipeline_cpu,
                    samples_per_s=r["req_per_s"] * gen.PER_REQ, peak_rss_bytes=rss["ingest"], rss=rss,
                    tidemark_rss_bytes=sum(v for k, v in rss.items() if k != "tansu" and v),
                    acked_total=tm.acked, stored_total=stored, ingest_accepted_metric=tm.ingest_accepted(),
                    stored_at_load_end=stored_end_of_load,
                    lag_at_load_end=tm.acked - stored_end_of_load,
                    max_lag=max(lags) if lags else None, catchup_s=round(catchup_s, 1),
                    fold_rate_during_load=fold_load, fold_rate_overall=fold_overall,
                    health={"n": len(hl), "p50_ms": (pct(hl, 50) or 0) * 1000, "p99_ms": (pct(hl, 99) or 0) * 1000,
                            "max_ms": (max(hl) if hl else 0) * 1000, "errors": sampler.health_errors},
                    accepted_body_sum_ok=(r["accepted_sum"] == phase_acked), ingest_side=ingest_side,
                    verified=(stored == tm.acked) if r["unanswered"] == 0 else
                    (tm.acked <= stored <= tm.acked + r["unanswered"] * gen.PER_REQ),
                )
                finish_row(r)
                fr = r["fold_rate_during_load"]
                log(f"  aggregator: {fr or 0:.0f} samples/s during load, lag at end {r['lag_at_load_end']}, "
                    f"max lag {r['max_lag']}, caught up in {r['catchup_s']}s; health view p50 "
                    f"{r['health']['p50_ms']:.1f} ms p99 {r['health']['p99_ms']:.1f} ms (n={r['health']['n']}, "
                    f"errors {r['health']['errors']})")
                if ingest_side:
                    log("  ingest's own view (share within 10/25/50/250 ms): requests "
                        + " / ".join(f"{ingest_side['request'].get(le, 0):.2%}" for le in SHARE_LIMITS)
                        + "; broker acks "
                        + " / ".join(f"{ingest_side['ack'].get(le, 0):.2%}" for le in SHARE_LIMITS))
                results.append(r)
                ph.done(r)
    finally:
        tm.stop()
        tm.cleanup()


def start_perf(run_dir, pid, duration):
    if not shutil.which("perf"):
        log("perf not installed; no profile")
        return None
    out = os.path.join(run_dir, "perf.data")
    return subprocess.Popen(["perf", "record", "-F", "199", "--call-graph", "dwarf,8192", "-p", str(pid),
                             "-o", out, "--", "sleep", str(int(duration))],
                            stdout=open(os.path.join(run_dir, "perf-record.log"), "wb"), stderr=subprocess.STDOUT)


def finish_perf(run_dir, p):
    p.wait(120)
    out = os.path.join(run_dir, "perf.data")
    rep = os.path.join(run_dir, "perf-report.txt")
    with open(rep, "w") as f:
        subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "dso,symbol", "--stdio",
                        "--percent-limit", "0.7", "-g", "none"], stdout=f, stderr=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "perf-report-children.txt"), "w") as f:
        subprocess.run(["perf", "report", "-i", out, "--children", "--sort", "symbol", "--stdio",
                        "--percent-limit", "2", "-g", "none"], stdout=f, stderr=subprocess.DEVNULL)
    log(f"perf profile of ingest: {rep}")


# ---------------------------------------------------------------- c10k

def bench_c10k(run_dir, procs, run_id, binary):
    """10,000 keep-alive connections to ingest and 10,000 to the API at a modest rate.

    Before: a short seed load at 64 connections (so all 3,000 series and their buckets
    exist and the health view has something to compute) and the health view's own
    ceiling at a few connections, to put the paced API load in context."""
    tm = Tidemark(run_dir, procs, run_id, binary)
    res = {"mode": "c10k"}
    try:
        tm.start()
        conns, dur = CFG["c10k_conns"], CFG["c10k_duration_s"]
        ingest_host, api_host = f"127.0.0.1:{PORTS['ingest']}", f"127.0.0.1:{PORTS['api']}"
        base_ms = int(time.time() * 1000) - 30 * 60 * 1000
        cth, ramp = CFG["c10k_threads"], CFG["c10k_ramp_s"]
        hpool = make_pool(run_dir, "c10k-api", "health", api_host, 2 * cth, 0, tm.token, threads=cth)

        # seed
        seed_s = CFG["c10k_seed_s"]
        spool = make_pool(run_dir, "c10k-seed", "json", ingest_host, int(400_000 * seed_s / gen.PER_REQ) + 64,
                          base_ms, tm.token)
        base_ms += 400_000 * int(seed_s) // gen.PER_REQ // gen.BLOCKS + 1000
        seed = run_wrk(run_dir, "c10k-seed", PORTS["ingest"], spool, 64, seed_s, [0] * CFG["threads"])
        drop_pool(spool)
        tm.acked += seed["ok_requests"] * gen.PER_REQ
        tm.wait_caught_up(tm.acked, CFG["catchup_max_s"])
        log(f"seed: {seed['req_per_s'] * gen.PER_REQ:,.0f} samples/s for {seed_s:.0f}s, statuses {seed['statuses']}")

        # health view ceiling
        hc_conns = CFG["c10k_api_ceiling_conns"]
        win = CpuWindow({"api": lambda: tm.pids("api"), "redis": lambda: pids_by_comm("redis-server"),
                         "postgres": lambda: pids_by_comm("postgres")})
        hc = run_wrk(run_dir, "c10k-api-ceiling", PORTS["api"], hpool, hc_conns, 10, [0] * cth,
                     cycle=True, on_start=win.start, threads=2)
        hc["cpu"] = win.stop()
        res["api_ceiling"] = hc
        log(f"health view ceiling @{hc_conns}: {hc['req_per_s']:.0f} req/s, p50 {hc['p50_ms']:.1f} ms, "
            f"p99 {hc['p99_ms']:.1f} ms, statuses {hc['statuses']}, CPU {hc['cpu']}")

        acked_before = tm.acked
        nreq = int(conns * (dur / (CFG["c10k_ingest_pace_ms"] / 1000.0) + 2) * 1.3) + 100
        pool = make_pool(run_dir, "c10k-ingest", "json", ingest_host, nreq, base_ms, tm.token, threads=cth)
        out = {}
        fds = {"ingest": 0, "api": 0}
        stop_fd = threading.Event()

        accept_q = {"ingest": 0, "api": 0}
        estab = {"ingest": 0, "api": 0}
        timeline = []

        def fd_watch():
            t0 = time.time()
            while not stop_fd.is_set():
                row = {"t": round(time.time() - t0, 1)}
                for role in fds:
                    n = fd_count(tm.p[role].pid) or 0
                    fds[role] = max(fds[role], n)
                    q, e = listen_stats(PORTS[role])
                    accept_q[role] = max(accept_q[role], q)
                    estab[role] = max(estab[role], e)
                    row[role] = {"fds": n, "accept_queue": q, "established": e}
                timeline.append(row)
                stop_fd.wait(2)

        for role in ("ingest", "aggregator", "api"):
            reset_hwm(tm.p[role].pid)
        tcp0 = tcp_counters()
        tcp0["RetransSegs"] = tcp_retrans()
        backlogs = {role: listen_backlog(PORTS[role]) for role in ("ingest", "api")}
        win = CpuWindow(tm.groups())
        win.start()
        fw = threading.Thread(target=fd_watch, daemon=True)
        fw.start()
        sampler = Sampler(tm)
        sampler.start()
        drain = max(CFG["drain_max_s"], 40)

        def go(key, port, pl, cycle, pace):
            try:
                out[key] = run_wrk(run_dir, f"c10k-{key}", port, pl, conns, dur, [0] * cth, cycle=cycle,
                                   pace_ms=pace, drain_max=drain, threads=cth, ramp_s=ramp)
            except Exception as e:  # noqa: BLE001
                out[key] = {"error": str(e)}

        ti = threading.Thread(target=go, args=("ingest", PORTS["ingest"], pool, False, CFG["c10k_ingest_pace_ms"]))
        ta = threading.Thread(target=go, args=("api", PORTS["api"], hpool, True, CFG["c10k_api_pace_ms"]))
        ti.start()
        ta.start()
        ti.join()
        ta.join()
        stop_fd.set()
        cpu = win.stop()
        tcp1 = tcp_counters()
        tcp1["RetransSegs"] = tcp_retrans()
        wrk_cpu = sum((out.get(k) or {}).get("client_cpu_s") or 0 for k in ("ingest", "api"))
        other_cpu = round(cpu["_machine_busy"] - sum(v for k, v in cpu.items() if not k.startswith("_")) - wrk_cpu, 1)
        tcp = {k: tcp1[k] - tcp0.get(k, 0) for k in tcp1}
        all_conn_s = {}
        for role in ("ingest", "api"):
            t_all = next((row["t"] for row in timeline if row[role]["established"] >= conns), None)
            all_conn_s[role] = t_all
        rss = {role: {"hwm": proc_status(tm.p[role].pid, "VmHWM"), "rss": proc_status(tm.p[role].pid, "VmRSS")}
               for role in ("ingest", "aggregator", "api")}
        rss["tansu"] = {"rss": proc_status(tm.p["tansu"].pid, "VmRSS")}
        ing = out["ingest"]
        acked = ing.get("ok_requests", 0) * gen.PER_REQ
        tm.acked += acked
        # wait for the count to settle: requests answered 503 may still be delivered
        stored, catchup = tm.wait_caught_up(tm.acked, CFG["catchup_max_s"])
        t0, last, stable_since = time.time(), stored, time.time()
        while time.time() - stable_since < 5 and time.time() - t0 < 60:
            time.sleep(1)
            cur = tm.stored()
            if cur != last:
                last, stable_since = cur, time.time()
        stored = last
        sampler.finish()
        refused = sum(v for k, v in ing.get("statuses", {}).items() if not k.startswith("2")) * gen.PER_REQ
        unknown = ing.get("unanswered", 0) * gen.PER_REQ
        res.update(config={k: CFG[k] for k in ("c10k_conns", "c10k_duration_s", "c10k_ingest_pace_ms",
                                               "c10k_api_pace_ms", "c10k_seed_s", "c10k_threads", "c10k_ramp_s")},
                   seed=seed, ingest=ing, api=out["api"], rss=rss, cpu=cpu, max_fds=fds,
                   max_accept_queue=accept_q, max_established=estab, timeline=timeline, tcp_counters=tcp,
                   all_connected_after_s=all_conn_s, listen_backlog=backlogs, other_cpu_s=other_cpu,
                   other_cpu_share=round(other_cpu / max(cpu["_wall"] * (os.cpu_count() or 1), 1e-6), 3),
                   acked_total=tm.acked, acked_c10k=acked, acked_before=acked_before, stored_total=stored,
                   stored_beyond_acked=stored - tm.acked, refused_samples=refused, unanswered_samples=unknown,
                   catchup_s=round(catchup, 1),
                   verified_exact=(stored == tm.acked),
                   verified_bounds=(tm.acked <= stored <= tm.acked + refused + unknown),
                   max_lag=max((a - s for (_, a, s) in sampler.series if a is not None), default=None))
        for key in ("ingest", "api"):
            o = out[key]
            if "error" in o:
                log(f"c10k {key}: {o['error']}")
                continue
            log(f"c10k {key}: {o['conns']} conns, {o['req_per_s']:.0f} req/s, p50 {o['p50_ms']:.1f} ms, "
                f"p99 {o['p99_ms']:.1f} ms, max {o['max_ms']:.0f} ms, statuses {o['statuses']}, socket errors "
                f"{o['socket_errors']}, unanswered {o['unanswered']}, wrk CPU {o['client_cpu_s']}s")
        log("c10k RSS: " + ", ".join(f"{k} {fmt_mb(v.get('hwm') or v.get('rss'))} MB" for k, v in rss.items())
            + f"; max open fds ingest {fds['ingest']} api {fds['api']}; max established (kernel) {estab}; "
            f"max accept queue {accept_q} (listen backlog {backlogs}); all connected after {all_conn_s} s; "
            f"TCP {tcp}; CPU s {cpu}; other CPU (not measured processes, not wrk) {other_cpu}s")
        log(f"c10k stored {stored:,} / acked {tm.acked:,} (refused {refused:,}, unanswered {unknown:,}) -> "
            f"{'exact' if res['verified_exact'] else ('within bounds' if res['verified_bounds'] else 'MISMATCH')}")
        drop_pool(pool)
    finally:
        tm.stop()
        tm.cleanup()
    return res


def tcp_counters():
    """Listen-queue counters of this network namespace (/proc/net/netstat TcpExt)."""
    want = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent", "TCPReqQFullDoCookies")
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for i in range(0, len(lines) - 1, 2):
            if lines[i].startswith("TcpExt:"):
                names, vals = lines[i].split()[1:], lines[i + 1].split()[1:]
                d = dict(zip(names, (int(v) for v in vals)))
                return {k: d.get(k, 0) for k in want}
    except OSError:
        pass
    return {}


def tcp_retrans():
    try:
        with open("/proc/net/snmp") as f:
            lines = [l.split() for l in f if l.startswith("Tcp:")]
        return int(dict(zip(lines[0][1:], lines[1][1:]))["RetransSegs"])
    except (OSError, KeyError, IndexError, ValueError):
        return 0


def listen_backlog(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    return int(out[2]) if len(out) > 2 else None


def listen_stats(port):
    """(accept queue length of the listener, established server-side connections)."""
    q = e = 0
    try:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            q = max(q, int(line.split()[1]))
        out = subprocess.run(["ss", "-Htn", "state", "established", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout
        e = len(out.splitlines())
    except Exception:  # noqa: BLE001
        pass
    return q, e


def fmt_mb(b):
    return f"{b / 2**20:.0f}" if b else "-"


# ---------------------------------------------------------------- table

def f0(v):
    return "-" if v is None else f"{v:,.0f}"


def f1(v):
    return "-" if v is None else f"{v:.1f}"


def f2(v):
    return "-" if v is None else f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def load_cell(r):
    w = (r.get("cpu") or {}).get("_wall") or 0
    cores = os.cpu_count() or 1
    wrk = r.get("client_cpu_s") or 0
    other = r.get("other_cpu_s")
    if not w:
        return "-"
    return f"{100 * wrk / (w * cores):.0f}% / {100 * (other or 0) / (w * cores):.0f}%"


def build_table(results):
    lines = []
    hdr = ("| system | format | conns | samples/s | p50 ms | p99 ms | errors | server CPU s/Msample "
           "| peak RSS MB | stored = acked | wrk CPU / other CPU |")
    lines += [hdr, "|" + "---|" * 11]
    for r in results:
        if r["system"] == "ceiling":
            lines.append(f"| wrk ceiling (nginx `return 204`) | same JSON bodies | {r['conns']} | "
                         f"{f0(r['samples_per_s'])} ({f0(r['req_per_s'])} req/s) | {f1(r['p50_ms'])} | "
                         f"{f1(r['p99_ms'])} | {r['errors']} | - | - | - | {load_cell(r)} |")
            continue
        cpu = f2(r["cpu_s_per_msample"])
        rss = fmt_mb(r.get("peak_rss_bytes"))
        if r["system"] == "tidemark":
            cpu += f" (pipeline {f2(r.get('pipeline_cpu_s_per_msample'))})"
            rss += f" (all roles {fmt_mb(r.get('tidemark_rss_bytes'))})"
        ver = f"{'yes' if r['verified'] else 'NO'} ({f0(r['stored_total'])} / {f0(r['acked_total'])})"
        ex = " (pool exhausted)" if r["exhausted"] else ""
        lines.append(f"| {r['system']} | {r['format']} | {r['conns']} | {f0(r['samples_per_s'])}{ex} | "
                     f"{f1(r['p50_ms'])} | {f1(r['p99_ms'])} | {r['errors']} | {cpu} | {rss} | {ver} | "
                     f"{load_cell(r)} |")
    tm = [r for r in results if r["system"] == "tidemark"]
    if tm:
        lines += ["", "Tidemark pipeline during the same phases:", "",
                  "| format | conns | aggregator fold rate samples/s (during load / overall) | lag at load end "
                  "| max lag | catch-up s | health view p50 / p99 ms (n) | CPU s by process (load phase) |",
                  "|" + "---|" * 8]
        for r in tm:
            c = r["cpu_with_catchup"]
            cpu = ", ".join(f"{k} {c[k]}" for k in ("ingest", "aggregator", "api", "tansu", "postgres", "redis"))
            h = r["health"]
            lines.append(f"| {r['format']} | {r['conns']} | {f0(r['fold_rate_during_load'])} / "
                         f"{f0(r['fold_rate_overall'])} | {f0(r['lag_at_load_end'])} | {f0(r['max_lag'])} | "
                         f"{r['catchup_s']} | {f1(h['p50_ms'])} / {f1(h['p99_ms'])} ({h['n']}) | {cpu} |")
    ratios = compute_ratios(results)
    if ratios:
        lines += ["", "Ratios (Tidemark / peer, same run; >1 is better for samples/s, worse for the rest):", "",
                  "| Tidemark | vs | conns | samples/s | p50 | p99 | CPU/sample (ingest) | CPU/sample (pipeline) "
                  "| peak RSS (ingest) |", "|" + "---|" * 9]
        for x in ratios:
            lines.append(f"| {x['tidemark']} | {x['peer']} | {x['conns']} | {f2(x['samples_per_s'])} | "
                         f"{f2(x['p50'])} | {f2(x['p99'])} | {f2(x['cpu_ingest'])} | {f2(x['cpu_pipeline'])} | "
                         f"{f2(x['rss'])} |")
    return "\n".join(lines)


def compute_ratios(results):
    out = []
    for r in results:
        if r["system"] != "tidemark":
            continue
        for peer in ("influxdb", "prometheus"):
            q = next((x for x in results if x["system"] == peer and x["conns"] == r["conns"]), None)
            if not q:
                continue
            out.append({
                "tidemark": r["format"], "peer": peer, "conns": r["conns"],
                "samples_per_s": ratio(r["samples_per_s"], q["samples_per_s"]),
                "p50": ratio(r["p50_ms"], q["p50_ms"]), "p99": ratio(r["p99_ms"], q["p99_ms"]),
                "cpu_ingest": ratio(r["cpu_s_per_msample"], q["cpu_s_per_msample"]),
                "cpu_pipeline": ratio(r.get("pipeline_cpu_s_per_msample"), q["cpu_s_per_msample"]),
                "rss": ratio(r.get("peak_rss_bytes"), q.get("peak_rss_bytes")),
            })
    return out


def machine_info(binary):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    st = os.stat(binary)
    bin_info = (dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).strftime("built %Y-%m-%d %H:%M UTC")
                + ", sha256 " + sh(f"sha256sum {binary} | cut -c1-12"))
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model, "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1),
        "kernel": platform.release(), "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "versions": {
            "tidemark": sh(f"cd {REPO} && git rev-parse --short HEAD") + (
                " (dirty tree)" if sh(f"cd {REPO} && git status --porcelain -uno") else "") + " at run time",
            "tidemark_binary": bin_info,
            "influxdb": sh("influxd version"), "prometheus": sh("prometheus --version 2>&1 | head -1"),
            "wrk": sh("wrk -v 2>&1 | head -1"), "nginx": sh("nginx -v 2>&1"),
            "tansu": sh(f"{os.path.expanduser('~/.cargo/bin/tansu')} --version 2>&1 | head -1"),
            "postgres": sh("psql -h 127.0.0.1 -U postgres -Atc 'show server_version'"),
            "redis": sh("redis-cli -h 127.0.0.1 info server | grep redis_version"),
        },
        "nofile_limit": sh("ulimit -n"),
    }


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    binary = os.environ["TIDEMARK_BIN"]
    out_root = os.path.join(REPO, "target", "bench")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp[2:8]}{stamp[9:15]}".lower()
    run_dir = os.path.join(out_root, f"run-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    # keep the binary we measure, whatever is rebuilt meanwhile
    bin_copy = os.path.join(run_dir, "tidemark")
    shutil.copy2(binary, bin_copy)
    global PROCS
    procs = PROCS = Procs(run_dir)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    info = machine_info(binary)
    log(f"mode {mode}; run dir {run_dir}; {info['cpu']} x{info['cores']}, load {info['loadavg_at_start']}")
    results = []
    report = {"mode": mode, "machine": info, "config": CFG, "ports": PORTS}
    t0 = time.time()
    try:
        if mode == "c10k":
            report["c10k"] = bench_c10k(run_dir, procs, run_id, bin_copy)
        elif mode == "profile":
            CFG["conns"] = [CFG["conns"][0]]
            CFG["tm_formats"] = ["json"]
            bench_tidemark(run_dir, procs, results, run_id, bin_copy, profile=True)
        else:
            for system in CFG["systems"]:
                log(f"=== {system}")
                {"ceiling": bench_ceiling, "influxdb": bench_influxdb, "prometheus": bench_prometheus}.get(
                    system, lambda *a: None)(run_dir, procs, results)
                if system == "tidemark":
                    bench_tidemark(run_dir, procs, results, run_id, bin_copy)
    finally:
        procs.stop_all()
        report["results"] = results
        report["ratios"] = compute_ratios(results)
        report["elapsed_s"] = round(time.time() - t0, 1)
        path = os.path.join(out_root, f"bench-{mode}-{stamp}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=str)
        shutil.copy2(path, os.path.join(out_root, f"latest-{mode}.json"))
        # pools and the peers' data are large; logs, wrk results and perf data stay
        drop = ["pools"] if os.environ.get("BENCH_KEEP") else [
            "pools", "influxdb/data", "influxdb/wal", "influxdb/meta", "prometheus/data"]
        for d in drop:
            shutil.rmtree(os.path.join(run_dir, d), ignore_errors=True)
        if mode != "profile":
            os.remove(bin_copy)
    if results:
        print()
        print(f"Tidemark ingest benchmark, {info['date_utc']}, {info['cpu']} x{info['cores']} cores, "
              f"{CFG['duration_s']:.0f}s per phase")
        print(build_table(results))
    print(f"\nJSON: {path}  (run dir {run_dir}, {report['elapsed_s']}s)")


if __name__ == "__main__":
    main()
