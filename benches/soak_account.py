"""The accounting of benches/soak.sh: every churn record delivered once, or counted.

usage: soak_account.py WORK_DIR CONNECTIONS SERVER_PORT ACHIEVED_RATE TARGET_RATE

Reads WORK_DIR/out.jsonl (the reference collector's output) and WORK_DIR/metrics.txt
(the exporter's last scrape before its stop). Exits 1 on any failure it names.
"""

import json
import sys


def main() -> int:
    work, made, server_port, achieved, rate = sys.argv[1:6]
    expected = 2 * int(made)  # client and server socket of each loopback connection
    seen, dup = set(), 0
    with open(f"{work}/out.jsonl") as out:
        for line in out:
            r = json.loads(line)
            if server_port not in (str(r.get("local_port")), str(r.get("remote_port"))):
                continue  # the exporter's own traffic, metrics scrapes
            key = line.strip()
            dup += key in seen
            seen.add(key)
    metrics = {}
    with open(f"{work}/metrics.txt") as text:
        for line in text:
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            metrics[name] = int(float(value))

    dropped = {k: v for k, v in metrics.items() if k.startswith("flowexporter_records_dropped_total")}
    policy = {k: v for k, v in dropped.items() if 'intentional="true"' in k}
    other = {k: v for k, v in dropped.items() if 'intentional="false"' in k}
    missing = expected - len(seen)
    print(f"connections: {made} at {achieved}/s (target {rate}/s); churn records expected: {expected}")
    print(f"delivered once: {len(seen)}; duplicates: {dup}; missing: {missing}")
    print(f"dropped by policy (all records, churn and other): {sum(policy.values())}")
    for k, v in sorted(policy.items()) + sorted(other.items()):
        print(f"  {k} {v}")
    shown = ("journal_degraded", "journal_write_failures", "journal_records_not_journaled",
             "journal_resumed", "unspooled", "memory_dropped", "disk_full", "pipeline_errors",
             "records_captured", "kernel_records_submitted", "records_sent")
    for k in sorted(metrics):
        if any(w in k for w in shown):
            print(f"  {k} {metrics[k]}")

    failures = []
    if float(achieved) < 0.95 * float(rate):
        failures.append(f"churn achieved {achieved}/s, under 95% of {rate}/s")
    if dup:
        failures.append(f"{dup} records delivered twice")
    if missing > sum(policy.values()):
        failures.append(f"{missing - sum(policy.values())} records missing beyond the counted policy drops")
    if sum(other.values()):
        failures.append(f"records dropped for reasons that are not a policy: {other}")
    errors = sum(v for k, v in metrics.items() if k.startswith("flowexporter_pipeline_errors_total"))
    if errors:
        failures.append(f"the pipeline survived {errors} errors (flowexporter_pipeline_errors_total)")
    for f in failures:
        print("FAIL:", f)
    print("soak: " + ("FAILED" if failures else
                      "passed: every churn record delivered once or counted by a policy drop"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
