"""An OTLP/HTTP receiver for the telemetry tests, built on the
opentelemetry-proto definitions: every export (JSON bodies, as OTLP/JSON
specifies them: trace and span ids in hex) is parsed strictly into its
ExportTraceServiceRequest or ExportMetricsServiceRequest message, so a
field the protocol does not have, a wrong type or a malformed id is a 400
and recorded as an error. What parses is appended, as the message's
canonical JSON, to OUT (one line each: {"signal", "body"} or {"error"}).

Usage: python3 otlp_receiver.py PORT OUT
Prints "ready" once it listens.
"""
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

port, out = int(sys.argv[1]), sys.argv[2]
MESSAGES = {"/v1/traces": ("traces", ExportTraceServiceRequest), "/v1/metrics": ("metrics", ExportMetricsServiceRequest)}


def ids_to_base64(document):
    """OTLP/JSON writes ids in hex where protobuf's JSON mapping expects
    base64: convert them, checking their length, before the strict parse."""
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for field, size in (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)):
                    if field in span:
                        raw = bytes.fromhex(span[field])
                        if len(raw) != size:
                            raise ValueError(f"{field} is {len(raw)} bytes, not {size}")
                        span[field] = base64.b64encode(raw).decode()


def ids_to_hex(document):
    """Back to hex in what is written, as OTLP/JSON spells ids."""
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()


def write(line):
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path not in MESSAGES:
            self.send_response(404)
            self.end_headers()
            return
        signal, message = MESSAGES[self.path]
        try:
            if not self.headers.get("content-type", "").startswith("application/json"):
                raise ValueError("content-type is not application/json")
            document = json.loads(body)
            ids_to_base64(document)
            parsed = json_format.Parse(json.dumps(document), message())
            canonical = json_format.MessageToDict(parsed)
            ids_to_hex(canonical)
        except Exception as error:  # any refusal is the test's failure to report
            write({"error": f"{signal}: {error}"})
            self.send_response(400)
            self.end_headers()
            return
        write({"signal": signal, "body": canonical})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
print("ready", flush=True)
server.serve_forever()
