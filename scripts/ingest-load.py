#!/usr/bin/env python3
"""Concurrent ingest load against a running gateway: CLIENTS keep-alive connections, each posting
BATCH-record batches of 政务服务网 approvals (the nx-zwfw-approval fixture, every record with its
own 办件编号, so none is a duplicate) as fast as the gateway answers. After a warm-up it measures for
SECONDS and prints records/s and the request latency p50/p99.

    TOKEN=$(shenguan token issue --role adapter --subject nx-zwfw-approval)
    python3 scripts/ingest-load.py --url http://127.0.0.1:8080 --token "$TOKEN"

Standard library only. Exit status 1 when any request is answered other than 202.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "adapters/nx-zwfw/fixtures/nx-zwfw-approval/01-company.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--token", required=True, help="an adapter token for nx-zwfw-approval")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--run", default=str(int(time.time()) % 100000),
                    help="a number that makes this run's 办件编号 its own (default: from the clock)")
    args = ap.parse_args()

    record = json.loads(FIXTURE.read_text(encoding="utf-8"))
    record["PROJID"] = "@PROJID@"
    record["DOCUMENT_CODE"] = "@DOC@"
    template = json.dumps(record, ensure_ascii=False)
    url = urllib.parse.urlparse(args.url)
    path = "/v1/ingest/nx-zwfw-approval"
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}

    lock = threading.Lock()
    start = time.monotonic()
    measure_from = start + args.warmup
    measure_to = measure_from + args.seconds
    latencies: list[float] = []
    records = 0
    failures: list[str] = []

    def client(n: int) -> None:
        nonlocal records
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        seq = 0
        while time.monotonic() < measure_to:
            parts = []
            for _ in range(args.batch):
                seq += 1
                key = f"{args.run:>05}{n:02d}{seq:09d}"[-16:]
                parts.append(template.replace("@PROJID@", f"64{key}")
                             .replace("@DOC@", f"石审服食经许字〔2026〕第{key}号"))
            body = ("[" + ",".join(parts) + "]").encode()
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(str(exc))
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
                continue
            t1 = time.monotonic()
            if resp.status != 202:
                with lock:
                    failures.append(f"{resp.status} {answer[:200]!r}")
                continue
            if measure_from <= t0 and t1 <= measure_to:
                with lock:
                    latencies.append(t1 - t0)
                    records += args.batch

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    print(f"clients {args.clients}, batch {args.batch}, measured {args.seconds:.0f} s after {args.warmup:.0f} s warm-up")
    print(f"records/s {records / args.seconds:,.0f}  requests {len(latencies)}  "
          f"p50 {pct(0.50):.1f} ms  p99 {pct(0.99):.1f} ms  failures {len(failures)}")
    for f in failures[:5]:
        print(f"  failure: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
