// Reference output for tests/test_bpe.cpp from the npm package gpt-3-encoder (GPT-2's byte-level
// BPE in JavaScript): per test case one JSON line {"ids": [...], "pieces": [...]}, pieces being
// the byte lengths of the matches of the package's own pre-tokenisation regex. Never edits a file.
//   node encode.js PACKAGE_DIR cases FILE   cases split at lines "%%", then the whole file
//   node encode.js PACKAGE_DIR chunks FILE  FILE in chunks, each ending at the first newline at or
//                                           after 8192 bytes (encode() is quadratic in its output)
//   node encode.js - classes OUT            OUT: "unicode VERSION\n", then one byte per code point
//                                           0..0x10FFFF: 1 \p{L}, 2 \p{N}, 3 \s, 0 other
'use strict';
const fs = require('fs');
const path = require('path');

const [pkg, mode, file] = process.argv.slice(2);
if (!mode || !file) {
  console.error('usage: node encode.js PACKAGE_DIR cases|chunks FILE');
  console.error('       node encode.js - classes OUT');
  process.exit(2);
}

if (mode === 'classes') {
  const L = /\p{L}/u, N = /\p{N}/u, S = /\s/u;
  const cls = Buffer.alloc(0x110000);
  for (let cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are no characters of UTF-8 text
    const c = String.fromCodePoint(cp);
    cls[cp] = L.test(c) ? 1 : N.test(c) ? 2 : S.test(c) ? 3 : 0;
  }
  const head = Buffer.from(`unicode ${process.versions.unicode}\n`);
  fs.writeFileSync(file, Buffer.concat([head, cls]));
  process.exit(0);
}

const encoder = require(path.resolve(pkg, 'Encoder.js'));
// The package does not export its pattern: take it from its source, so this is the one it uses.
const src = fs.readFileSync(path.resolve(pkg, 'Encoder.js'), 'utf8');
const m = src.match(/const pat = \/(.*)\/([a-z]*)\n/);
if (!m) throw new Error('cannot find the pattern in Encoder.js');
const pat = new RegExp(m[1], m[2]);

const buf = fs.readFileSync(file);
let cases = [];
if (mode === 'cases') {
  const text = buf.toString('utf8');
  cases = text.split('\n%%\n');
  cases.push(text);
} else if (mode === 'chunks') {
  for (let start = 0; start < buf.length;) {
    let end = buf.indexOf(10, Math.min(start + 8192, buf.length));
    end = end < 0 ? buf.length : end + 1;
    cases.push(buf.subarray(start, end).toString('utf8'));
    start = end;
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}

const t0 = process.hrtime.bigint();
const ids = cases.map(c => encoder.encode(c));
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const out = [];
cases.forEach((c, i) => {
  const pieces = Array.from(c.matchAll(pat), x => Buffer.byteLength(x[0], 'utf8'));
  out.push(JSON.stringify({ids: ids[i], pieces}));
});
fs.writeSync(1, out.join('\n') + '\n');
const mb = cases.reduce((s, c) => s + Buffer.byteLength(c, 'utf8'), 0) / 1e6;
console.error(`[ figure ] gpt-3-encoder (node ${process.version}) encode: ` +
              `${(mb / seconds).toFixed(2)} MB/s on ${path.basename(file)} ` +
              `(${cases.length} ${mode}, ${mb.toFixed(2)} MB)`);
