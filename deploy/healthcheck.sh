#!/bin/bash
# Container health check without curl: GET http://HOST:PORT/PATH with bash's /dev/tcp and
# succeed on a 2xx status. Used by the image's HEALTHCHECK and docker-compose.yml.
#   shenguan-healthcheck [PATH] [PORT] [HOST]     defaults: /healthz, 8080, 127.0.0.1
# /healthz says the process serves HTTP; /readyz also that the bus is reachable.
set -euo pipefail
path="${1:-/healthz}"
port="${2:-8080}"
host="${3:-127.0.0.1}"
exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$host" "$port" >&3
IFS= read -r -t 5 status <&3 || { echo "no answer from ${host}:${port}${path}" >&2; exit 1; }
status="${status%$'\r'}"
case "$status" in
  "HTTP/1."?" 2"[0-9][0-9]*) exit 0 ;;
  *) echo "${host}:${port}${path}: ${status}" >&2; exit 1 ;;
esac
