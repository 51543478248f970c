#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace receiver for looking at shardfeed's spans without a collector.

    python3 -m venv /tmp/otlp && /tmp/otlp/bin/pip install grpcio opentelemetry-proto
    /tmp/otlp/bin/python deploy/local/otlp-receiver.py 127.0.0.1:4317 > spans.jsonl &
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
    ./deploy/local/up.sh && ./deploy/local/cli.sh demo
    /tmp/otlp/bin/python deploy/local/otlp-receiver.py --tree spans.jsonl

Receiving, it prints each span as a JSON line; `--tree FILE` prints the span tree of the trace
that spans the most services.
"""
import collections
import json
import sys


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def receive(addr):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            for rs in request.resource_spans:
                attrs = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        print(json.dumps({
                            "service": attrs.get("service.name", "?"),
                            "trace": s.trace_id.hex(), "span": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(), "name": s.name,
                            "start": s.start_time_unix_nano,
                            "attrs": {a.key: value(a.value) for a in s.attributes},
                        }), flush=True)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    server.add_insecure_port(addr)
    server.start()
    server.wait_for_termination()


def tree(path):
    spans = [json.loads(line) for line in open(path) if line.strip()]
    traces = collections.defaultdict(list)
    for s in spans:
        traces[s["trace"]].append(s)
    trace = max(traces, key=lambda t: (len({s["service"] for s in traces[t]}), len(traces[t])))
    ours = traces[trace]
    ids = {s["span"] for s in ours}
    children = collections.defaultdict(list)
    for s in ours:
        children[s["parent"] if s["parent"] in ids else None].append(s)
    print(f"trace {trace}: {len(ours)} spans, services {sorted({s['service'] for s in ours})}")
    keys = ("rpc.grpc.status_code", "enduser.id", "db.system", "server.port",
            "db.operation.batch.size", "db.response.returned_rows")

    def show(s, depth):
        shown = {k: s["attrs"][k] for k in keys if k in s["attrs"]}
        print("  " * depth + f"- [{s['service']}] {s['name']} {shown}")
        for child in sorted(children[s["span"]], key=lambda c: c["start"]):
            show(child, depth + 1)

    for root in sorted(children[None], key=lambda r: r["start"]):
        show(root, 0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tree":
        tree(sys.argv[2])
    else:
        receive(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:4317")
