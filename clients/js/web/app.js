// Classify what a person types with an exported ONNX model, in the page: the front end from the
// export's own files (front-end.json, tokenizer.json, the sidecar) and onnxruntime-web.
// The model: ?model=URL of the .onnx file (its sidecar and front-end files beside it).

import * as ort from "../node_modules/onnxruntime-web/dist/ort.min.mjs";
import { FrontEnd, softmax } from "../src/front-end.js";

const $ = (id) => document.getElementById(id);

async function fetchJson(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${what} (HTTP ${response.status})`);
  return response.json();
}

async function load(model) {
  const base = new URL(".", new URL(model, location.href));
  const sidecar = await fetchJson(`${model}.json`, "the artifact's sidecar is missing");
  const fe = sidecar.front_end;
  const tables = await fetchJson(new URL(fe.tables, base), "front-end.json is missing");
  const tokenizer = fe.tokenizer ? await fetchJson(new URL(fe.tokenizer, base), "tokenizer.json is missing") : null;
  const frontEnd = new FrontEnd(sidecar, tables, tokenizer);
  ort.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;
  ort.env.wasm.numThreads = 1;
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  async function classify(text, textB = null) {
    const { tokens, feeds } = frontEnd.encode(text, textB);
    const tensors = Object.fromEntries(Object.entries(feeds).map(
      ([name, { data, dims }]) => [name, new ort.Tensor("int32", data, dims)]));
    const out = await session.run(tensors);
    const logits = Array.from(out[session.outputNames[0]].data);
    const probabilities = softmax(logits);
    const best = probabilities.indexOf(Math.max(...probabilities));
    return { label: sidecar.model.labels[best], labels: sidecar.model.labels, probabilities, logits, tokens };
  }
  return { sidecar, classify };
}

function show(result) {
  $("label").textContent = result.label;
  $("bars").replaceChildren(...result.labels.map((label, i) => {
    const row = document.createElement("div");
    row.className = "bar";
    const p = result.probabilities[i];
    row.innerHTML = `<span></span><div><div class="fill" style="width:${(100 * p).toFixed(1)}%"></div></div><span>${(100 * p).toFixed(1)}%</span>`;
    row.firstChild.textContent = label;
    return row;
  }));
  $("tokens").textContent = result.tokens.join(" ");
}

async function main() {
  const model = new URLSearchParams(location.search).get("model") ?? "model.onnx";
  try {
    const app = await load(model);
    window.eelbert = app;
    const text = $("text");
    const update = async () => show(await app.classify(text.value));
    text.addEventListener("input", update);
    await update();
    $("status").textContent = `${app.sidecar.artifact}: ${app.sidecar.model.config}, ` +
      `${app.sidecar.size.bytes.toLocaleString()} bytes, onnxruntime-web in this page`;
    document.body.dataset.ready = "true";
  } catch (e) {
    $("status").textContent = `Cannot load ${model}: ${e.message}`;
    $("status").className = "error";
    document.body.dataset.ready = "error";
  }
}

main();
