#!/usr/bin/env node
// A plain Node.js HTTP server for one ONNX model, written the way most users
// would write one with onnxruntime-node: one InferenceSession created at
// start, Node's built-in http module, JSON.parse of the body, one
// session.run per request, JSON.stringify of the response. No batching, no
// worker threads, no binary tensors. It is the baseline `make bench` compares
// inferd against; see README.md.
//
// Usage:
//   node server.js --model path/to/model.onnx [--name mlp] [--port 8000]
//                  [--host 127.0.0.1] [--threads N]
//
// --threads (or env THREADS) sets the session's intraOpNumThreads; 0 or unset
// leaves ONNX Runtime's default. The first stdout line is
// "listening HOST:PORT" (with the real port when --port is 0).

'use strict';

const http = require('node:http');
const path = require('node:path');
const { parseArgs } = require('node:util');
const ort = require('onnxruntime-node');

// KServe v2 datatype <-> onnxruntime-node tensor type. FP32 is what the
// benchmark uses; the other plain numeric types cost nothing to list.
const V2_TO_ORT = {
  FP32: 'float32',
  FP64: 'float64',
  INT8: 'int8',
  UINT8: 'uint8',
  INT16: 'int16',
  UINT16: 'uint16',
  INT32: 'int32',
  UINT32: 'uint32',
  INT64: 'int64',
  BOOL: 'bool',
};
const ORT_TO_V2 = Object.fromEntries(Object.entries(V2_TO_ORT).map(([k, v]) => [v, k]));
const ARRAY_TYPES = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  bool: Uint8Array,
};

const MAX_BODY_BYTES = 256 * 1024 * 1024;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      name: { type: 'string' },
      port: { type: 'string', default: process.env.PORT || '8000' },
      host: { type: 'string', default: process.env.HOST || '127.0.0.1' },
      threads: { type: 'string', default: process.env.THREADS || '0' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || !values.model) {
    process.stderr.write(
      'usage: node server.js --model model.onnx [--name NAME] [--port 8000] [--host 127.0.0.1] [--threads N]\n');
    process.exit(values.help ? 0 : 2);
  }
  const port = Number(values.port);
  const threads = Number(values.threads);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad --port ${values.port}`);
  }
  if (!Number.isInteger(threads) || threads < 0) {
    throw new Error(`bad --threads ${values.threads}`);
  }
  return {
    model: values.model,
    // Default name: the folder above the version folder for a
    // repository-style path (mlp/1/model.onnx -> mlp), else the file's name.
    name: values.name || defaultName(values.model),
    port,
    host: values.host,
    threads,
  };
}

function defaultName(modelPath) {
  const abs = path.resolve(modelPath);
  const dir = path.dirname(abs);
  if (/^\d+$/.test(path.basename(dir))) {
    return path.basename(path.dirname(dir));
  }
  return path.basename(abs, '.onnx');
}

function metadataOf(meta) {
  return {
    name: meta.name,
    datatype: meta.isTensor ? (ORT_TO_V2[meta.type] || meta.type.toUpperCase()) : 'UNKNOWN',
    // Symbolic or unknown dimensions are -1, as in KServe v2.
    shape: meta.isTensor ? meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) : [],
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function createServer(session, modelName) {
  const inputMeta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const metadata = {
    name: modelName,
    versions: ['1'],
    platform: 'onnxruntime_onnx',
    inputs: session.inputMetadata.map(metadataOf),
    outputs: session.outputMetadata.map(metadataOf),
  };

  function toTensor(input) {
    if (!input || typeof input.name !== 'string') {
      throw new HttpError(400, 'each input needs a name');
    }
    const meta = inputMeta.get(input.name);
    if (!meta) {
      throw new HttpError(400, `unknown input '${input.name}' for model '${modelName}'`);
    }
    const type = V2_TO_ORT[input.datatype];
    if (!type) {
      throw new HttpError(400, `unsupported datatype '${input.datatype}' for input '${input.name}'`);
    }
    if (meta.isTensor && meta.type !== type) {
      throw new HttpError(400, `input '${input.name}' has datatype ${input.datatype}, model expects ${ORT_TO_V2[meta.type] || meta.type}`);
    }
    const shape = input.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new HttpError(400, `input '${input.name}' needs a shape of non-negative integers`);
    }
    if (meta.isTensor && meta.shape.length > 0) {
      const ok = meta.shape.length === shape.length &&
        meta.shape.every((d, i) => typeof d !== 'number' || d < 0 || d === shape[i]);
      if (!ok) {
        throw new HttpError(400, `input '${input.name}' has shape [${shape}], model expects [${metadataOf(meta).shape}]`);
      }
    }
    if (!Array.isArray(input.data)) {
      throw new HttpError(400, `input '${input.name}' needs a data array`);
    }
    const flat = input.data.flat(Infinity);
    const count = shape.reduce((a, b) => a * b, 1);
    if (flat.length !== count) {
      throw new HttpError(400, `input '${input.name}' has ${flat.length} elements, shape [${shape}] needs ${count}`);
    }
    let data;
    if (type === 'float32') {
      data = Float32Array.from(flat);
    } else if (type === 'int64') {
      data = BigInt64Array.from(flat, (v) => BigInt(v));
    } else if (type === 'bool') {
      data = Uint8Array.from(flat, (v) => (v ? 1 : 0));
    } else {
      data = ARRAY_TYPES[type].from(flat);
    }
    return new ort.Tensor(type, data, shape);
  }

  async function infer(req, res) {
    if (req.headers['inference-header-content-length'] !== undefined) {
      throw new HttpError(400, 'binary tensor data extension is not supported by this server');
    }
    const text = await readBody(req);
    let body;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, `invalid JSON: ${err.message}`);
    }
    if (!body || !Array.isArray(body.inputs)) {
      throw new HttpError(400, "request needs an 'inputs' array");
    }
    const feeds = {};
    for (const input of body.inputs) {
      feeds[input && input.name] = toTensor(input);
    }
    for (const name of session.inputNames) {
      if (!(name in feeds)) {
        throw new HttpError(400, `missing input '${name}'`);
      }
    }
    let outputNames = session.outputNames;
    if (Array.isArray(body.outputs) && body.outputs.length > 0) {
      outputNames = body.outputs.map((o) => o && o.name);
      for (const name of outputNames) {
        if (!session.outputNames.includes(name)) {
          throw new HttpError(400, `unknown output '${name}' for model '${modelName}'`);
        }
      }
    }

    let results;
    try {
      results = await session.run(feeds, outputNames);
    } catch (err) {
      throw new HttpError(500, `inference failed: ${err.message}`);
    }

    const response = { model_name: modelName, model_version: '1' };
    if (body.id !== undefined) {
      response.id = body.id;
    }
    response.outputs = outputNames.map((name) => {
      const t = results[name];
      let data;
      if (t.type === 'int64' || t.type === 'uint64') {
        data = Array.from(t.data, Number);
      } else if (t.type === 'bool') {
        data = Array.from(t.data, Boolean);
      } else {
        data = Array.from(t.data);
      }
      return {
        name,
        datatype: ORT_TO_V2[t.type] || t.type.toUpperCase(),
        shape: Array.from(t.dims),
        data,
      };
    });
    sendJson(res, 200, response);
  }

  // /v2/models/{name}[/versions/{v}][/infer|/ready]
  const modelRoute = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/infer|\/ready)?\/?$/;

  async function handle(req, res) {
    const url = req.url.split('?')[0];
    if (url === '/v2/health/ready' || url === '/v2/health/live') {
      res.writeHead(200, { 'Content-Length': 0 });
      res.end();
      return;
    }
    const m = modelRoute.exec(url);
    if (!m) {
      throw new HttpError(404, `not found: ${req.method} ${url}`);
    }
    const [, name, version, action] = m;
    if (decodeURIComponent(name) !== modelName || (version !== undefined && version !== '1')) {
      throw new HttpError(400, `Request for unknown model: '${decodeURIComponent(name)}'` +
        (version !== undefined ? ` version ${version}` : '') + ' is not found');
    }
    if (action === '/infer') {
      if (req.method !== 'POST') {
        throw new HttpError(405, 'use POST for infer');
      }
      await infer(req, res);
    } else if (action === '/ready') {
      sendJson(res, 200, { name: modelName, ready: true });
    } else {
      if (req.method !== 'GET') {
        throw new HttpError(405, 'use GET for model metadata');
      }
      sendJson(res, 200, metadata);
    }
  }

  return http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (!res.headersSent) {
        sendJson(res, status, { error: err.message });
      } else {
        res.destroy(err);
      }
    });
  });
}

async function main() {
  const opts = parseCli(process.argv.slice(2));
  const sessionOptions = { executionProviders: ['cpu'] };
  if (opts.threads > 0) {
    sessionOptions.intraOpNumThreads = opts.threads;
  }
  const session = await ort.InferenceSession.create(opts.model, sessionOptions);
  const server = createServer(session, opts.name);
  server.listen(opts.port, opts.host, () => {
    const addr = server.address();
    const host = addr.family === 'IPv6' || addr.family === 6 ? `[${addr.address}]` : addr.address;
    process.stdout.write(`listening ${host}:${addr.port}\n`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`node-server: ${err.stack || err}\n`);
    process.exit(1);
  });
}

module.exports = { createServer };
