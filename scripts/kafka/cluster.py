#!/usr/bin/env python3
"""A real Apache Kafka 4.x KRaft cluster on loopback for Sluice's tests (Python 3.11 stdlib only).

    cluster.py prepare --dir DIR [--brokers 3] [--security plaintext|sasl_ssl|mtls] [--base-port N]
    cluster.py up      --dir DIR [same options]     # prepare, run every node until Ctrl-C

`prepare` writes one server.properties and log4j2 config per node (combined broker+controller
nodes, dynamic KRaft quorum), makes the certificates for sasl_ssl/mtls, formats every node's
storage with the Kafka storage tool (SCRAM-SHA-512 users added at format time for sasl_ssl) and
prints one JSON object: the bootstrap list, each node's java argv (the caller spawns it in the
foreground, so it may SIGKILL it and start the same argv again on the same data), and the
librdkafka settings of every user. A second `prepare` on a prepared DIR with the same options
prints the same JSON again and touches nothing.

The jars come from scripts/setup-kafka.sh (${SLUICE_TOOLS_DIR:-<repo>/.tools}/kafka/lib).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin"
BROKER_PRINCIPAL = "broker"  # the nodes' own TLS identity (inter-broker and controller listeners)
SERVICE_USERS = ["ingest", "normalise", "identifier-match", "route", "dead-letter"]
SCRAM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# CN=ingest (openssl "/CN=ingest") or "CN=ingest,O=..." -> User:ingest
PRINCIPAL_RULES = r"RULE:^CN=([^,]+)$/$1/,RULE:^CN=([^,]+),.*$/$1/,DEFAULT"


class Fail(Exception):
    pass


def default_lib() -> Path:
    if os.environ.get("SLUICE_KAFKA_LIB"):
        return Path(os.environ["SLUICE_KAFKA_LIB"])
    return Path(os.environ.get("SLUICE_TOOLS_DIR") or ROOT / ".tools") / "kafka" / "lib"


def find_java(explicit: str | None) -> str:
    cands = [explicit, os.environ.get("SLUICE_JAVA")]
    if os.environ.get("JAVA_HOME"):
        cands.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    cands.append(shutil.which("java"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            out = subprocess.run([c, "-version"], capture_output=True, text=True).stderr
            m = re.search(r'version "(\d+)', out)
            if m and int(m.group(1)) >= 17:
                return str(Path(c).resolve())
            raise Fail(f"{c}: Kafka 4 brokers need Java 17+, found: {out.strip().splitlines()[0]}")
    raise Fail("no java found (set JAVA_HOME or SLUICE_JAVA; Kafka 4 brokers need Java 17+)")


def kafka_uuid() -> str:
    """A Kafka Uuid as its tools print it: url-safe base64 of 16 random bytes, no padding."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def free_ports(n: int) -> list[int]:
    """Ports below the kernel's ephemeral range (32768+), so an outgoing connection can never
    take one between now and the broker binding it; 12000-19999 stays clear of the test
    harness's own range (20000-31999)."""
    import random

    rng = random.Random(os.getpid() ^ time.time_ns())
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(12000, 20000)
        if port in out:
            continue
        try:
            check_free(port)
        except Fail:
            continue
        out.append(port)
    return out


def check_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise Fail(f"port {port} is not free: {e}") from None


def run(cmd: list[str], **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise Fail(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p.stdout


# ---------------------------------------------------------------- certificates (openssl CLI)

def openssl_ca(d: Path, name: str, cn: str) -> None:
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
         "-days", "3650", "-subj", f"/CN={cn}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])


def openssl_leaf(d: Path, name: str, cn: str, ca: str, server: bool) -> None:
    key, csr, crt, ext = (d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"])
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyAgreement"]
    if server:
        lines += ["extendedKeyUsage=serverAuth,clientAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    else:
        lines += ["extendedKeyUsage=clientAuth"]
    ext.write_text("\n".join(lines) + "\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"),
         "-CAkey", str(d / f"{ca}.key"), "-set_serial", str(secrets.randbits(63)), "-days", "3650",
         "-sha256", "-extfile", str(ext), "-out", str(crt)])
    csr.unlink()
    ext.unlink()
    key.chmod(0o600)


def make_certs(tls: Path, users: list[str], store_pw: str) -> None:
    tls.mkdir(parents=True, exist_ok=True)
    openssl_ca(tls, "ca", "Sluice test CA")
    openssl_leaf(tls, "broker", BROKER_PRINCIPAL, "ca", server=True)
    run(["openssl", "pkcs12", "-export", "-in", str(tls / "broker.pem"), "-inkey", str(tls / "broker.key"),
         "-certfile", str(tls / "ca.pem"), "-name", "broker", "-out", str(tls / "broker.p12"),
         "-passout", f"pass:{store_pw}"])
    for u in users:
        openssl_leaf(tls, f"client-{u}", u, "ca", server=False)
    # the admin's certificate as a PKCS12 keystore too, for Kafka's own Java CLI tools (mtls)
    run(["openssl", "pkcs12", "-export", "-in", str(tls / f"client-{ADMIN}.pem"),
         "-inkey", str(tls / f"client-{ADMIN}.key"), "-name", ADMIN, "-out", str(tls / f"client-{ADMIN}.p12"),
         "-passout", f"pass:{store_pw}"])
    # A client certificate for User:ingest signed by a CA the brokers do not trust (negative tests).
    openssl_ca(tls, "other-ca", "Not the Sluice test CA")
    openssl_leaf(tls, "untrusted-ingest", "ingest", "other-ca", server=False)


# ---------------------------------------------------------------- configuration

def node_properties(a, i: int, nodes: list[dict], dirs: dict, store_pw: str | None) -> str:
    n = len(nodes)
    rf = min(3, n)
    min_isr = max(1, rf - 1)
    me = nodes[i]
    sec = a.security
    client_proto = {"plaintext": "PLAINTEXT", "sasl_ssl": "SASL_SSL", "mtls": "SSL"}[sec]
    internal_proto = "PLAINTEXT" if sec == "plaintext" else "SSL"
    p = {
        "process.roles": "broker,controller",
        "node.id": me["id"],
        "controller.quorum.bootstrap.servers": ",".join(f"127.0.0.1:{x['controller_port']}" for x in nodes),
        "listeners": f"CLIENT://127.0.0.1:{me['port']},INTERNAL://127.0.0.1:{me['internal_port']},"
                     f"CONTROLLER://127.0.0.1:{me['controller_port']}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{me['advertised_port']},INTERNAL://127.0.0.1:{me['internal_port']},"
                                f"CONTROLLER://127.0.0.1:{me['controller_port']}",
        "listener.security.protocol.map": f"CLIENT:{client_proto},INTERNAL:{internal_proto},"
                                          f"CONTROLLER:{internal_proto}",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(dirs["data"]),
        # durability the pipeline relies on
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "unclean.leader.election.enable": "false",
        # a SIGKILLed node is fenced (dropped from every ISR, so acks=all writes go on) after this
        "broker.session.timeout.ms": 6000,
        "broker.heartbeat.interval.ms": 1000,
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "num.partitions": 1,
        # small: a 2-core test machine running several nodes and the services
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.replica.fetchers": 1,
        "background.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 16 * 1024 * 1024,
        "log.index.size.max.bytes": 1024 * 1024,
        "log.retention.hours": 24,
        "offsets.topic.num.partitions": 10,
        "offsets.topic.segment.bytes": 16 * 1024 * 1024,
        "transaction.state.log.num.partitions": 10,
        "transaction.state.log.segment.bytes": 16 * 1024 * 1024,
        "share.coordinator.state.topic.num.partitions": 10,
        "metadata.log.segment.bytes": 16 * 1024 * 1024,
    }
    if sec != "plaintext":
        p.update({
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(dirs["tls"] / "broker.p12"),
            "ssl.keystore.password": store_pw,
            "ssl.key.password": store_pw,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(dirs["tls"] / "ca.pem"),
            "ssl.client.auth": "required",  # INTERNAL and CONTROLLER: node-to-node mutual TLS
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.principal.mapping.rules": PRINCIPAL_RULES,
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{ADMIN};User:{BROKER_PRINCIPAL}",
            "allow.everyone.if.no.acl.found": "false",
        })
    if sec == "sasl_ssl":
        p.update({
            "sasl.enabled.mechanisms": SCRAM,
            "listener.name.client.sasl.enabled.mechanisms": SCRAM,
            "listener.name.client.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.client.ssl.client.auth": "none",
        })
    if sec == "mtls":
        p["listener.name.client.ssl.client.auth"] = "required"
    return "".join(f"{k}={v}\n" for k, v in p.items())


LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- node {id}: everything to {log}; only errors on the console -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDERR" target="SYSTEM_ERR">
      <ThresholdFilter level="ERROR" onMatch="ACCEPT" onMismatch="DENY"/>
      <PatternLayout pattern="[%d] node {id} %p %m (%c)%n"/>
    </Console>
    <RollingFile name="FILE" fileName="{log}" filePattern="{log}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="WARN"/>
    <Logger name="org.apache.kafka.common.config" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="FILE"/><AppenderRef ref="STDERR"/></Root>
  </Loggers>
</Configuration>
"""

TOOL_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="STDERR" target="SYSTEM_ERR"><PatternLayout pattern="%p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="STDERR"/></Root></Loggers>
</Configuration>
"""


def client_settings(a, dirs: dict, creds: dict) -> dict:
    """librdkafka settings per user, plus deliberately wrong ones for negative tests."""
    users = [ADMIN] + SERVICE_USERS
    tls = dirs.get("tls")
    out: dict = {"mode": a.security, "users": {}, "negative": {}}
    if a.security == "plaintext":
        for u in users:
            out["users"][u] = {"security.protocol": "plaintext"}
        return out
    out["ca"] = str(tls / "ca.pem")
    out["super_users"] = [f"User:{ADMIN}", f"User:{BROKER_PRINCIPAL}"]
    out["authorizer"] = AUTHORIZER
    if a.security == "sasl_ssl":
        for u in users:
            out["users"][u] = {"security.protocol": "sasl_ssl", "sasl.mechanism": SCRAM,
                               "sasl.username": u, "sasl.password": creds[u],
                               "ssl.ca.location": str(tls / "ca.pem")}
        out["negative"]["wrong_password"] = dict(out["users"]["ingest"], **{"sasl.password": "not-" + creds["ingest"]})
        out["credentials_file"] = str(dirs["root"] / "credentials.json")
    else:
        for u in users:
            out["users"][u] = {"security.protocol": "ssl", "ssl.ca.location": str(tls / "ca.pem"),
                               "ssl.certificate.location": str(tls / f"client-{u}.pem"),
                               "ssl.key.location": str(tls / f"client-{u}.key")}
        out["negative"]["untrusted_cert"] = {
            "security.protocol": "ssl", "ssl.ca.location": str(tls / "ca.pem"),
            "ssl.certificate.location": str(tls / "untrusted-ingest.pem"),
            "ssl.key.location": str(tls / "untrusted-ingest.key")}
    return out


def write_admin_properties(a, root: Path, dirs: dict, creds: dict, store_pw: str | None) -> None:
    """admin-client.properties: --command-config for Kafka's Java CLI tools, as the super user."""
    p = {"security.protocol": {"plaintext": "PLAINTEXT", "sasl_ssl": "SASL_SSL", "mtls": "SSL"}[a.security]}
    if a.security != "plaintext":
        p.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": str(dirs["tls"] / "ca.pem")})
    if a.security == "sasl_ssl":
        p.update({"sasl.mechanism": SCRAM, "sasl.jaas.config":
                  "org.apache.kafka.common.security.scram.ScramLoginModule required "
                  f'username="{ADMIN}" password="{creds[ADMIN]}";'})
    if a.security == "mtls":
        p.update({"ssl.keystore.type": "PKCS12", "ssl.keystore.location": str(dirs["tls"] / f"client-{ADMIN}.p12"),
                  "ssl.keystore.password": store_pw, "ssl.key.password": store_pw})
    f = root / "admin-client.properties"
    f.write_text("".join(f"{k}={v}\n" for k, v in p.items()))
    f.chmod(0o600)


def prepare(a) -> dict:
    root = Path(a.dir).resolve()
    lib = Path(a.lib).resolve() if a.lib else default_lib().resolve()
    key = {"brokers": a.brokers, "security": a.security, "base_port": a.base_port, "lib": str(lib),
           "heap": a.heap, "heap_min": a.heap_min, "jit": a.jit, "advertise": a.client_advertised_ports}
    state = root / "cluster.json"
    if state.exists():
        prev = json.loads(state.read_text())
        if prev.get("options") != key:
            raise Fail(f"{root} was prepared with other options {prev.get('options')}; use another --dir")
        return prev
    if root.exists() and any(root.iterdir()):
        raise Fail(f"{root} is not empty and holds no cluster.json; use an empty or new --dir")
    if not list(lib.glob("kafka_2.13-*.jar")):
        raise Fail(f"no Kafka jars in {lib}: run scripts/setup-kafka.sh first")
    java = find_java(a.java)
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)

    n = a.brokers
    if a.base_port:
        ports = list(range(a.base_port, a.base_port + 3 * n))
        for p in ports:
            check_free(p)
    else:
        ports = free_ports(3 * n)
    advertised = [int(x) for x in a.client_advertised_ports.split(",")] if a.client_advertised_ports else ports[:n]
    if len(advertised) != n:
        raise Fail(f"--client-advertised-ports names {len(advertised)} ports for {n} brokers")
    nodes = [{"id": i + 1, "port": ports[i], "internal_port": ports[n + i], "advertised_port": advertised[i],
              "controller_port": ports[2 * n + i], "directory_id": kafka_uuid()} for i in range(n)]

    dirs = {"root": root}
    creds: dict = {}
    store_pw = None
    if a.security != "plaintext":
        dirs["tls"] = root / "tls"
        store_pw = secrets.token_hex(16)
        make_certs(dirs["tls"], [ADMIN] + SERVICE_USERS, store_pw)
    if a.security == "sasl_ssl":
        creds = {u: secrets.token_urlsafe(18) for u in [ADMIN] + SERVICE_USERS}
        p = root / "credentials.json"
        p.write_text(json.dumps({"mechanism": SCRAM, "users": creds}, indent=2) + "\n")
        p.chmod(0o600)

    write_admin_properties(a, root, dirs, creds, store_pw)
    tool_log = root / "tool-log4j2.xml"
    tool_log.write_text(TOOL_LOG4J2)
    cluster_id = kafka_uuid()
    initial = ",".join(f"{x['id']}@127.0.0.1:{x['controller_port']}:{x['directory_id']}" for x in nodes)
    out_nodes, formats = [], []
    for i, nd in enumerate(nodes):
        nroot = root / f"node{nd['id']}"
        ndirs = dict(dirs, data=nroot / "data")
        (nroot / "logs").mkdir(parents=True, exist_ok=True)
        props = nroot / "server.properties"
        props.write_text(node_properties(a, i, nodes, ndirs, store_pw))
        log = nroot / "logs" / "server.log"
        l4j = nroot / "log4j2.xml"
        l4j.write_text(LOG4J2.replace("{id}", str(nd["id"])).replace("{log}", str(log)))
        # fast-start: C1 only. On 2 cores, three JVMs' C2 compiler threads roughly double the time
        # from launch to the first acknowledged write (measured 6.6-8.0s -> 4.6-5.2s plaintext).
        jit = ["-XX:TieredStopAtLevel=1"] if a.jit == "fast-start" else []
        cmd = [java, f"-Xms{a.heap_min}", f"-Xmx{a.heap}", *jit, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
               "-XX:MaxInlineLevel=15", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={l4j}", f"-Dkafka.logs.dir={nroot / 'logs'}",
               "-cp", f"{lib}/*", "kafka.Kafka", str(props)]
        fmt = [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
               f"-Dlog4j2.configurationFile={tool_log}", "-cp", f"{lib}/*", "kafka.tools.StorageTool",
               "format", "--config", str(props), "--cluster-id", cluster_id, "--initial-controllers", initial]
        for u, pw in creds.items():
            fmt += ["--add-scram", f"{SCRAM}=[name={u},password={pw}]"]
        formats.append(fmt)
        out_nodes.append({"id": nd["id"], "cmd": cmd, "log": str(log), "data": str(ndirs["data"]),
                          "port": nd["port"], "advertised_port": nd["advertised_port"], "internal_port": nd["internal_port"],
                          "controller_port": nd["controller_port"], "config": str(props)})
    with ThreadPoolExecutor(max_workers=min(n, 3)) as ex:
        list(ex.map(run, formats))
    result = {
        "bootstrap": ",".join(f"127.0.0.1:{x['advertised_port']}" for x in nodes),
        "cluster_id": cluster_id,
        "kafka_version": kafka_version(lib),
        "nodes": out_nodes,
        "security": client_settings(a, dirs, creds),
        "admin_properties": str(root / "admin-client.properties"),
        "classpath": f"{lib}/*",
        "prepare_seconds": round(time.monotonic() - t0, 2),
        "options": key,
    }
    state.write_text(json.dumps(result, indent=2) + "\n")
    return result


def kafka_version(lib: Path) -> str | None:
    for j in lib.glob("kafka_2.13-*.jar"):
        return j.name[len("kafka_2.13-"):-len(".jar")]
    return None


def wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def up(a) -> int:
    cl = prepare(a)
    print(json.dumps({"bootstrap": cl["bootstrap"], "dir": str(Path(a.dir).resolve()),
                      "security": cl["security"]}, indent=2), flush=True)
    t0 = time.monotonic()
    procs = [subprocess.Popen(nd["cmd"], stdin=subprocess.DEVNULL) for nd in cl["nodes"]]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ok = all(wait_port(nd["port"], time.monotonic() + 120) for nd in cl["nodes"])
    if ok and not stopping:
        print(f"all {len(procs)} client listeners open after {time.monotonic() - t0:.1f}s; "
              f"logs: {', '.join(nd['log'] for nd in cl['nodes'])}; Ctrl-C stops", file=sys.stderr, flush=True)
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    rc = 0
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if not stopping:
            rc = 1
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("prepare", "up"):
        s = sub.add_parser(name)
        s.add_argument("--dir", required=True)
        s.add_argument("--brokers", type=int, default=3)
        s.add_argument("--security", choices=["plaintext", "sasl_ssl", "mtls"], default="plaintext")
        s.add_argument("--base-port", type=int, default=0,
                       help="client ports N.., inter-broker N+brokers.., controller N+2*brokers..")
        s.add_argument("--client-advertised-ports", default="",
                       help="comma-separated: the ports clients are told to use (a TCP proxy in front of "
                            "each node's client listener, which a test can cut); default the listeners' own")
        s.add_argument("--lib", help="Kafka jars (default ${SLUICE_TOOLS_DIR:-<repo>/.tools}/kafka/lib)")
        s.add_argument("--java", help="java 17+ (default $SLUICE_JAVA, $JAVA_HOME/bin/java, PATH)")
        s.add_argument("--heap", default="512m", help="-Xmx per node")
        s.add_argument("--heap-min", default="256m", help="-Xms per node")
        s.add_argument("--jit", choices=["fast-start", "full"], default="fast-start",
                       help="fast-start: C1 only (quick start, lower peak throughput); full: C1+C2")
    a = ap.parse_args()
    if a.brokers < 1:
        ap.error("--brokers must be at least 1")
    try:
        if a.command == "prepare":
            print(json.dumps(prepare(a)))
            return 0
        return up(a)
    except Fail as e:
        print(f"cluster.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
