// Tests for the plain Node.js baseline server. Run with
//   MODEL=/path/to/mlp/1/model.onnx node --test
// where the model is the MLP the Go project generates:
//   (cd ../.. && go run ./internal/testmodels/cmd/gendemo /tmp/models)
//   MODEL=/tmp/models/mlp/1/model.onnx node --test
// The model has input "input" FP32 [batch,4] and output "output" FP32 [batch,3].
// The server's answers are compared with a direct session.run of the same
// model in this process.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const ort = require('onnxruntime-node');

const MODEL = process.env.MODEL;
const skip = MODEL ? false
  : 'MODEL is unset: set MODEL to an ONNX model path, e.g. the MLP from ' +
    '`go run ./internal/testmodels/cmd/gendemo DIR` (DIR/mlp/1/model.onnx)';

let server;
let base;
let session;

function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [
      path.join(__dirname, 'server.js'),
      '--model', MODEL, '--name', 'mlp', '--port', '0', '--host', '127.0.0.1', '--threads', '2',
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before listening`)));
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', (line) => {
      const m = /^listening (127\.0\.0\.1:\d+)$/.exec(line);
      if (!m) {
        reject(new Error(`unexpected first line: ${line}`));
        return;
      }
      resolve({ child, base: `http://${m[1]}` });
    });
  });
}

async function postInfer(body, headers = {}) {
  const res = await fetch(`${base}/v2/models/mlp/infer`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

function assertClose(actual, expected, tol = 1e-5) {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const diff = Math.abs(actual[i] - expected[i]);
    assert.ok(diff <= tol * Math.max(1, Math.abs(expected[i])),
      `element ${i}: got ${actual[i]}, want ${expected[i]}`);
  }
}

before(async () => {
  if (skip) return;
  session = await ort.InferenceSession.create(MODEL, { executionProviders: ['cpu'] });
  ({ child: server, base } = await startServer());
});

after(async () => {
  if (server) {
    server.removeAllListeners('exit');
    server.kill('SIGTERM');
  }
  if (session) {
    await session.release();
  }
});

test('health and metadata', { skip }, async () => {
  const ready = await fetch(`${base}/v2/health/ready`);
  assert.equal(ready.status, 200);

  const res = await fetch(`${base}/v2/models/mlp`);
  assert.equal(res.status, 200);
  const meta = await res.json();
  assert.equal(meta.name, 'mlp');
  assert.deepEqual(meta.versions, ['1']);
  assert.equal(meta.platform, 'onnxruntime_onnx');
  assert.deepEqual(meta.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, 4] }]);
  assert.deepEqual(meta.outputs, [{ name: 'output', datatype: 'FP32', shape: [-1, 3] }]);
});

test('infer matches a direct session.run', { skip }, async () => {
  const rows = 5;
  const flat = Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 0.7) * 3);
  const want = await session.run({ input: new ort.Tensor('float32', Float32Array.from(flat), [rows, 4]) });

  const { status, body } = await postInfer({
    id: 'req-1',
    inputs: [{ name: 'input', shape: [rows, 4], datatype: 'FP32', data: flat }],
  });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.model_name, 'mlp');
  assert.equal(body.model_version, '1');
  assert.equal(body.id, 'req-1');
  assert.equal(body.outputs.length, 1);
  const out = body.outputs[0];
  assert.equal(out.name, 'output');
  assert.equal(out.datatype, 'FP32');
  assert.deepEqual(out.shape, [rows, 3]);
  assertClose(out.data, Array.from(want.output.data));
});

test('nested data, requested outputs and the versions path', { skip }, async () => {
  const nested = [[0.5, -1, 2, 0.25], [3, 1, -0.5, 4]];
  const want = await session.run({
    input: new ort.Tensor('float32', Float32Array.from(nested.flat()), [2, 4]),
  });
  const res = await fetch(`${base}/v2/models/mlp/versions/1/infer`, {
    method: 'POST',
    body: JSON.stringify({
      inputs: [{ name: 'input', shape: [2, 4], datatype: 'FP32', data: nested }],
      outputs: [{ name: 'output' }],
    }),
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.id, undefined);
  assert.deepEqual(body.outputs[0].shape, [2, 3]);
  assertClose(body.outputs[0].data, Array.from(want.output.data));
});

test('concurrent requests each get their own answer', { skip }, async () => {
  const inputs = Array.from({ length: 16 }, (_, r) => Array.from({ length: 4 }, (_, i) => r - i * 0.3));
  const answers = await Promise.all(inputs.map((row) => postInfer({
    inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: row }],
  })));
  for (let r = 0; r < inputs.length; r++) {
    const want = await session.run({ input: new ort.Tensor('float32', Float32Array.from(inputs[r]), [1, 4]) });
    assert.equal(answers[r].status, 200);
    assertClose(answers[r].body.outputs[0].data, Array.from(want.output.data));
  }
});

test('errors', { skip }, async () => {
  let r = await postInfer('{not json');
  assert.equal(r.status, 400);
  assert.match(r.body.error, /invalid JSON/);

  r = await postInfer({ inputs: [{ name: 'input', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3] }] });
  assert.equal(r.status, 400);
  assert.match(r.body.error, /elements/);

  r = await postInfer({ inputs: [{ name: 'input', shape: [1, 5], datatype: 'FP32', data: [1, 2, 3, 4, 5] }] });
  assert.equal(r.status, 400);
  assert.match(r.body.error, /shape/);

  r = await postInfer({ inputs: [{ name: 'nope', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] });
  assert.equal(r.status, 400);

  r = await postInfer({ inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] },
    { 'Inference-Header-Content-Length': '80' });
  assert.equal(r.status, 400);
  assert.match(r.body.error, /binary/);

  const res = await fetch(`${base}/v2/models/other`);
  assert.equal(res.status, 400);
  assert.ok((await res.json()).error);
});
