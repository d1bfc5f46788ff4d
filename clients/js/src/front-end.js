// The text front end of an eelbert-export artifact, from the files the export writes beside it:
// front-end.json (the BERT normalizer and pre-tokenizer as code-point tables, read off the
// Rust tokenizer the exporter runs), tokenizer.json (the WordPiece vocabulary) and the sidecar
// (special tokens, lengths, input names and shapes). Runs in Node and in browsers; no
// dependencies. The rules in words: docs/front-end.md.

export const SIDECAR_VERSION = 4;
export const TABLES_VERSION = 1;

export class FrontEndError extends Error {}

function inRanges(ranges, code) {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (code < ranges[mid][0]) hi = mid - 1;
    else if (code > ranges[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

// Hugging Face's longest_first lengths for a pair (the shorter side whole when it fits).
export function truncated(first, second, budget) {
  let [short, long] = first <= second ? [first, second] : [second, first];
  long = short > budget ? short : Math.max(short, budget - short);
  if (short + long > budget) {
    short = Math.floor(budget / 2);
    long = short + (budget % 2);
  }
  return first > second ? [long, short] : [short, long];
}

export function checkSidecar(sidecar, where = "sidecar") {
  const version = sidecar?.sidecar_version;
  if (!Number.isInteger(version)) {
    throw new FrontEndError(`${where}: no sidecar_version (not an eelbert-export sidecar?)`);
  }
  if (version > SIDECAR_VERSION) {
    throw new FrontEndError(`${where}: sidecar version ${version} is newer than this client ` +
      `reads (${SIDECAR_VERSION}); upgrade eelbert-client`);
  }
  if (version < SIDECAR_VERSION) {
    throw new FrontEndError(`${where}: sidecar version ${version} was written by an older ` +
      "eelbert-export (export the model again)");
  }
}

export class FrontEnd {
  // tables: parsed front-end.json; tokenizer: parsed tokenizer.json or null (words mode).
  constructor(sidecar, tables, tokenizer) {
    checkSidecar(sidecar);
    if (tables?.tables_version !== TABLES_VERSION) {
      throw new FrontEndError(`front-end tables version ${tables?.tables_version} is not ` +
        `${TABLES_VERSION}`);
    }
    const text = sidecar.text;
    if (text.mode === "wordpiece" && !tokenizer) {
      throw new FrontEndError("a WordPiece model needs its tokenizer.json");
    }
    this.tables = tables;
    this.map = new Map(Object.entries(tables.map).map(([k, v]) => [Number(k), v]));
    this.vocab = tokenizer ? new Map(Object.entries(tokenizer.model.vocab)) : null;
    [this.cls, this.sep, this.unk] = sidecar.front_end.special_tokens;
    this.maxWordChars = sidecar.front_end.max_word_chars;
    this.maxLength = text.max_length;
    this.maxChars = sidecar.max_chars;
    this.inputs = sidecar.inputs;
    this.pairs = sidecar.inputs.some((i) => i.name === "token_type_ids");
  }

  normalize(text) {
    let out = "";
    for (const char of text) {
      const code = char.codePointAt(0);
      if (inRanges(this.tables.remove, code)) continue;
      if (inRanges(this.tables.isolate, code)) out += ` ${char} `;
      else out += this.map.get(code) ?? char;
    }
    return out;
  }

  words(normalized) {
    const words = [];
    let word = "";
    for (const char of normalized) {
      const code = char.codePointAt(0);
      const space = inRanges(this.tables.whitespace, code);
      const punct = !space && inRanges(this.tables.punctuation, code);
      if (space || punct) {
        if (word) words.push(word);
        word = "";
        if (punct) words.push(char);
      } else {
        word += char;
      }
    }
    if (word) words.push(word);
    return words;
  }

  wordpiece(word) {
    const chars = Array.from(word);
    if (chars.length > this.maxWordChars) return [this.unk];
    const pieces = [];
    for (let start = 0; start < chars.length;) {
      let end = chars.length;
      let piece = null;
      for (; end > start; end--) {
        const candidate = (start > 0 ? "##" : "") + chars.slice(start, end).join("");
        if (this.vocab.has(candidate)) {
          piece = candidate;
          break;
        }
      }
      if (piece === null) return [this.unk];
      pieces.push(piece);
      start = end;
    }
    return pieces;
  }

  tokenize(text) {
    const words = this.words(this.normalize(text));
    return this.vocab ? words.flatMap((w) => this.wordpiece(w)) : words;
  }

  // The tokens of a text (and its pair, for pair models): [CLS] a [SEP] (b [SEP]), truncated.
  tokens(text, textB = null) {
    if (textB !== null && !this.pairs) {
      throw new FrontEndError("this model takes one text: text_b given");
    }
    let a = this.tokenize(text);
    if (!this.pairs) {
      a = a.slice(0, this.maxLength - 2);
      return { tokens: [this.cls, ...a, this.sep], segments: null };
    }
    let b = this.tokenize(textB ?? "");
    const [keepA, keepB] = truncated(a.length, b.length, this.maxLength - 3);
    a = a.slice(0, keepA);
    b = b.slice(0, keepB);
    const tokens = [this.cls, ...a, this.sep, ...b, this.sep];
    return { tokens, segments: tokens.map((_, i) => (i < a.length + 2 ? 0 : 1)) };
  }

  // The artifact's inputs for one text: {name: {data: Int32Array, dims}}, padded to the
  // artifact's fixed sequence length where it has one.
  encode(text, textB = null) {
    const { tokens, segments } = this.tokens(text, textB);
    const fixed = this.inputs[0].shape[1];
    const seq = Number.isInteger(fixed) ? fixed : tokens.length;
    if (tokens.length > seq) {
      throw new FrontEndError(`${tokens.length} tokens: the artifact takes at most ${seq}`);
    }
    const feeds = {};
    for (const input of this.inputs) {
      const width = input.name === "token_codes" ? this.maxChars : 1;
      const data = new Int32Array(seq * width);
      tokens.forEach((token, i) => {
        if (input.name === "token_codes") {
          Array.from(token).slice(0, width).forEach((c, j) => {
            data[i * width + j] = c.codePointAt(0);
          });
        } else if (input.name === "input_ids") {
          data[i] = this.vocab.get(token) ?? this.vocab.get(this.unk);
        } else if (input.name === "attention_mask") {
          data[i] = 1;
        } else if (input.name === "token_type_ids") {
          data[i] = segments[i];
        }
      });
      feeds[input.name] = { data, dims: input.name === "token_codes" ? [1, seq, width] : [1, seq] };
    }
    return { tokens, feeds, length: tokens.length };
  }
}

export function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - top));
  const sum = exps.reduce((s, x) => s + x, 0);
  return exps.map((x) => x / sum);
}
