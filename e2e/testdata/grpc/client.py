#!/usr/bin/env python3
"""A gRPC client of inferd that nobody on the project wrote the stubs of: grpcio with stubs that
grpc_tools generated from the Open Inference Protocol's .proto (TestPythonGRPCClient,
e2e/grpc_python_test.go, generates them and runs this).

    client.py --addr HOST:PORT --stubs DIR --cases CASES.json

CASES.json, written by the Go test, holds the server's metadata as HTTP answers it and, per
PaddleOCR model, an input (raw little-endian FP32 in a file) with the outputs that ONNX Runtime
computed for it in the Go test's process. This checks ServerLive and ServerReady,
ServerMetadata and ModelMetadata against HTTP's answers, ModelReady, typed and raw ModelInfer
against the expected outputs, ModelStreamInfer with every request in flight at once (matched by
id, a bad one answered in its own response while the stream goes on), and grpc.health.v1 Check.
It prints one line per check and exits 1 if any failed.
"""

import argparse
import array
import json
import os
import sys
import threading

import grpc

TOLERANCE = 1e-4
TIMEOUT = 60  # seconds, per call

failures = []


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (": " + detail if detail and not ok else ""))
    if not ok:
        failures.append(what + (": " + detail if detail else ""))
    return ok


def floats(data):
    a = array.array("f")
    a.frombytes(data)
    return a


def read_floats(path):
    with open(path, "rb") as f:
        return floats(f.read())


def worst_diff(got, want):
    if len(got) != len(want):
        return float("inf")
    return max((abs(g - w) for g, w in zip(got, want)), default=0.0)


def check_outputs(what, resp, expected, req_id):
    """resp is a ModelInferResponse; expected the case's outputs (name, shape, data)."""
    check(resp.id == req_id, what + ": id echoed", "got %r, want %r" % (resp.id, req_id))
    names = [o.name for o in resp.outputs]
    want_names = [e["name"] for e in expected]
    if not check(names == want_names, what + ": outputs", "got %s, want %s" % (names, want_names)):
        return
    if not check(len(resp.raw_output_contents) == len(expected), what + ": raw_output_contents",
                 "%d entries for %d outputs" % (len(resp.raw_output_contents), len(expected))):
        return
    for out, raw, exp in zip(resp.outputs, resp.raw_output_contents, expected):
        check(out.datatype == "FP32" and list(out.shape) == exp["shape"],
              "%s: output %s is FP32 %s" % (what, out.name, exp["shape"]),
              "got %s %s" % (out.datatype, list(out.shape)))
        d = worst_diff(floats(raw), exp["data"])
        check(d <= TOLERANCE, "%s: output %s matches in-process ONNX Runtime (max diff %g)" % (what, out.name, d),
              "max diff %g over %d values" % (d, len(exp["data"])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--cases", required=True)
    args = ap.parse_args()
    if sys.byteorder != "little":
        print("FAIL this check reads raw tensors as little-endian floats")
        return 1
    sys.path.insert(0, args.stubs)
    import open_inference_grpc_pb2 as pb
    import open_inference_grpc_pb2_grpc as pb_grpc
    import triton_stream_pb2
    import health_pb2
    import health_pb2_grpc

    with open(args.cases) as f:
        cases = json.load(f)
    base = os.path.dirname(os.path.abspath(args.cases))
    for m in cases["models"]:
        m["input_data"] = read_floats(os.path.join(base, m["input_file"]))
        for e in m["expected"]:
            e["data"] = read_floats(os.path.join(base, e["file"]))

    channel = grpc.insecure_channel(args.addr, options=[("grpc.max_receive_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    # Server health and metadata, as HTTP says.
    check(stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live, "ServerLive")
    check(stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready, "ServerReady")
    sm = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
    want = cases["server"]
    check(sm.name == want["name"] and sm.version == want["version"], "ServerMetadata is HTTP's",
          "got %s %s, want %s %s" % (sm.name, sm.version, want["name"], want["version"]))

    for m in cases["models"]:
        name, meta = m["name"], m["metadata"]
        check(stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=TIMEOUT).ready, "ModelReady " + name)
        mm = stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=TIMEOUT)

        def tensors(ts):
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]

        got = {"name": mm.name, "versions": list(mm.versions), "platform": mm.platform,
               "inputs": tensors(mm.inputs), "outputs": tensors(mm.outputs)}
        exp = {k: meta[k] for k in ("name", "versions", "platform", "inputs", "outputs")}
        check(got == exp, "ModelMetadata %s is HTTP's" % name, "got %s, want %s" % (got, exp))

    # Unary inference, typed and raw.
    for m in cases["models"]:
        name, shape = m["name"], m["shape"]
        typed = pb.ModelInferRequest(model_name=name, id=name + "-typed", inputs=[pb.ModelInferRequest.InferInputTensor(
            name=m["input_name"], datatype="FP32", shape=shape, contents=pb.InferTensorContents(fp32_contents=m["input_data"]))])
        check_outputs("ModelInfer %s typed" % name, stub.ModelInfer(typed, timeout=TIMEOUT), m["expected"], name + "-typed")
        raw = pb.ModelInferRequest(model_name=name, id=name + "-raw", inputs=[pb.ModelInferRequest.InferInputTensor(
            name=m["input_name"], datatype="FP32", shape=shape)], raw_input_contents=[m["input_data"].tobytes()])
        check_outputs("ModelInfer %s raw" % name, stub.ModelInfer(raw, timeout=TIMEOUT), m["expected"], name + "-raw")

    # An unknown model is NOT_FOUND.
    try:
        stub.ModelInfer(pb.ModelInferRequest(model_name="no_such_model"), timeout=TIMEOUT)
        check(False, "ModelInfer of an unknown model fails", "it succeeded")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "ModelInfer of an unknown model is NOT_FOUND", str(e.code()))

    stream_checks(channel, pb, triton_stream_pb2, cases)

    # grpc.health.v1 as a load balancer calls it.
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ["", "inference.GRPCInferenceService"] + [m["name"] for m in cases["models"]]:
        st = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
        check(st == serving, "health Check %r is SERVING" % service, "status %d" % st)
    try:
        health.Check(health_pb2.HealthCheckRequest(service="no_such_model"), timeout=TIMEOUT)
        check(False, "health Check of an unknown service fails", "it answered")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "health Check of an unknown service is NOT_FOUND", str(e.code()))

    channel.close()
    if failures:
        print("%d checks failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


def stream_checks(channel, pb, ts_pb, cases):
    """Several requests in flight on one stream, a bad one among them; more follow once the
    bad one is answered, so the stream is seen to go on after it."""
    stream_infer = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                         request_serializer=pb.ModelInferRequest.SerializeToString,
                                         response_deserializer=ts_pb.ModelStreamInferResponse.FromString)
    expected = {}

    def batch(rep):
        out = []
        for m in cases["models"]:
            rid = "%s-stream-%d" % (m["name"], rep)
            out.append(pb.ModelInferRequest(model_name=m["name"], id=rid, inputs=[pb.ModelInferRequest.InferInputTensor(
                name=m["input_name"], datatype="FP32", shape=m["shape"])], raw_input_contents=[m["input_data"].tobytes()]))
            expected[rid] = m["expected"]
        return out

    bad = cases["bad"]
    first = batch(0) + [pb.ModelInferRequest(model_name=bad["model"], id="bad", inputs=[pb.ModelInferRequest.InferInputTensor(
        name=bad["input_name"], datatype="FP32", shape=bad["shape"])], raw_input_contents=[bytes(4 * bad["elements"])])] + batch(1)
    after_bad = batch(2)
    total = len(first) + len(after_bad)
    bad_answered, all_answered = threading.Event(), threading.Event()
    sent = []

    def feed():
        for r in first:
            sent.append(r.id)
            yield r
        if not bad_answered.wait(TIMEOUT):
            return
        for r in after_bad:
            sent.append(r.id)
            yield r
        # Keep the stream open until every answer is in, so that none can be put down to the
        # client closing its side.
        all_answered.wait(TIMEOUT)

    responses, order = {}, []
    call = stream_infer(feed(), timeout=4 * TIMEOUT)
    for r in call:
        rid = r.infer_response.id
        if rid in responses:
            check(False, "stream: one response per id", "second response for %r" % rid)
        responses[rid] = r
        order.append(rid)
        if rid == "bad":
            bad_answered.set()
        if len(responses) == total:
            all_answered.set()
    bad_answered.set()
    all_answered.set()
    check(len(sent) == total, "stream: %d requests sent on one stream, %d of them before any answer was read" % (total, len(first)),
          "sent %d" % len(sent))
    check(call.code() == grpc.StatusCode.OK, "stream ends OK once the client closes its side", str(call.code()))
    check(set(responses) == set(expected) | {"bad"}, "stream: one response for each request, matched by id",
          "got ids %s" % sorted(responses))
    b = responses.get("bad")
    if check(b is not None, "stream: the bad request is answered in its own response"):
        params = b.infer_response.parameters
        code = params["error_code"].string_param if "error_code" in params else ""
        check(bad["message"] in b.error_message and code == "INVALID_ARGUMENT",
              "stream: the bad request's error is INVALID_ARGUMENT (%s)" % b.error_message,
              "got %r %r, want INVALID_ARGUMENT and %r" % (code, b.error_message, bad["message"]))
    for rid, exp in sorted(expected.items()):
        r = responses.get(rid)
        if r is not None and check(r.error_message == "", "stream %s succeeded" % rid, r.error_message):
            check_outputs("stream " + rid, r.infer_response, exp, rid)
    print("stream: answers came in the order %s" % " ".join(order))


if __name__ == "__main__":
    sys.exit(main())
