#!/usr/bin/env node
// Parse every file named on argv with binary-version-reader's HalModuleParser (the parser Particle's own
// tools use) and print one JSON line per file, in argv order:
//   {"file": PATH, "call": "HalModuleParser.parseFile", "fileInfo": {crc, prefixInfo, suffixInfo, assets?, security?}}
// or, when the parser throws, {"file": PATH, "call": ..., "error": MESSAGE}.
// With --constants first, the first line is {"constants": {...}}: the package's version and its ModuleInfo tables
// (FunctionType, Flags, ExtensionType, Platform), so a test compares names by the peer's own definitions.
// Buffers (an extension's raw bytes, a certificate) are printed as hex strings; the file's own bytes are left out.
// Used by tests/interop/test_binary_version_reader.py, once per batch of files (node starts in about 100 ms).
'use strict';

const { HalModuleParser, ModuleInfo } = require('binary-version-reader');
const { version } = require('binary-version-reader/package.json');

function plain(value) {
	if (Buffer.isBuffer(value)) {
		return value.toString('hex');
	}
	if (Array.isArray(value)) {
		return value.map(plain);
	}
	if (value && typeof value === 'object') {
		const out = {};
		for (const [key, inner] of Object.entries(value)) {
			out[key] = plain(inner);
		}
		return out;
	}
	return value;
}

async function main(args) {
	let files = args;
	if (files[0] === '--constants') {
		files = files.slice(1);
		const { FunctionType, Flags, ExtensionType, Platform } = ModuleInfo;
		const constants = { version, FunctionType, Flags, ExtensionType, Platform };
		process.stdout.write(JSON.stringify({ constants }) + '\n');
	}
	const parser = new HalModuleParser();
	for (const file of files) {
		const line = { file, call: 'HalModuleParser.parseFile' };
		try {
			const info = await parser.parseFile(file);
			const { fileBuffer, filename, ...rest } = info;
			line.fileInfo = plain(rest);
		} catch (error) {
			line.error = String(error && error.message ? error.message : error);
		}
		process.stdout.write(JSON.stringify(line) + '\n');
	}
}

main(process.argv.slice(2)).catch((error) => {
	process.stderr.write(String(error && error.stack ? error.stack : error) + '\n');
	process.exit(1);
});
