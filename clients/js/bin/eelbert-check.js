#!/usr/bin/env node
// eelbert-check ARTIFACT_OR_FOLDER ...: run every test vector of each artifact (.onnx, .tflite)
// through this client's front end and runtime, as an app would. Exit 0 when every vector is
// reproduced (tokens, inputs, outputs within 1e-4), 1 when one is not, 2 on bad input.

import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";

import { FrontEndError, loadArtifact } from "../src/node.js";

const TOLERANCE = 1e-4;

async function artifacts(paths) {
  const found = [];
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
    } catch {
      throw new FrontEndError(`${path} does not exist`);
    }
    if (info.isDirectory()) {
      const names = (await readdir(path)).filter((n) => /\.(onnx|tflite)$/.test(n)).sort();
      if (!names.length) throw new FrontEndError(`${path}: no .onnx or .tflite artifact in it`);
      found.push(...names.map((n) => join(path, n)));
    } else {
      found.push(path);
    }
  }
  return found;
}

async function readVectors(path) {
  let text;
  try {
    text = await readFile(path, "utf8");
  } catch {
    throw new FrontEndError(`${path} is missing (export the model again)`);
  }
  try {
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  } catch {
    throw new FrontEndError(`${path}: not a vectors file (JSON lines)`);
  }
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// The first rows of a padded input, as the nested lists a vector holds.
function rows(feed, length) {
  const width = feed.dims.length === 3 ? feed.dims[2] : 1;
  const out = [];
  for (let i = 0; i < length; i++) {
    const row = Array.from(feed.data.slice(i * width, (i + 1) * width));
    out.push(width === 1 && feed.dims.length === 2 ? row[0] : row);
  }
  return out;
}

async function check(path) {
  const artifact = await loadArtifact(path);
  const vectors = await readVectors(join(path, "..", artifact.sidecar.front_end.vectors));
  const failures = [];
  let worst = 0;
  for (const [i, v] of vectors.entries()) {
    const { tokens, feeds, length } = artifact.frontEnd.encode(v.text, v.text_b ?? null);
    if (!same(tokens, v.tokens)) {
      failures.push(`vector ${i + 1} (${JSON.stringify(v.text.slice(0, 40))}): tokens ` +
        `${JSON.stringify(tokens.slice(0, 8))} != ${JSON.stringify(v.tokens.slice(0, 8))}`);
      continue;
    }
    for (const [name, want] of Object.entries(v.inputs)) {
      if (JSON.stringify(rows(feeds[name], length)) !== JSON.stringify(want)) {
        failures.push(`vector ${i + 1}: input ${name} differs`);
      }
    }
    const got = await artifact.run(feeds);
    const diff = Math.max(...v.outputs.map((x, j) => Math.abs(x - got[j])));
    worst = Math.max(worst, diff);
    if (!(diff <= TOLERANCE) || got.length !== v.outputs.length) {
      failures.push(`vector ${i + 1}: outputs differ by ${diff.toExponential(2)}`);
    }
  }
  return { count: vectors.length, failures, worst };
}

async function main(args) {
  if (!args.length) throw new FrontEndError("usage: eelbert-check ARTIFACT_OR_FOLDER ...");
  let failed = false;
  for (const path of await artifacts(args)) {
    const { count, failures, worst } = await check(path);
    if (failures.length) {
      failed = true;
      console.log(`${path}: ${failures.length} of ${count} vectors not reproduced: ${failures[0]}`);
    } else {
      console.log(`${path}: ${count} vectors reproduced (outputs within ${worst.toExponential(2)})`);
    }
  }
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (e) => {
  const message = e instanceof FrontEndError ? e.message : `unexpected error: ${e?.message ?? e}`;
  console.error(`eelbert-check: error: ${message}`);
  process.exit(2);
});
