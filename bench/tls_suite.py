"""The TLS suite of bench/bench.py (issue 15): point-select over TLS through shardgate
against HAProxy forwarding TLS (TCP passthrough) to a TLS-enabled MariaDB, in one run.

The unsharded keyspace's MariaDB is restarted with the local cluster's certificate (the
same command line plus --ssl-cert/--ssl-key/--ssl-ca), so MySQL's in-protocol TLS runs
end to end between sysbench and MariaDB through HAProxy, and between sysbench and
shardgate (which talks to MariaDB over its pooled plain connections, as it would next to
the database on a trusted network). Plain runs of HAProxy and shardgate are measured in
the same rounds for reference. TLS use is checked, not assumed: MariaDB's Ssl_accepts and
shardgate's shardgate_tls_connections_total must grow during the TLS runs.
"""
import os, re, signal, subprocess, time, urllib.request


def _wait_gone(pid, secs=60):
    for _ in range(secs * 20):
        if not os.path.exists(f"/proc/{pid}"):
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"pid {pid} did not exit")


def _mariadb(addr, sql):
    host, port = addr.split(":")
    out = subprocess.run(["mariadb", "-h", host, "-P", port, "--protocol=tcp", "-uroot", "-N", "-e", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def restart_with_tls(pid, addr, cluster_dir, client_ca):
    """Restarts mariadbd `pid` with the same arguments plus TLS; returns the new Popen."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        args = [a.decode() for a in f.read().split(b"\0") if a]
    os.kill(pid, signal.SIGTERM)
    _wait_gone(pid)
    # MariaDB checks any client certificate it is shown (sysbench always shows one): its
    # CA is sysbench's self-signed certificate. Clients without one are not asked.
    args += [f"--ssl-cert={cluster_dir}/server-cert.pem", f"--ssl-key={cluster_dir}/server-key.pem",
             f"--ssl-ca={client_ca}"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        try:
            if _mariadb(addr, "SELECT @@have_ssl") == "YES":
                return p
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError("MariaDB did not come back with TLS")


def client_files(workdir, cluster_dir):
    """sysbench's --mysql-ssl reads cacert.pem, client-cert.pem and client-key.pem from its
    working directory (servers here do not ask for a client certificate)."""
    d = os.path.join(workdir, "sysbench-ssl")
    os.makedirs(d, exist_ok=True)
    with open(f"{cluster_dir}/ca.pem") as src, open(os.path.join(d, "cacert.pem"), "w") as dst:
        dst.write(src.read())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=sysbench", "-keyout", os.path.join(d, "client-key.pem"),
                    "-out", os.path.join(d, "client-cert.pem")], check=True, capture_output=True)
    return d


def _proxy_tls_count(http):
    body = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    m = re.search(r"^shardgate_tls_connections_total (\d+)", body, re.M)
    return int(m.group(1)) if m else 0


def start(args, info, commerce, cluster_dir):
    """Restarts the unsharded keyspace's MariaDB with TLS; returns the server (the caller
    stops it: the cluster's records name the old process)."""
    pid = next(m["pid"] for m in info["mariadb"] if m["name"] == "commerce")
    d = client_files(args.dir, cluster_dir)
    return restart_with_tls(pid, commerce["addr"], cluster_dir, os.path.join(d, "client-cert.pem"))


def run(args, info, commerce, hport, sysbench, cpu_ticks):
    """Returns {target: [(qps, p95, errors, proxy_cpu_us), ...]}; `sysbench` is bench.py's
    runner."""
    cwd = os.path.join(args.dir, "sysbench-ssl")
    # The proxy's pooled connections to the old server are gone: let it find out before
    # measuring.
    for _ in range(3 * args.threads):
        try:
            _mariadb(info["proxies"][0]["mysql"], "SELECT COUNT(*) FROM commerce.sbtest1")
        except Exception:
            time.sleep(0.05)
    chost, cport = commerce["addr"].split(":")
    proxy = info["proxies"][0]
    pport = int(proxy["mysql"].split(":")[1])
    targets = [
        ("direct TLS", chost, int(cport), True, None),
        ("haproxy TLS passthrough", "127.0.0.1", hport, True, None),
        ("shardgate TLS", "127.0.0.1", pport, True, proxy["pid"]),
        ("haproxy plain", "127.0.0.1", hport, False, None),
        ("shardgate plain", "127.0.0.1", pport, False, proxy["pid"]),
    ]
    results = {}
    for r in range(args.rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for name, host, port, tls, ppid in order:
            accepts = int(_mariadb(commerce["addr"], "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").split()[1])
            ptls = _proxy_tls_count(proxy["http"])
            t0 = cpu_ticks(ppid) if ppid else 0
            q, p, e = sysbench("oltp_point_select", host, port, "commerce", args,
                               extra=[f"--mysql-ssl={'on' if tls else 'off'}"], cwd=cwd)
            cpu = (cpu_ticks(ppid) - t0) * 10000.0 / (q * args.time) if ppid else 0.0
            grew = (int(_mariadb(commerce["addr"], "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").split()[1]) - accepts,
                    _proxy_tls_count(proxy["http"]) - ptls)
            used = grew[1] if ppid else grew[0] - 1  # (our own status query is plain)
            if tls and used < args.threads:
                raise RuntimeError(f"{name}: TLS not used ({grew})")
            results.setdefault(name, []).append((q, p, e, cpu))
            print(f"  tls {name:24} round {r+1}: {q:10.0f} qps  p95 {p:6.2f} ms  errors {e}"
                  + (f"  proxy CPU {cpu:5.1f} us/query" if ppid else ""), flush=True)
    return results
