#!/usr/bin/env python3
"""shardgate benchmark driver (see bench/run.sh and BENCHMARKS.md).

Starts a local cluster with the release binaries, puts HAProxy (TCP mode) in front of the
unsharded keyspace's MariaDB, and runs sysbench against: MariaDB directly, HAProxy, and
shardgate (unsharded keyspace `commerce`; and, in the `sharded` suite, the 2-shard keyspace
`customer`). Targets alternate within each round and every figure is the median of rounds,
so the ratios come from one run on one machine.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARDCTL = os.path.join(ROOT, "target/release/shardctl")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def sysbench(test, host, port, db, args, cmd="run", extra=(), cwd=None):
    base = ["sysbench", test, "--db-driver=mysql", f"--mysql-host={host}", f"--mysql-port={port}",
            "--mysql-user=root", f"--mysql-db={db}", f"--tables={args.tables}",
            f"--table-size={args.table_size}"]
    if cmd == "run":
        base += [f"--threads={args.threads}", f"--time={args.time}", "--percentile=95",
                 "--db-ps-mode=auto", "--rand-type=uniform"]
    out = subprocess.run(base + list(extra) + [cmd], capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"sysbench {test} {cmd} on {port} {' '.join(extra)} failed:\n{out.stdout}\n{out.stderr}")
    if cmd != "run":
        return None
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", out.stdout).group(1))
    p95 = float(re.search(r"95th percentile:\s+([\d.]+)", out.stdout).group(1))
    errors = int(re.search(r"ignored errors:\s+(\d+)", out.stdout).group(1))
    return qps, p95, errors


def start_haproxy(backend, port, workdir):
    cfg = os.path.join(workdir, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 4000
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mysql
    bind 127.0.0.1:{port}
    server db {backend}
""")
    p = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("haproxy did not start")


def idle_connections(port, n, db):
    """Opens n logged-in client connections (root, no password) with a minimal handshake."""
    import struct
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        hdr = s.recv(4)
        s.recv(int.from_bytes(hdr[:3], "little"))
        caps = 0x200 | 0x8000 | 0x80000 | 0x8  # PROTOCOL_41 SECURE_CONNECTION PLUGIN_AUTH CONNECT_WITH_DB
        body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"root\0" + b"\0" + db.encode() + b"\0" \
            + b"mysql_native_password\0"
        s.sendall(len(body).to_bytes(3, "little") + b"\x01" + body)
        hdr = s.recv(4)
        resp = s.recv(int.from_bytes(hdr[:3], "little"))
        if resp[:1] != b"\x00":
            raise RuntimeError(f"login failed: {resp!r}")
        conns.append(s)
    return conns


def big_merge(info, pport, proxy_pid, args):
    """Loads rows straight into both customer shards, then merges them through the proxy."""
    import pymysql, threading
    n = args.big_rows
    routing = json.loads(sh([SHARDCTL, "--dir", args.dir, "topo", "get", "keyspaces/customer/routing"]).stdout)
    shards = [s for s in info["shards"] if s["keyspace"] == "customer" and s["shard"] in routing["serving"]]
    half = n // len(shards)
    for i, s in enumerate(shards):
        host, port = s["addr"].split(":")
        c = pymysql.connect(host=host, port=int(port), user="root", database="customer", autocommit=True)
        cur = c.cursor()
        cur.execute("DROP TABLE IF EXISTS big")
        cur.execute("CREATE TABLE big (id BIGINT PRIMARY KEY, val INT, pad CHAR(40))")
        cur.execute(f"INSERT INTO big SELECT seq * {len(shards)} + {i}, (seq * 7919) % 1000003, 'x' "
                    f"FROM seq_0_to_{half - 1}")
        c.close()
    pc = pymysql.connect(host="127.0.0.1", port=pport, user="root", database="customer", autocommit=True)
    cur = pc.cursor()
    # Register the table (it was created behind the proxy's back) as sharded by id.
    topo = json.loads(sh([SHARDCTL, "--dir", args.dir, "topo", "get", "keyspaces/customer"]).stdout)
    topo["tables"]["big"] = {"column_vindexes": [{"column": "id", "name": "hash"}]}
    path = os.path.join(args.dir, "vschema.json")
    json.dump(topo, open(path, "w"))
    sh([SHARDCTL, "--dir", args.dir, "vschema", "apply", "customer", path])
    time.sleep(1)
    before = rss_kb(proxy_pid)
    t0 = time.time()
    cur.execute("SELECT id, val FROM big ORDER BY val DESC LIMIT 10")
    cur.fetchall()
    limit_s = time.time() - t0
    after_limit = rss_kb(proxy_pid)
    peak = [after_limit]
    stop = threading.Event()
    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(proxy_pid))
            time.sleep(0.05)
    w = threading.Thread(target=watch)
    w.start()
    sc = pymysql.connect(host="127.0.0.1", port=pport, user="root", database="customer",
                         cursorclass=pymysql.cursors.SSCursor)
    scur = sc.cursor()
    t0 = time.time()
    scur.execute("SELECT id, val FROM big ORDER BY val")
    streamed = 0
    for _ in scur:
        streamed += 1
    stream_s = time.time() - t0
    stop.set()
    w.join()
    sc.close()
    pc.close()
    return {"rows": half * len(shards), "before": before, "after_limit": after_limit, "limit_s": limit_s,
            "peak": peak[0], "streamed": streamed, "stream_s": stream_s}


def joins_suite(pport, commerce, args):
    """Cross-shard joins of two 10,000-row tables through the proxy (2-shard keyspace,
    each table sharded by its own id) against the same tables on one MariaDB."""
    import pymysql
    host, port = commerce["addr"].split(":")
    direct = pymysql.connect(host=host, port=int(port), user="root", autocommit=True)
    dc = direct.cursor()
    dc.execute("DROP DATABASE IF EXISTS join_bench")
    dc.execute("CREATE DATABASE join_bench")
    dc.execute("USE join_bench")
    proxy = pymysql.connect(host="127.0.0.1", port=pport, user="root", database="customer",
                            autocommit=True)
    pc = proxy.cursor()
    n = args.join_rows
    for cur in (dc, pc):
        cur.execute("DROP TABLE IF EXISTS ja")
        cur.execute("DROP TABLE IF EXISTS jb")
        cur.execute("CREATE TABLE ja (id BIGINT NOT NULL PRIMARY KEY, k INT, v VARCHAR(20), KEY (k))")
        cur.execute("CREATE TABLE jb (id BIGINT NOT NULL PRIMARY KEY, a_id BIGINT, w INT, KEY (a_id))")
        for start in range(1, n + 1, 1000):
            ids = range(start, min(start + 1000, n + 1))
            cur.execute("INSERT INTO ja VALUES " + ", ".join(f"({i}, {i % 1000}, 'v{i}')" for i in ids))
            cur.execute("INSERT INTO jb VALUES " + ", ".join(f"({i}, {(i * 7) % n + 1}, {i % 97})" for i in ids))
    queries = {
        "selective (10 x 10 rows)": "SELECT a.v, b.w FROM ja a JOIN jb b ON b.a_id = a.id WHERE a.k = {k}",
        "non-selective (10,000 x 10,000)": "SELECT COUNT(*), SUM(b.w) FROM ja a JOIN jb b ON b.a_id = a.id",
    }
    out = {}
    for name, q in queries.items():
        times = {"direct": [], "shardgate": []}
        reps = args.join_reps if "non" not in name else max(3, args.join_reps // 10)
        for r in range(reps):
            sql = q.format(k=(r * 37) % 1000)
            for target, cur in (("direct", dc), ("shardgate", pc)) if r % 2 == 0 else (("shardgate", pc), ("direct", dc)):
                t0 = time.perf_counter()
                cur.execute(sql)
                rows = cur.fetchall()
                times[target].append((time.perf_counter() - t0) * 1000)
                if target == "direct":
                    want = rows
                else:
                    got = rows
            if sorted(map(str, want)) != sorted(map(str, got)):
                raise RuntimeError(f"join bench: different answers for {sql}")
        out[name] = {t: statistics.median(v) for t, v in times.items()}
        print(f"  join {name:32} direct {out[name]['direct']:8.2f} ms   shardgate {out[name]['shardgate']:8.2f} ms",
              flush=True)
    direct.close()
    proxy.close()
    return out


def fg_run(pport, tables, size, seconds, rate, interval=False):
    """A rate-limited oltp_read_write through the proxy on customer: the foreground load
    whose latency the reshard suite watches. Returns (p95 ms, max ms, per-second lines)."""
    cmd = ["sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={pport}", "--mysql-user=root", "--mysql-db=customer", f"--tables={tables}",
           f"--table-size={size}", "--threads=4", f"--rate={rate}", f"--time={seconds}", "--percentile=95",
           "--db-ps-mode=auto", "--rand-type=uniform"]
    if interval:
        cmd.append("--report-interval=1")
    return subprocess.Popen(cmd + ["run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fg_result(proc):
    out, _ = proc.communicate()
    lines = [(float(m.group(1)), float(m.group(2))) for m in
             re.finditer(r"\[ (\d+)s \].*?lat \(ms,95%\): ([\d.]+)", out)]
    errs = [float(m.group(1)) for m in re.finditer(r"err/s: ([\d.]+)", out)]
    p95 = re.search(r"95th percentile:\s+([\d.]+)", out)
    if p95 is None:
        # Interrupted before its summary: judge by the per-second reports.
        if not lines:
            raise RuntimeError(f"sysbench failed:\n{out}")
        return max(p for _, p in lines), max(p for _, p in lines), int(sum(errs)), lines
    mx = float(re.search(r"max:\s+([\d.]+)", out).group(1))
    errors = int(re.search(r"ignored errors:\s+(\d+)", out).group(1))
    return float(p95.group(1)), mx, errors, lines


def contention_suite(pport, commerce, args):
    """sysbench oltp_read_write with small tables (high contention: cross-shard lock waits
    and deadlocks) through the proxy on the 2-shard keyspace and, as a reference, on one
    MariaDB. Reports tps and the longest stall (consecutive seconds without a committed
    transaction in the per-second report)."""
    chost, cport = commerce["addr"].split(":")
    targets = [("2 shards", "127.0.0.1", pport, "customer"), ("direct", chost, int(cport), "commerce")]
    size = ["--tables=1", f"--table-size={args.contention_rows}"]
    out = {}
    for name, host, port, db in targets:
        base = ["sysbench", "oltp_read_write", "--db-driver=mysql", f"--mysql-host={host}",
                f"--mysql-port={port}", "--mysql-user=root", f"--mysql-db={db}"] + size
        subprocess.run(base + ["cleanup"], capture_output=True)
        sh(base + ["prepare"])
        for r in range(args.rounds):
            run = subprocess.run(base + [f"--threads={args.threads}", f"--time={args.time}",
                                         "--report-interval=1", "--percentile=95", "--rand-type=uniform",
                                         "run"], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"contention {name} failed:\n{run.stdout}\n{run.stderr}")
            per_s = [float(m) for m in re.findall(r"\]\s+thds:\s+\d+\s+tps:\s+([\d.]+)", run.stdout)]
            stall = longest = 0
            for t in per_s:
                stall = stall + 1 if t == 0 else 0
                longest = max(longest, stall)
            tps = float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", run.stdout).group(1))
            p95 = float(re.search(r"95th percentile:\s+([\d.]+)", run.stdout).group(1))
            errors = int(re.search(r"ignored errors:\s+(\d+)", run.stdout).group(1))
            out.setdefault(name, []).append((tps, p95, errors, longest, min(per_s) if per_s else 0))
            print(f"  contention         {name:10} round {r+1}: {tps:8.1f} tx/s  p95 {p95:8.2f} ms  "
                  f"retried errors {errors}  longest stall {longest} s  slowest second {min(per_s) if per_s else 0:.0f} tx",
                  flush=True)
        subprocess.run(base + ["cleanup"], capture_output=True)
    return out


def settle(args, most=10.0):
    """Waits (at most `most` s) until no server of the cluster has more than a few dirty
    pages left to flush, so that no copy method pays for the previous one's writes (the
    machine has 2 cores; a server flushing 200k rows competes with the next copy)."""
    info = json.load(open(os.path.join(args.dir, "cluster.json")))
    addrs = sorted({s["addr"] for s in info["shards"]})
    end = time.time() + most
    while time.time() < end:
        dirty = 0
        for a in addrs:
            h, p = a.split(":")
            q = subprocess.run(["mariadb", "-h", h, "-P", p, "-uroot", "-N", "-e",
                                "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'"],
                               capture_output=True, text=True)
            try:
                dirty += int(q.stdout.split()[-1])
            except (ValueError, IndexError):
                pass
        if dirty <= 20:
            return
        time.sleep(0.2)


def copy_baselines(args, tables):
    """The rows of customer/80- copied to another server by `mariadb-dump | mariadb` (one
    stream) and by mydumper/myloader (4 threads), timed: what the controller's backfill is
    compared with."""
    info = json.load(open(os.path.join(args.dir, "cluster.json")))
    src = next(s for s in info["shards"] if s["keyspace"] == "customer" and s["shard"] == "80-")
    dst = next(s for s in info["shards"] if s["keyspace"] == "customer" and s["shard"] == "-80")
    shost, sport = src["addr"].split(":")
    dhost, dport = dst["addr"].split(":")
    names = [f"sbtest{i}" for i in range(1, tables + 1)]
    rows = 0
    for n in names:
        out = sh(["mariadb", "-h", shost, "-P", sport, "-uroot", "-N", "-e", f"SELECT COUNT(*) FROM {n}", src["database"]])
        rows += int(out.stdout.strip())
    out = {}
    client = ["mariadb", "-h", dhost, "-P", dport, "-uroot"]
    sh(client + ["-e", "DROP DATABASE IF EXISTS bench_dump; CREATE DATABASE bench_dump"])
    settle(args)
    t0 = time.time()
    dump = subprocess.Popen(["mariadb-dump", "-h", shost, "-P", sport, "-uroot", "--single-transaction", "--quick",
                             src["database"]] + names, stdout=subprocess.PIPE)
    load = subprocess.run(client + ["bench_dump"], stdin=dump.stdout, capture_output=True)
    dump.wait()
    if dump.returncode != 0 or load.returncode != 0:
        raise RuntimeError(f"mariadb-dump | mariadb failed: {load.stderr}")
    out["mariadb-dump"] = (rows, time.time() - t0)
    sh(client + ["-e", "DROP DATABASE IF EXISTS bench_dump"])
    if shutil.which("mydumper") and shutil.which("myloader"):
        d = os.path.join(args.dir, "mydumper")
        # mydumper versions differ in how --tables-list names tables: try both forms,
        # and count what arrived.
        for listed in [",".join(names), ",".join(f"{src['database']}.{n}" for n in names)]:
            shutil.rmtree(d, ignore_errors=True)
            sh(client + ["-e", "DROP DATABASE IF EXISTS bench_mydumper"])
            settle(args)
            t0 = time.time()
            sh(["mydumper", "-h", shost, "-P", sport, "-u", "root", "-B", src["database"], "-T", listed,
                "-t", "4", "-o", d])
            sh(["myloader", "-h", dhost, "-P", dport, "-u", "root", "-d", d, "-B", "bench_mydumper", "-t", "4", "-o"])
            secs = time.time() - t0
            got = 0
            for n in names:
                q = subprocess.run(client + ["-N", "-e", f"SELECT COUNT(*) FROM bench_mydumper.{n}"],
                                   capture_output=True, text=True)
                got += int(q.stdout.strip() or 0) if q.returncode == 0 else 0
            if got == rows:
                out["mydumper/myloader (4 threads)"] = (rows, secs)
                break
        sh(client + ["-e", "DROP DATABASE IF EXISTS bench_mydumper"])
        shutil.rmtree(d, ignore_errors=True)
    for name, (n, secs) in out.items():
        print(f"  reshard: {name}: {n:,} rows in {secs:.2f} s ({n / secs:,.0f} rows/s)", flush=True)
    return out


def reshard_suite(args, pport):
    """Splits customer/80- in two under a steady foreground load: backfill rate, foreground
    p95 before / during the backfill / with change capture on, verify rate, cutover pause."""
    size = args.reshard_table_size
    tables = args.tables
    base = ["sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
            f"--mysql-port={pport}", "--mysql-user=root", "--mysql-db=customer", f"--tables={tables}",
            f"--table-size={size}"]
    subprocess.run(base + ["cleanup"], capture_output=True)
    t0 = time.time()
    out = subprocess.run(base + ["--threads=4", "prepare"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sysbench prepare failed:\n{out.stdout}\n{out.stderr}")
    print(f"  reshard: loaded {tables} x {size:,} rows through the proxy in {time.time() - t0:.0f} s", flush=True)
    # What `reshard plan` predicts, compared below with what happened.
    plan = json.loads(sh([SHARDCTL, "--dir", args.dir, "reshard", "plan", "--keyspace", "customer",
                          "--from", "80-", "--to", "80-c0,c0-", "--json"]).stdout)
    r = {}
    r["plan"] = {"rows": plan["rows_total"], "rows_per_s": plan["rows_per_s"],
                 "seconds": plan["predicted_seconds"]}
    print(f"  reshard: plan predicts {plan['rows_total']:,} rows at {plan['rows_per_s']:,.0f} rows/s "
          f"(one stream) = {plan['predicted_seconds']:.1f} s", flush=True)
    # The controller's copy with nothing else running (then aborted: targets emptied),
    # the dump pipe and mydumper, alternating for `rounds` rounds; medians compared (the
    # machine is shared and noisy: one run of each says little). The copy is done again
    # under the foreground load below.
    runs = {}
    for rnd in range(max(args.rounds, 1)):
        for name, v in copy_baselines(args, tables).items():
            runs.setdefault(name, []).append(v)
        settle(args)
        st = subprocess.run([SHARDCTL, "--dir", args.dir, "reshard", "start", "--keyspace", "customer",
                             "--from", "80-", "--to", "80-c0,c0-"], capture_output=True, text=True)
        if st.returncode != 0:
            raise RuntimeError(f"reshard start failed:\n{st.stdout}\n{st.stderr}")
        doc = json.loads(sh([SHARDCTL, "--dir", args.dir, "reshard", "status", "--keyspace", "customer", "--json"]).stdout)
        copy = doc["copy"]
        runs.setdefault("shardgate", []).append((copy["rows"], copy["seconds"]))
        print(f"  reshard: round {rnd + 1}: idle backfill {copy['rows']:,} rows in {copy['seconds']:.2f} s "
              f"({copy['rows'] / copy['seconds']:,.0f} rows/s): {doc['message']}", flush=True)
        sh([SHARDCTL, "--dir", args.dir, "reshard", "abort", "--keyspace", "customer", "--yes"])
    r["copies"] = {name: (statistics.median(n for n, _ in v), statistics.median(t for _, t in v))
                   for name, v in runs.items()}
    before = fg_result(fg_run(pport, tables, size, args.time, args.reshard_rate))
    r["before"] = before
    print(f"  reshard: foreground p95 before: {before[0]:.2f} ms (max {before[1]:.1f} ms)", flush=True)
    fg = fg_run(pport, tables, size, 600, args.reshard_rate, interval=True)
    lead = 10
    time.sleep(lead)
    t_start = time.time()
    st = subprocess.run([SHARDCTL, "--dir", args.dir, "reshard", "start", "--keyspace", "customer",
                         "--from", "80-", "--to", "80-c0,c0-"], capture_output=True, text=True)
    t_end = time.time()
    fg.send_signal(signal.SIGINT)
    if st.returncode != 0:
        raise RuntimeError(f"reshard start failed:\n{st.stdout}\n{st.stderr}")
    during = fg_result(fg)
    doc = json.loads(sh([SHARDCTL, "--dir", args.dir, "reshard", "status", "--keyspace", "customer", "--json"]).stdout)
    copied = sum(t["rows_copied"] for t in doc["tables"].values())
    copy = doc.get("copy") or {}
    secs = copy.get("seconds") or (t_end - t_start)
    # Per-second p95s inside the backfill window, and in the same sysbench run before it
    # (its first second left out: connections warming up).
    window = [p for (sec, p) in during[3] if lead < sec <= lead + (t_end - t_start)]
    lead_in = [p for (sec, p) in during[3] if 1 < sec <= lead]
    r["before_same_run"] = statistics.median(lead_in) if lead_in else before[0]
    r["backfill"] = {"rows": copied, "seconds": secs, "rate": copied / max(secs, 0.001),
                     "p95_median": statistics.median(window) if window else during[0],
                     "p95_max": max(window) if window else during[0], "errors": during[2],
                     "probes": copy.get("probes"), "application_probes": copy.get("application_probes")}
    b = r["backfill"]
    print(f"  reshard: backfill {copied:,} rows in {secs:.1f} s = {b['rate']:,.0f} rows/s; foreground per-second p95 "
          f"during it: median {b['p95_median']:.2f} ms, worst {b['p95_max']:.2f} ms (per-second p95 median "
          f"before it, same run: {r['before_same_run']:.2f} ms); the throttler saw the "
          f"application in {b['application_probes']} of {b['probes']} probes", flush=True)
    capture = fg_result(fg_run(pport, tables, size, args.time, args.reshard_rate))
    r["capture"] = capture
    print(f"  reshard: foreground p95 with change capture on: {capture[0]:.2f} ms", flush=True)
    sh([SHARDCTL, "--dir", args.dir, "reshard", "verify", "--keyspace", "customer"])
    doc = json.loads(sh([SHARDCTL, "--dir", args.dir, "reshard", "status", "--keyspace", "customer", "--json"]).stdout)
    v = doc["verify"]
    r["verify"] = v
    print(f"  reshard: verify {v['rows']:,} rows in {v['seconds']:.2f} s = {v['rows'] / max(v['seconds'], 0.001):,.0f} rows/s "
          f"({v['mismatched']} chunks differed at first, {v['failed']} still differ)", flush=True)
    fg = fg_run(pport, tables, size, 10, args.reshard_rate)
    time.sleep(3)
    sh([SHARDCTL, "--dir", args.dir, "reshard", "cutover", "--keyspace", "customer"])
    cut = fg_result(fg)
    doc = json.loads(sh([SHARDCTL, "--dir", args.dir, "reshard", "status", "--keyspace", "customer", "--json"]).stdout)
    r["cutover"] = {"pause_ms": doc["cutover"]["pause_ms"], "fg_max_ms": cut[1], "errors": cut[2]}
    print(f"  reshard: cutover: writes held at most {doc['cutover']['pause_ms']} ms (controller); the foreground's "
          f"slowest transaction {cut[1]:.1f} ms; {cut[2]} errors", flush=True)
    sh([SHARDCTL, "--dir", args.dir, "reshard", "complete", "--keyspace", "customer"])
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=20000)
    ap.add_argument("--suites", default="foundation,memory")
    ap.add_argument("--tests", default="oltp_point_select,oltp_read_write")
    ap.add_argument("--big-rows", type=int, default=1000000)
    ap.add_argument("--tpcc-warehouses", type=int, default=4)
    ap.add_argument("--join-rows", type=int, default=10000)
    ap.add_argument("--contention-rows", type=int, default=100, help="rows of the contention suite's one table")
    ap.add_argument("--join-reps", type=int, default=50)
    ap.add_argument("--tpcc-threads", type=int, default=8)
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench/.cluster"))
    ap.add_argument("--reshard-table-size", type=int, default=100000)
    ap.add_argument("--reshard-rate", type=int, default=100, help="foreground tx/s during the reshard suite")
    args = ap.parse_args()
    suites = set(args.suites.split(","))

    subprocess.run([SHARDCTL, "--dir", args.dir, "down", "--purge", "--yes"], capture_output=True)
    shutil.rmtree(args.dir, ignore_errors=True)
    pport = free_port()
    up = sh([SHARDCTL, "--dir", args.dir, "up", "--detach", "--shards", "2", "--port", str(pport),
             "--http-port", str(free_port())])
    info = json.load(open(os.path.join(args.dir, "cluster.json")))
    proxy_pid = info["proxies"][0]["pid"]
    commerce = next(s for s in info["shards"] if s["keyspace"] == "commerce")
    chost, cport = commerce["addr"].split(":")
    hport = free_port()
    haproxy = start_haproxy(commerce["addr"], hport, args.dir)
    results = {}
    tls_server = None
    try:
        print(f"machine: {os.cpu_count()} cores; sysbench {args.threads} threads, {args.time}s x {args.rounds} rounds, "
              f"{args.tables} tables x {args.table_size} rows", flush=True)
        if "foundation" in suites:
            sysbench("oltp_read_write", chost, int(cport), "commerce", args, "prepare")
            targets = [("direct", chost, int(cport), "commerce", None), ("haproxy", "127.0.0.1", hport, "commerce", haproxy.pid),
                       ("shardgate", "127.0.0.1", pport, "commerce", proxy_pid)]
            for test in args.tests.split(","):
                for r in range(args.rounds):
                    order = targets if r % 2 == 0 else list(reversed(targets))
                    for name, host, port, db, pid in order:
                        t0 = cpu_ticks(pid) if pid else 0
                        q, p, e = sysbench(test, host, port, db, args)
                        cpu = (cpu_ticks(pid) - t0) * 10000.0 / (q * args.time) if pid else 0.0
                        results.setdefault((test, name), []).append((q, p, e, cpu))
                        print(f"  {test:18} {name:10} round {r+1}: {q:10.0f} qps  p95 {p:6.2f} ms  errors {e}"
                              + (f"  proxy CPU {cpu:5.1f} us/query" if pid else ""), flush=True)
        if "sharded" in suites:
            # The same workload on the 2-shard keyspace (tables created and loaded through the
            # proxy: auto-registered, sharded by id, ids from a sequence) against the
            # unsharded keyspace, in the same run.
            sysbench("oltp_read_write", "127.0.0.1", pport, "customer", args, "prepare")
            targets = [("unsharded", "127.0.0.1", pport, "commerce", proxy_pid),
                       ("2 shards", "127.0.0.1", pport, "customer", proxy_pid),
                       ("haproxy", "127.0.0.1", hport, "commerce", haproxy.pid),
                       ("direct", chost, int(cport), "commerce", None)]
            if "foundation" not in suites:
                sysbench("oltp_read_write", chost, int(cport), "commerce", args, "prepare")
            for test in args.tests.split(","):
                for r in range(args.rounds):
                    order = targets if r % 2 == 0 else list(reversed(targets))
                    for name, host, port, db, pid in order:
                        t0 = cpu_ticks(pid) if pid else 0
                        q, p, e = sysbench(test, host, port, db, args)
                        cpu = (cpu_ticks(pid) - t0) * 10000.0 / (q * args.time) if pid else 0.0
                        results.setdefault(("sharded", test, name), []).append((q, p, e, cpu))
                        print(f"  {test:18} {name:10} round {r+1}: {q:10.0f} qps  p95 {p:6.2f} ms  errors {e}"
                              + (f"  proxy CPU {cpu:5.1f} us/query" if pid else ""), flush=True)
        if "twopc" in suites:
            # Cross-shard write transactions: the cost of atomic commit (XA PREPARE on each
            # shard, a decision in etcd, XA COMMIT) against best-effort ordered commit.
            if "sharded" not in suites:
                sysbench("oltp_read_write", "127.0.0.1", pport, "customer", args, "prepare")
            script = os.path.join(ROOT, "bench/xshard_tx.lua")
            for r in range(args.rounds):
                for mode in (["multi", "twopc"] if r % 2 == 0 else ["twopc", "multi"]):
                    out = subprocess.run(
                        ["sysbench", script, "--db-driver=mysql", "--mysql-host=127.0.0.1",
                         f"--mysql-port={pport}", "--mysql-user=root", "--mysql-db=customer",
                         f"--table-size={args.table_size}", f"--tx-mode={mode}",
                         f"--threads={args.threads}", f"--time={args.time}", "--percentile=95", "run"],
                        capture_output=True, text=True)
                    if out.returncode != 0:
                        raise RuntimeError(f"xshard_tx {mode} failed:\n{out.stdout}\n{out.stderr}")
                    tps = float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", out.stdout).group(1))
                    p95 = float(re.search(r"95th percentile:\s+([\d.]+)", out.stdout).group(1))
                    errors = int(re.search(r"ignored errors:\s+(\d+)", out.stdout).group(1))
                    results.setdefault(("twopc", mode), []).append((tps, p95, errors))
                    print(f"  cross-shard tx     {mode:10} round {r+1}: {tps:10.0f} tx/s  p95 {p95:6.2f} ms  errors {errors}",
                          flush=True)
        if "joins" in suites:
            results["joins"] = joins_suite(pport, commerce, args)
        if "contention" in suites:
            results["contention"] = contention_suite(pport, commerce, args)
        if "tpcc" in suites:
            # TPC-C (integration-tests/src/tpcc): one MariaDB, the unsharded keyspace, and a
            # keyspace sharded by warehouse over the 2 customer servers, alternating rounds.
            out = subprocess.run([os.path.join(ROOT, "target/release/tpcc"), "--dir", args.dir,
                                  "--warehouses", str(args.tpcc_warehouses), "--threads",
                                  str(args.tpcc_threads), "--seconds", str(args.time), "--rounds",
                                  str(args.rounds)], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"tpcc failed:\n{out.stdout}\n{out.stderr}")
            results["tpcc"] = json.loads(out.stdout)
        if "reshard" in suites:
            results["reshard"] = reshard_suite(args, pport)
            info = json.load(open(os.path.join(args.dir, "cluster.json")))
        if "bigmerge" in suites:
            # Last: its table is loaded behind the vindex's back (rows on either shard).
            results["bigmerge"] = big_merge(info, pport, proxy_pid, args)
        if "tls" in suites:
            # Last but memory: it restarts the unsharded keyspace's MariaDB with TLS.
            import tls_suite
            if "foundation" not in suites and "sharded" not in suites:
                sysbench("oltp_read_write", chost, int(cport), "commerce", args, "prepare")
            tls_server = tls_suite.start(args, info, commerce, args.dir)
            results["tls"] = tls_suite.run(args, info, commerce, hport, sysbench, cpu_ticks)
        if "memory" in suites:
            time.sleep(1)
            idle = rss_kb(proxy_pid)
            conns = idle_connections(pport, 1000, "commerce")
            time.sleep(2)
            loaded = rss_kb(proxy_pid)
            for c in conns:
                c.close()
            results["memory"] = (idle, loaded)
    finally:
        haproxy.send_signal(signal.SIGTERM)
        subprocess.run([SHARDCTL, "--dir", args.dir, "down"], capture_output=True)
        if tls_server is not None:
            tls_server.terminate()
            tls_server.wait(60)

    print("\n| workload | target | QPS (median) | p95 ms (median) | errors | proxy CPU us/query | vs HAProxy | vs direct |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for test in ["oltp_point_select", "oltp_read_write"]:
        med = {}
        for name in ["direct", "haproxy", "shardgate"]:
            runs = results.get((test, name))
            if not runs:
                continue
            med[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                         sum(r[2] for r in runs), statistics.median(r[3] for r in runs))
        for name, (q, p, e, cpu) in med.items():
            vh = q / med["haproxy"][0] if "haproxy" in med else 0
            vd = q / med["direct"][0] if "direct" in med else 0
            c = f"{cpu:.1f}" if cpu else "-"
            print(f"| {test} | {name} | {q:.0f} | {p:.2f} | {e} | {c} | {vh:.2f}x | {vd:.2f}x |")
    if any(k[0] == "sharded" for k in results if isinstance(k, tuple)):
        print("\n| workload | target | QPS (median) | p95 ms (median) | errors | proxy CPU us/query | vs unsharded | vs HAProxy |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for test in args.tests.split(","):
            med = {}
            for name in ["unsharded", "2 shards", "haproxy", "direct"]:
                runs = results.get(("sharded", test, name))
                if runs:
                    med[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                                 sum(r[2] for r in runs), statistics.median(r[3] for r in runs))
            for name, (q, p, e, cpu) in med.items():
                vu = q / med["unsharded"][0] if "unsharded" in med else 0
                vh = q / med["haproxy"][0] if "haproxy" in med else 0
                c = f"{cpu:.1f}" if cpu else "-"
                print(f"| {test} | {name} | {q:.0f} | {p:.2f} | {e} | {c} | {vu:.2f}x | {vh:.2f}x |")
    if ("twopc", "multi") in results:
        print("\n| cross-shard write transaction (4 rows) | tx/s (median) | p95 ms (median) | errors | vs multi |")
        print("|---|---:|---:|---:|---:|")
        base = statistics.median(r[0] for r in results[("twopc", "multi")])
        for mode in ["multi", "twopc"]:
            runs = results[("twopc", mode)]
            t = statistics.median(r[0] for r in runs)
            p = statistics.median(r[1] for r in runs)
            print(f"| {mode} | {t:.0f} | {p:.2f} | {sum(r[2] for r in runs)} | {t / base:.2f}x |")
    if "bigmerge" in results:
        b = results["bigmerge"]
        print(f"\nscatter merge over {b['rows']:,} rows in 2 shards: proxy RSS {b['before']/1024:.1f} MiB before; "
              f"ORDER BY .. LIMIT 10 took {b['limit_s']:.2f} s, RSS after {b['after_limit']/1024:.1f} MiB; "
              f"full ORDER BY streamed {b['streamed']:,} rows in {b['stream_s']:.2f} s, peak RSS {b['peak']/1024:.1f} MiB "
              f"(+{(b['peak']-b['before'])/1024:.1f} MiB)")
    if "reshard" in results:
        r = results["reshard"]
        b = r["backfill"]
        c = r["copies"]
        base = c["mariadb-dump"][0] / c["mariadb-dump"][1]
        print(f"\n| copying the rows of customer/80- (no other load; medians of {args.rounds} alternating rounds) "
              f"| rows/s | vs mariadb-dump pipe |")
        print("|---|---:|---:|")
        for name, (n, secs) in c.items():
            print(f"| {name} | {n / secs:,.0f} | {n / secs / base:.2f}x |")
        if "plan" in r:
            p, (n, secs) = r["plan"], c["shardgate"]
            print(f"\nplan vs actual (idle copy): predicted {p['rows']:,} rows in {p['seconds']:.1f} s "
                  f"({p['rows_per_s']:,.0f} rows/s, one stream); copied {n:,} rows in {secs:.1f} s "
                  f"({n / secs:,.0f} rows/s); actual/predicted time {secs / max(p['seconds'], 0.001):.2f}")
        print("\n| resharding 80- -> 80-c0,c0- under a steady foreground load | figure |")
        print("|---|---:|")
        print(f"| backfill rate | {b['rate']:,.0f} rows/s ({b['rows']:,} rows in {b['seconds']:.1f} s) |")
        print(f"| foreground p95 before | {r['before'][0]:.2f} ms |")
        print(f"| foreground per-second p95 during backfill (median / worst) | {b['p95_median']:.2f} / {b['p95_max']:.2f} ms "
              f"({b['p95_median'] / r['before'][0]:.2f}x / {b['p95_max'] / r['before'][0]:.2f}x) |")
        pre = r["before_same_run"]
        print(f"| per-second p95 before the backfill in the same sysbench run (median) | {pre:.2f} ms |")
        print(f"| per-second p95 during backfill vs before it in the same run (median / worst) | "
              f"{b['p95_median'] / pre:.2f}x / {b['p95_max'] / pre:.2f}x |")
        print(f"| foreground p95 with change capture on | {r['capture'][0]:.2f} ms ({r['capture'][0] / r['before'][0]:.2f}x) |")
        v = r["verify"]
        print(f"| verify rate | {v['rows'] / max(v['seconds'], 0.001):,.0f} rows/s |")
        print(f"| cutover: writes held (controller) / slowest foreground transaction | {r['cutover']['pause_ms']} ms / "
              f"{r['cutover']['fg_max_ms']:.1f} ms |")
        print(f"| foreground errors during backfill / cutover | {b['errors']} / {r['cutover']['errors']} |")
    if "joins" in results:
        print("\n| cross-shard join (2 shards, tables sharded by their own ids) | one MariaDB (median ms) | shardgate (median ms) | ratio |")
        print("|---|---:|---:|---:|")
        for name, r in results["joins"].items():
            print(f"| {name} | {r['direct']:.2f} | {r['shardgate']:.2f} | {r['shardgate'] / r['direct']:.1f}x |")
    if "contention" in results:
        print(f"\n| oltp_read_write, 1 table x {args.contention_rows} rows, {args.threads} threads | tx/s (median) "
              f"| p95 ms (median) | retried errors (1213/1205) | longest stall (s, worst round) |")
        print("|---|---:|---:|---:|---:|")
        for name, runs in results["contention"].items():
            print(f"| {name} | {statistics.median(r[0] for r in runs):.1f} | {statistics.median(r[1] for r in runs):.2f} "
                  f"| {sum(r[2] for r in runs)} | {max(r[3] for r in runs)} |")
    if "tpcc" in results:
        t = results["tpcc"]
        base = next(x["tpmc"] for x in t["targets"] if x["name"] == "unsharded")
        print(f"\n| TPC-C, {t['warehouses']} warehouses, {t['threads']} terminals | tpmC (median) | vs unsharded "
              f"| retries | errors | consistency (conditions 1-4) |")
        print("|---|---:|---:|---:|---:|---|")
        for x in t["targets"]:
            tot = x["total"]
            errors = sum(n for n, _ in tot["errors"].values())
            ok = "holds" if not x["violations"] else f"{len(x['violations'])} violations"
            print(f"| {x['name']} | {x['tpmc']:.0f} | {x['tpmc'] / base:.2f}x | {tot['retries']} | {errors} "
                  f"| {ok} ({x['districts']} districts) |")
        print("\n| TPC-C stock-level query | one MariaDB (median ms) | shardgate (median ms) | ratio |")
        print("|---|---:|---:|---:|")
        for label, r in t["stock_level"].items():
            print(f"| {label.replace('_', ' ')} | {r['direct_ms']:.2f} | {r['shardgate_ms']:.2f} "
                  f"| {r['shardgate_ms'] / r['direct_ms']:.1f}x |")
    if "tls" in results:
        print("\n| oltp_point_select over TLS | QPS (median) | p95 ms (median) | errors | proxy CPU us/query | vs HAProxy TLS |")
        print("|---|---:|---:|---:|---:|---:|")
        t = results["tls"]
        med = {n: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                   sum(r[2] for r in runs), statistics.median(r[3] for r in runs)) for n, runs in t.items()}
        base = med["haproxy TLS passthrough"][0]
        for n, (q, p, e, cpu) in med.items():
            c = f"{cpu:.1f}" if cpu else "-"
            print(f"| {n} | {q:.0f} | {p:.2f} | {e} | {c} | {q / base:.2f}x |")
    if "memory" in results:
        idle, loaded = results["memory"]
        print(f"\nproxy RSS idle: {idle/1024:.1f} MiB; with 1,000 idle client connections: {loaded/1024:.1f} MiB "
              f"(+{(loaded-idle)/1024:.1f} MiB, {(loaded-idle)/1000:.1f} KiB per connection)")


if __name__ == "__main__":
    main()
