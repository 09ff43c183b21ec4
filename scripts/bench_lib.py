#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

  scan-vs-duckdb  time `unseen scan` and DuckDB running the rule as SQL over the same CSV,
                  with the same thread count, and compare their findings
  update-md       replace or append rows of the results table in BENCHMARKS.md

Prints `BENCH key=value` lines that bench.sh collects.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

# The rule in default mode (docs/semantics.md): key = (host = node, cluster, node, image);
# findings are keys with a point in [T - C, T) and none in [T - B, T - R). Evidence as unseen
# reports it: first/last/count in the current window, previous_seen = latest point before
# T - B. Points at or after T count for nothing; a missing or empty key part drops the point.
RULE_SQL = """
WITH pts AS (
    SELECT "k8s.node.name" AS host,
           "k8s.cluster.name" AS cluster,
           "k8s.node.name" AS node,
           "container.image.name" AS image,
           _time AS t
    FROM read_csv(?, header = true, delim = ',', quote = '"', escape = '"',
                  columns = {
                      '_time': 'BIGINT', 'metric_name': 'VARCHAR', 'host.name': 'VARCHAR',
                      'k8s.cluster.name': 'VARCHAR', 'k8s.node.name': 'VARCHAR',
                      'container.image.name': 'VARCHAR', '_value': 'DOUBLE'})
    WHERE metric_name = 'k8s.container.ready'
      AND coalesce("k8s.cluster.name", '') <> ''
      AND coalesce("k8s.node.name", '') <> ''
      AND coalesce("container.image.name", '') <> ''
)
SELECT host, cluster, node, image,
       min(t) FILTER (WHERE t >= $c) AS first_seen,
       max(t) FILTER (WHERE t >= $c) AS last_seen,
       count(*) FILTER (WHERE t >= $c) AS count,
       max(t) FILTER (WHERE t < $b) AS previous_seen
FROM pts
WHERE t < $at
GROUP BY host, cluster, node, image
HAVING count(*) FILTER (WHERE t >= $c) > 0
   AND count(*) FILTER (WHERE t >= $b AND t < $r) = 0
ORDER BY first_seen, host, cluster, node, image
"""


def rfc3339(t):
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_duckdb(csv, at, threads, current, baseline, recent):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {int(threads)}")
    # Keep the comparison about query speed: no progress bar, no insertion-order bookkeeping.
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    sql = (
        RULE_SQL.replace("$at", str(at))
        .replace("$c", str(at - current))
        .replace("$b", str(at - baseline))
        .replace("$r", str(at - recent))
    )
    started = time.perf_counter()
    rows = con.execute(sql, [csv]).fetchall()
    elapsed = time.perf_counter() - started
    findings = [
        (h, c, n, i, rfc3339(f), rfc3339(l), int(k), rfc3339(p)) for (h, c, n, i, f, l, k, p) in rows
    ]
    return elapsed, findings


def run_unseen(binary, csv, at, threads):
    started = time.perf_counter()
    proc = subprocess.run(
        [binary, "scan", "--format", "csv", "--at", str(at), "--output", "json",
         "--threads", str(threads), csv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode())
        raise SystemExit(f"unseen scan failed with status {proc.returncode}")
    findings = []
    for line in proc.stdout.decode().splitlines():
        f = json.loads(line)
        findings.append(
            (
                f["host"],
                f["k8s.cluster.name"],
                f["k8s.node.name"],
                f["container.image.name"],
                f["first_seen"],
                f["last_seen"],
                int(f["count"]),
                f["previous_seen"],
            )
        )
    return elapsed, findings, proc.stderr.decode()


def scan_vs_duckdb(args):
    """`--runs N` alternates the two N times and takes the median of each, so that the
    machine's drift falls on both; the findings of every run must agree."""
    day = 86400
    current, baseline, recent = day, 30 * day, 3600
    size = os.path.getsize(args.csv)
    u_times, d_times = [], []
    same = True
    first = None
    for run in range(max(1, args.runs)):
        # The same threads on both sides.
        u_time, u_findings, u_summary = run_unseen(args.bin, args.csv, args.at, args.threads)
        d_time, d_findings = run_duckdb(args.csv, args.at, args.threads, current, baseline, recent)
        u_times.append(u_time)
        d_times.append(d_time)
        print(f"run {run + 1}: unseen scan {u_time:.2f} s, DuckDB (threads={args.threads}) {d_time:.2f} s")
        # Both sides agree in every run, and every run with the first.
        if first is None:
            first = sorted(u_findings)
        same = same and sorted(u_findings) == sorted(d_findings) == first
    u_time, d_time = statistics.median(u_times), statistics.median(d_times)
    print(f"unseen scan: {u_time:.2f} s (median), {len(u_findings)} findings")
    for line in u_summary.splitlines():
        print(f"  | {line}")
    print(f"DuckDB (threads={args.threads}): {d_time:.2f} s (median), {len(d_findings)} findings")
    if not same:
        only_u = sorted(set(u_findings) - set(d_findings))[:5]
        only_d = sorted(set(d_findings) - set(u_findings))[:5]
        print(f"OUTPUTS DIFFER: only unseen {only_u}; only DuckDB {only_d}")
    else:
        print("outputs are identical")
    p = args.prefix
    extra = {}
    if args.also_threads and args.also_threads != args.threads:
        t, f = run_duckdb(args.csv, args.at, args.also_threads, current, baseline, recent)
        # The first figure's names, unprefixed, as BENCHMARKS.md has always had them.
        name = "duckdb_all_threads" if p == "scan" else f"{p}_duckdb_all_threads"
        extra = {f"{name}_s": f"{t:.3f}", name: str(args.also_threads)}
        print(f"DuckDB (threads={args.also_threads}, for reference): {t:.2f} s, same output: {sorted(f) == sorted(d_findings)}")
    if args.unseen_also_threads and args.unseen_also_threads != args.threads:
        # unseen on fewer threads, once, after the alternating runs: what the ranges buy.
        t, f, _ = run_unseen(args.bin, args.csv, args.at, args.unseen_also_threads)
        extra[f"{p}_unseen_threads_{args.unseen_also_threads}_s"] = f"{t:.3f}"
        print(f"unseen scan (threads={args.unseen_also_threads}): {t:.2f} s, same output: {sorted(f) == sorted(u_findings)}")
    import duckdb

    out = {
        f"{p}_rows": str(args.rows),
        f"{p}_bytes": str(size),
        f"{p}_unseen_s": f"{u_time:.3f}",
        f"{p}_duckdb_s": f"{d_time:.3f}",
        f"{p}_ratio": f"{d_time / u_time:.2f}",
        f"{p}_findings": str(len(u_findings)),
        f"{p}_equal": "yes" if same else "NO",
        "duckdb_version": duckdb.__version__,
        **extra,
    }
    for k, v in out.items():
        print(f"BENCH {k}={v}")
    if not same:
        sys.exit(4)


def update_md(args):
    """Rows are `| id | ... |`; a row whose id exists is replaced, others are appended to the
    table between the markers. The machine line is replaced."""
    start, end = "<!-- bench:rows:start -->", "<!-- bench:rows:end -->"
    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    if start not in text or end not in text:
        raise SystemExit(f"{args.file}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    table, tail = rest.split(end, 1)
    lines = [l for l in table.strip("\n").split("\n") if l.strip()]
    new_rows = [l for l in sys.stdin.read().split("\n") if l.startswith("| ")]
    for row in new_rows:
        key = row.split("|")[1].strip()
        for i, l in enumerate(lines):
            if l.startswith("| ") and l.split("|")[1].strip() == key:
                lines[i] = row
                break
        else:
            lines.append(row)
    machine_start, machine_end = "<!-- bench:machine:start -->", "<!-- bench:machine:end -->"
    head = head
    text = head + start + "\n" + "\n".join(lines) + "\n" + end + tail
    if args.machine and machine_start in text:
        a, b = text.split(machine_start, 1)
        _, c = b.split(machine_end, 1)
        text = a + machine_start + "\n" + args.machine + "\n" + machine_end + c
    with open(args.file, "w", encoding="utf-8") as f:
        f.write(text)


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scan_proto(args):
    """`unseen scan --format otlp-proto` end to end over a file (one thread: the scan is
    sequential), against a bare prost decode of the same bytes already in memory (the
    ingest bench's `--prost-file`), alternated `--runs` times; medians. Wall time for
    the scan, with its user and system CPU from `wait4`."""
    scans, prosts, cpu = [], [], []
    ready = 0
    for run in range(max(1, args.runs)):
        started = time.perf_counter()
        proc = subprocess.Popen([args.bin, "scan", "--format", "otlp-proto", "--at", str(args.at),
                                 "--output", "json", args.file],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        err = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"unseen scan failed:\n{err}")
        scans.append(elapsed)
        cpu.append((usage.ru_utime, usage.ru_stime))
        out = subprocess.run(args.prost_cmd, shell=True, check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        values = dict(re.findall(r"^BENCH (\w+)=([0-9.]+)$", out, re.M))
        ready = int(values["file_ready_points"])
        prosts.append(float(values["file_prost_ready_pps"]))
        # Both read every ready point of the file.
        seen = re.search(r"^\s*points\s+(\d+) k8s\.container\.ready", err, re.M)
        if not seen or int(seen.group(1)) != ready:
            sys.exit(f"unseen scan read {seen and seen.group(1)} ready points, prost {ready}:\n{err}")
        print(f"run {run + 1}: unseen scan {elapsed:.3f} s (user {usage.ru_utime:.2f} s, system "
              f"{usage.ru_stime:.2f} s); bare prost {ready / prosts[-1]:.3f} s")
    scan_s = statistics.median(scans)
    prost_pps = statistics.median(prosts)
    user = statistics.median(c[0] for c in cpu)
    system = statistics.median(c[1] for c in cpu)
    size = os.path.getsize(args.file)
    print(f"unseen scan --format otlp-proto: {size / 1e6:.0f} MB, {ready} ready points, "
          f"{scan_s:.3f} s (median): {ready / scan_s:.0f} ready points/s, "
          f"{ready / scan_s / prost_pps:.2f}x bare prost ({prost_pps:.0f} ready points/s)")
    print(f"BENCH scan_proto_bytes={size}")
    print(f"BENCH scan_proto_ready_points={ready}")
    print(f"BENCH scan_proto_s={scan_s:.3f}")
    print(f"BENCH scan_proto_user_s={user:.2f}")
    print(f"BENCH scan_proto_system_s={system:.2f}")
    print(f"BENCH scan_proto_ready_pps={ready / scan_s:.0f}")
    print(f"BENCH scan_proto_prost_ready_pps={prost_pps:.0f}")
    print(f"BENCH scan_proto_ratio={ready / scan_s / prost_pps:.2f}")


def replicas(args):
    """`serve` replicas on one PostgreSQL state, beside the embedded store: each replica
    gets its own Collector (a generated fleet of its own, seeds 1..N, as the Collector's
    loadbalancing exporter would split the clusters), all sending at once, preloaded.
    Throughput = all points / the longest sender's time; latency = the worst sender's p99;
    the servers' /metrics give round trips and rows written per 1,000 points, and per
    commit (`unseen_commit_duration_seconds_count`)."""
    import subprocess
    import tempfile
    import urllib.request

    runs = [("embedded", 1)] + [("postgres", int(n)) for n in args.replicas.split(",")]
    os.environ["PGOPTIONS"] = "-c client_min_messages=warning"
    for store, n in runs:
        work = tempfile.mkdtemp(prefix="unseen-replicas-")
        schema = f"unseen_bench_{n}_{os.getpid()}"
        if store == "postgres":
            subprocess.run(["psql", args.url, "-Atqc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], check=True)
        servers = []
        for i in range(n):
            port, admin = _free_port(), _free_port()
            cmd = [args.bin, "serve", "--otlp-http", f"127.0.0.1:{port}", "--otlp-grpc", "127.0.0.1:0",
                   "--admin", f"127.0.0.1:{admin}", "--api", "off", "--findings", os.path.join(work, f"findings-{i}.jsonl")]
            if store == "postgres":
                cmd += ["--store", args.url, "--store-schema", schema]
            else:
                cmd += ["--data", os.path.join(work, "data")]
            log = open(os.path.join(work, f"serve-{i}.log"), "w")
            servers.append((subprocess.Popen(cmd, stdout=log, stderr=log), port, admin))
        for _, port, _ in servers:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.1)
        try:
            senders = [subprocess.Popen([args.bin, "generate", *args.gen.split(), "--seed", str(i + 1), "--start", "now-1d",
                                         "--send", f"http://127.0.0.1:{port}", "--concurrency", "4", "--preload"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                       for i, (_, port, _) in enumerate(servers)]
            points, secs, p99 = 0, 0.0, 0.0
            for s in senders:
                _, err = s.communicate()
                m = re.search(r"^sent \d+ requests, (\d+) points.* in ([0-9.]+) s: .*p99 ([0-9.]+) ms", err, re.M)
                if not m:
                    sys.exit(f"a sender failed:\n{err}")
                points += int(m.group(1))
                secs = max(secs, float(m.group(2)))
                p99 = max(p99, float(m.group(3)))
            trips = rows = accepted = commits = 0.0
            for _, _, admin in servers:
                text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
                trips += _metric(text, "unseen_store_round_trips_total")
                rows += _metric(text, "unseen_store_rows_written_total")
                accepted += _metric(text, "unseen_points_accepted_total")
                commits += _metric(text, "unseen_commit_duration_seconds_count")
        finally:
            # Whatever happened (a sender failed): no server left running, no schema left.
            for proc, _, _ in servers:
                proc.terminate()
                proc.wait()
            if store == "postgres":
                subprocess.run(["psql", args.url, "-Atqc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], check=False)
        key = f"replicas_{store}_{n}"
        per_k = 1000.0 / accepted if accepted else 0.0
        # The senders print their time to 0.1 s: a smoke run's can read 0.0.
        secs = max(secs, 0.05)
        print(f"{store} x{n}: {points} points in {secs:.1f} s: {points / secs:.0f} points/s, p99 {p99:.1f} ms; "
              f"per 1,000 ready points: {trips * per_k:.2f} round trips, {rows * per_k:.0f} rows written; "
              f"{commits:.0f} commits, {rows / max(commits, 1):.1f} rows written per commit")
        print(f"BENCH {key}_pps={points / secs:.0f}")
        print(f"BENCH {key}_p99_ms={p99:.1f}")
        print(f"BENCH {key}_trips_per_k={trips * per_k:.2f}")
        print(f"BENCH {key}_rows_per_k={rows * per_k:.0f}")
        # What a commit writes whatever its points: when this stays flat as commits hold
        # more sightings of known keys, those sightings cost no row of their own.
        print(f"BENCH {key}_rows_per_commit={rows / max(commits, 1):.1f}")
        print(f"BENCH {key}_points_per_commit={accepted / max(commits, 1):.0f}")


def _status_kb(pid, field):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def serve_restart(args):
    """`unseen serve` started on a state directory: the time from the process's start to
    the first acknowledgement of a request (one export of a one-node fleet, POSTed until it
    is answered 200: the listeners open once the state is loaded), then the server's RSS
    and peak RSS, and the keys it tracks (its /metrics)."""
    import urllib.error
    import urllib.request

    with open(args.body, "rb") as f:
        frame = f.read()
    # The file is length-prefixed OTLP protobuf: the first frame is a request body.
    body = frame[4 : 4 + int.from_bytes(frame[:4], "big")]
    port, admin = _free_port(), _free_port()
    cmd = [args.bin, "serve", "--otlp-http", f"127.0.0.1:{port}", "--otlp-grpc", "127.0.0.1:0",
           "--admin", f"127.0.0.1:{admin}", "--data", args.data, "--max-keys", str(args.max_keys)]
    with open(args.log, "wb") as log:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(f"serve exited ({proc.returncode}) before answering: see {args.log}")
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", data=body,
                                             headers={"Content-Type": "application/x-protobuf"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                # Polling a port that is not open yet: the wait is what is measured, to
                # 10 ms.
                time.sleep(0.01)
            first_ack = time.monotonic() - start
            rss, hwm = _status_kb(proc.pid, "VmRSS"), _status_kb(proc.pid, "VmHWM")
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=30) as resp:
                keys = _metric(resp.read().decode(), "unseen_keys_tracked")
            # Then the query API's catalog (history and key inventory), read in the
            # background once points are taken: the RSS with it, when its line is logged.
            while b"history and key inventory read" not in open(args.log, "rb").read():
                if proc.poll() is not None:
                    sys.exit(f"serve exited ({proc.returncode}): see {args.log}")
                time.sleep(0.05)
            warm = time.monotonic() - start
            rss_api = _status_kb(proc.pid, "VmRSS")
            hwm = _status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait()
    p = args.prefix
    print(f"BENCH {p}_first_ack_s={first_ack:.2f}")
    print(f"BENCH {p}_rss_kb={rss}")
    print(f"BENCH {p}_hwm_kb={hwm}")
    print(f"BENCH {p}_keys={keys:.0f}")
    print(f"BENCH {p}_api_s={warm:.2f}")
    print(f"BENCH {p}_rss_api_kb={rss_api}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scan-vs-duckdb")
    s.add_argument("--bin", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--at", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--also-threads", type=int, default=0)
    s.add_argument("--unseen-also-threads", type=int, default=0)
    s.add_argument("--rows", type=int, default=0)
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--prefix", default="scan")
    s.set_defaults(func=scan_vs_duckdb)
    sp = sub.add_parser("scan-proto")
    sp.add_argument("--bin", required=True)
    sp.add_argument("--file", required=True)
    sp.add_argument("--at", type=int, required=True)
    sp.add_argument("--prost-cmd", required=True)
    sp.add_argument("--runs", type=int, default=3)
    sp.set_defaults(func=scan_proto)
    r = sub.add_parser("replicas")
    r.add_argument("--bin", required=True)
    r.add_argument("--url", required=True)
    r.add_argument("--replicas", default="1,2,3")
    r.add_argument("--gen", required=True)
    r.set_defaults(func=replicas)
    sr = sub.add_parser("serve-restart")
    sr.add_argument("--bin", required=True)
    sr.add_argument("--data", required=True)
    sr.add_argument("--body", required=True)
    sr.add_argument("--log", required=True)
    sr.add_argument("--max-keys", type=int, default=5_000_000)
    sr.add_argument("--prefix", default="restart")
    sr.set_defaults(func=serve_restart)
    u = sub.add_parser("update-md")
    u.add_argument("--file", required=True)
    u.add_argument("--machine", default="")
    u.set_defaults(func=update_md)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
