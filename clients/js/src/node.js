// Load an eelbert-export artifact in Node as an app would: the sidecar, the front-end files
// beside it and the runtime (onnxruntime-node for .onnx, LiteRT.js for .tflite).

import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import vm from "node:vm";

import { checkSidecar, FrontEnd, FrontEndError, softmax } from "./front-end.js";

export { FrontEnd, FrontEndError, softmax };

async function readText(path, what) {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if (e.code === "ENOENT") throw new FrontEndError(`${path} is missing: ${what}`);
    throw new FrontEndError(`cannot read ${path}: ${e.message}`);
  }
}

async function readJson(path, what) {
  const text = await readText(path, what);
  try {
    return { text, data: JSON.parse(text) };
  } catch {
    throw new FrontEndError(`${path}: not valid JSON`);
  }
}

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

// The front end of the artifact at `path`, from the files beside it (checked against the
// sidecar's digests).
export async function loadFrontEnd(path) {
  const folder = dirname(path);
  const { data: sidecar } = await readJson(`${path}.json`, "the artifact's sidecar");
  checkSidecar(sidecar, `${path}.json`);
  const fe = sidecar.front_end;
  const tables = await readJson(join(folder, fe.tables), "the front-end tables ship beside the artifact");
  if (sha256(tables.text) !== fe.tables_sha256) {
    throw new FrontEndError(`${join(folder, fe.tables)} is not the one ${basename(path)} was exported with`);
  }
  let tokenizer = null;
  if (fe.tokenizer) {
    const file = join(folder, fe.tokenizer);
    const read = await readJson(file, "the tokenizer ships beside the artifact");
    if (sha256(read.text) !== fe.tokenizer_sha256) {
      throw new FrontEndError(`${file} is not the tokenizer ${basename(path)} was exported with`);
    }
    tokenizer = read.data;
  }
  return { sidecar, frontEnd: new FrontEnd(sidecar, tables.data, tokenizer) };
}

async function onnxRunner(path, bytes) {
  const ort = await import("onnxruntime-node");
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  } catch (e) {
    throw new FrontEndError(`${path}: onnxruntime cannot load it (${e.message.split("\n")[0]})`);
  }
  return async (feeds) => {
    const tensors = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      tensors[name] = new ort.Tensor("int32", data, dims);
    }
    const out = await session.run(tensors);
    return Array.from(out[session.outputNames[0]].data);
  };
}

// LiteRT.js is built for browsers and workers: in Node its loader needs `importScripts` (a
// script run in the global scope) and the CommonJS names its Emscripten glue expects. Its
// Wasm logs are silenced: Emscripten binds the console it finds at load.
let liteRt = null;

async function loadLiteRt() {
  if (liteRt) return liteRt;
  const require = createRequire(import.meta.url);
  const wasm = join(dirname(require.resolve("@litertjs/core/package.json")), "wasm");
  Object.assign(globalThis, {
    self: globalThis, require, __dirname: wasm,
    importScripts: (url) => vm.runInThisContext(readFileSync(fileURLToPath(url), "utf8")),
  });
  const litert = await import("@litertjs/core");
  const saved = { log: console.log, error: console.error, warn: console.warn };
  Object.assign(console, { log() {}, error() {}, warn() {} });
  try {
    await litert.loadLiteRt(pathToFileURL(wasm).href + "/");
  } finally {
    Object.assign(console, saved);
  }
  liteRt = litert;
  return litert;
}

async function tfliteRunner(path, bytes) {
  const litert = await loadLiteRt();
  let model;
  try {
    model = await litert.loadAndCompile(bytes, { accelerator: "wasm" });
  } catch (e) {
    throw new FrontEndError(`${path}: LiteRT cannot load it (${String(e.message).split("\n")[0]})`);
  }
  const names = model.getInputDetails().map((d) => d.name);
  return async (feeds) => {
    const inputs = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      inputs[names.find((n) => n.includes(name)) ?? name] = new litert.Tensor(data, dims);
    }
    const results = await model.run(inputs);
    const first = Array.isArray(results) ? results[0] : Object.values(results)[0];
    const values = Array.from(first.toTypedArray());
    for (const t of Object.values(inputs)) t.delete();
    for (const t of Array.isArray(results) ? results : Object.values(results)) t.delete();
    return values;
  };
}

// An artifact ready to classify: {sidecar, frontEnd, labels, run(feeds), classify(text, textB)}.
export async function loadArtifact(path) {
  const { sidecar, frontEnd } = await loadFrontEnd(path);
  const runners = { onnx: onnxRunner, tflite: tfliteRunner };
  const make = runners[sidecar.format];
  if (!make) {
    throw new FrontEndError(`${path}: a ${sidecar.format} artifact runs in its own runtime ` +
      "(this client runs onnx and tflite)");
  }
  let bytes;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new FrontEndError(`cannot read ${path}: ${e.message}`);
  }
  if (createHash("sha256").update(bytes).digest("hex") !== sidecar.size.sha256) {
    throw new FrontEndError(`${path}.json is not the sidecar of ${basename(path)} ` +
      "(it records another file's sha256)");
  }
  const run = await make(path, bytes);
  const labels = sidecar.model.labels;
  return {
    sidecar, frontEnd, labels, run,
    async classify(text, textB = null) {
      const { tokens, feeds } = frontEnd.encode(text, textB);
      const logits = await run(feeds);
      const probabilities = softmax(logits);
      const best = probabilities.indexOf(Math.max(...probabilities));
      return { label: labels[best], probabilities, logits, tokens };
    },
  };
}
