"""An independent OTLP/HTTP logs receiver for the OTLP sink's tests.

Decodes every request body with the official OpenTelemetry protobuf definitions
(opentelemetry-proto's ExportLogsServiceRequest), after gunzipping it when it says
Content-Encoding: gzip, and appends one JSON line per request to --out:

    {"n": 0, "time": 1700000000.5, "path": "/v1/logs", "status": 200, "headers": {...},
     "request": MessageToDict(request, preserving_proto_field_name=True)}

--plan answers the first requests: a comma-separated list of STATUS[:RETRY_AFTER]
(e.g. "503:1,429:1"; "413" for a request too large) or "partial:N" (200 with a
partial success rejecting N log records); requests past the plan are answered 200
with an empty response. Every request is decoded and written to --out whatever the
plan answers, so a test sees what was refused as well as what was accepted.
"""

import argparse
import gzip
import http.server
import json
import sys
import threading
import time

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--plan", default="")
    args = parser.parse_args()
    plan = [p for p in args.plan.split(",") if p]
    lock = threading.Lock()
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with lock:
                n = count[0]
                count[0] += 1
            step = plan[n] if n < len(plan) else "200"
            line = {
                "n": n,
                "time": time.time(),
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            try:
                body = raw
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(raw)
                request = logs_service_pb2.ExportLogsServiceRequest()
                request.ParseFromString(body)
                line["request"] = MessageToDict(
                    request, preserving_proto_field_name=True
                )
            except Exception as e:  # reported to the test, answered 400
                line["error"] = repr(e)
                step = "400"
            response = logs_service_pb2.ExportLogsServiceResponse()
            extra = {}
            if step.startswith("partial:"):
                status = 200
                response.partial_success.rejected_log_records = int(step.split(":")[1])
                response.partial_success.error_message = "too many attributes"
            else:
                status, _, after = step.partition(":")
                status = int(status)
                if after:
                    extra["Retry-After"] = after
            line["status"] = status
            with lock:
                with open(args.out, "a") as f:
                    f.write(json.dumps(line) + "\n")
            payload = response.SerializeToString() if status == 200 else b"refused by plan"
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
