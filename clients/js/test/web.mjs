// node test/web.mjs PAGE_URL VECTORS_FILE SCREENSHOT [TOLERANCE]: open the page in headless
// Chromium, type a sentence as a person would, then classify every test vector in the page and
// compare its tokens, label and logits (within TOLERANCE, default 1e-4) with the vectors file.
// Exit 0 when all match, 1 otherwise.

import { readFile } from "node:fs/promises";
import { chromium } from "playwright-core";

const [url, vectorsFile, screenshot, tolerance = "1e-4"] = process.argv.slice(2);
const TOLERANCE = Number(tolerance);
const SENTENCE = "A gorgeous, witty, seductive movie.";
const vectors = (await readFile(vectorsFile, "utf8")).split("\n").filter((l) => l.trim()).map(JSON.parse);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
let failures = [];
let worst = 0;
try {
  const page = await browser.newPage({ viewport: { width: 800, height: 520 } });
  const logs = [];
  page.on("console", (m) => logs.push(m.text()));
  page.on("pageerror", (e) => logs.push(String(e)));
  await page.goto(url);
  await page.waitForSelector("body[data-ready]", { timeout: 60000 });
  if ((await page.getAttribute("body", "data-ready")) !== "true") {
    throw new Error(`${await page.textContent("#status")} ${logs.join(" ")}`);
  }
  await page.fill("#text", "");
  await page.type("#text", SENTENCE);
  await page.waitForFunction(() => document.getElementById("tokens").textContent.includes("seductive"));
  const shown = await page.textContent("#label");
  const typed = await page.evaluate((t) => window.eelbert.classify(t), SENTENCE);
  if (shown !== typed.label) failures.push(`page shows ${shown}, classify says ${typed.label}`);
  await page.screenshot({ path: screenshot });
  for (const [i, v] of vectors.entries()) {
    const got = await page.evaluate(([t, b]) => window.eelbert.classify(t, b), [v.text, v.text_b ?? null]);
    const diff = Math.max(...v.outputs.map((x, j) => Math.abs(x - got.logits[j])));
    worst = Math.max(worst, diff);
    if (JSON.stringify(got.tokens) !== JSON.stringify(v.tokens)) failures.push(`vector ${i + 1}: tokens differ`);
    else if (got.logits.indexOf(Math.max(...got.logits)) !== v.outputs.indexOf(Math.max(...v.outputs))) {
      failures.push(`vector ${i + 1}: label differs`);
    } else if (!(diff <= TOLERANCE)) failures.push(`vector ${i + 1}: logits differ by ${diff}`);
  }
  console.log(`${url}: page shows "${shown}"; ${vectors.length - failures.length} of ` +
    `${vectors.length} vectors reproduced in Chromium (onnxruntime-web; max |diff| ` +
    `${worst.toExponential(2)})`);
} catch (e) {
  failures = [e.message];
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`web: ${failures.length} failures: ${failures.slice(0, 3).join("; ")}`);
  process.exit(1);
}
