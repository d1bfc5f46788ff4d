#!/usr/bin/env node
// eelbert-tokens ARTIFACT < texts.jsonl: each line's tokens by this client's front end, as
// JSON lines ({"text": ..., "text_b": ...} in, a list of tokens out). For comparing front ends.

import { createInterface } from "node:readline";

import { FrontEndError, loadFrontEnd } from "../src/node.js";

async function main([path]) {
  if (!path) throw new FrontEndError("usage: eelbert-tokens ARTIFACT < texts.jsonl");
  const { frontEnd } = await loadFrontEnd(path);
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const { text, text_b: textB } = JSON.parse(line);
    process.stdout.write(JSON.stringify(frontEnd.tokens(text, textB ?? null).tokens) + "\n");
  }
}

main(process.argv.slice(2)).catch((e) => {
  const message = e instanceof FrontEndError ? e.message : `unexpected error: ${e?.message ?? e}`;
  console.error(`eelbert-tokens: error: ${message}`);
  process.exit(2);
});
