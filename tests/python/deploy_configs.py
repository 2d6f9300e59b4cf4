"""Turns the shipped proxy configurations (deploy/nginx, deploy/haproxy) into
ones that run here: a throwaway certificate, a loopback port, the given
roomcast upstreams, every path in a temporary directory. Only the lines that
name a place change; the rest is the shipped file, so what is checked and
tested is what is shipped.

Used by tests/python/test_proxy.py and, as a command, by
scripts/check-deploy.sh:

    python3 deploy_configs.py nginx|haproxy DIR PORT UPSTREAM...
prints the path of the configuration written into DIR.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "roomcast.conf"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "roomcast.cfg"


def make_cert(directory):
    """A self-signed P-256 certificate for localhost: (cert, key, combined)."""
    directory = pathlib.Path(directory)
    cert, key, combined = directory / "cert.pem", directory / "key.pem", directory / "combined.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    combined.write_text(cert.read_text() + key.read_text())
    return cert, key, combined


def _replace(text, pattern, replacement, count=1):
    """re.sub that insists the shipped file still has the line it replaces."""
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    if n != count:
        raise ValueError(f"expected {count} match(es) of {pattern!r}, found {n}")
    return new


def _upstream_lines(text, pattern, render, upstreams):
    """Replaces the shipped upstream server lines with one per upstream."""
    lines = [m for m in re.finditer(pattern, text, flags=re.M)]
    if not lines:
        raise ValueError(f"no upstream lines match {pattern!r}")
    start, end = lines[0].start(), lines[-1].end()
    rendered = "\n".join(render(i, addr, lines[0]) for i, addr in enumerate(upstreams, 1))
    return text[:start] + rendered + text[end:]


def render_nginx(directory, port, upstreams):
    """Writes roomcast.conf and a main nginx.conf around it; returns the latter."""
    directory = pathlib.Path(directory)
    cert, key, _ = make_cert(directory)
    text = NGINX_CONF.read_text()
    text = _replace(text, r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{port} ssl;")
    text = _replace(text, r"^\s*listen \[::\]:443 ssl;\n", "")
    text = _replace(text, r"/etc/ssl/roomcast/fullchain\.pem", str(cert))
    text = _replace(text, r"/etc/ssl/roomcast/privkey\.pem", str(key))
    text = _upstream_lines(
        text, r"^(\s*)server 127\.0\.0\.1:\d+( .*);$",
        lambda _, addr, m: f"{m.group(1)}server {addr}{m.group(2)};", upstreams,
    )
    (directory / "roomcast.conf").write_text(text)
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\n"
        "worker_processes 1;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {directory}/access.log;\n{temp}\n"
        f"    include {directory}/roomcast.conf;\n"
        "}\n"
    )
    return main


def render_haproxy(directory, port, upstreams):
    """Writes haproxy.cfg (no chroot, user or syslog: a test runs it in the
    foreground); returns its path."""
    directory = pathlib.Path(directory)
    _, _, combined = make_cert(directory)
    text = HAPROXY_CFG.read_text()
    for line in (r"^\s*chroot .*\n", r"^\s*user .*\n", r"^\s*group .*\n", r"^\s*daemon\n"):
        text = _replace(text, line, "")
    text = _replace(text, r"^(\s*)log /dev/log local0$", r"\1log stderr format raw local0 notice")
    text = _replace(text, r"^(\s*)maxconn \d+$", r"\1maxconn 4096")
    text = _replace(text, r"bind :443 ssl crt /etc/haproxy/certs/roomcast\.pem", f"bind 127.0.0.1:{port} ssl crt {combined}")
    text = _upstream_lines(
        text, r"^(\s*)server roomcast\d+ 127\.0\.0\.1:\d+$",
        lambda i, addr, m: f"{m.group(1)}server roomcast{i} {addr}", upstreams,
    )
    cfg = directory / "haproxy.cfg"
    cfg.write_text(text)
    return cfg


if __name__ == "__main__":
    kind, directory, port, *upstreams = sys.argv[1:]
    render = {"nginx": render_nginx, "haproxy": render_haproxy}[kind]
    print(render(directory, int(port), upstreams))
