#!/usr/bin/env node
// Regenerates src/gen/ from the repository's proto/ with ts-proto (on
// @grpc/grpc-js). protoc is the one of Python's grpcio-tools, pinned in the
// repository's pyproject.toml, so the output depends on pinned versions only
// and needs no download. `--out DIR` writes elsewhere (the staleness test
// compares such a fresh copy with the committed one).

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");
const PROTO_DIR = path.join(REPO_DIR, "proto");
const PLUGIN = path.join(PACKAGE_DIR, "node_modules", ".bin", "protoc-gen-ts_proto");

// ts-proto options (https://github.com/stephenh/ts-proto#supported-options).
const TS_PROTO_OPTIONS = [
  "outputServices=grpc-js", // service definitions and clients for @grpc/grpc-js
  "esModuleInterop=true",
  "importSuffix=.js", // ESM: relative imports name the emitted file
  "forceLong=bigint", // 64-bit integers without precision loss
  "oneof=unions-value", // a oneof is { $case, value }: exhaustive switches
  "outputJsonMethods=false", // the wire format only
  "useExactTypes=false",
  "useDate=false", // Timestamp messages: nanoseconds survive (src/time.ts converts to Date)
];

/** A Python that has grpcio-tools: SAYIIR_PYTHON, the repository's .venv, or python3. */
function findPython() {
  const candidates = [process.env.SAYIIR_PYTHON, path.join(REPO_DIR, ".venv", "bin", "python"), "python3"];
  for (const candidate of candidates.filter(Boolean)) {
    const probe = spawnSync(candidate, ["-c", "import grpc_tools.protoc"], { stdio: "ignore" });
    if (probe.status === 0) return candidate;
  }
  throw new Error(
    "no Python with grpcio-tools found (tried SAYIIR_PYTHON, ../../.venv/bin/python, python3): " +
      "run `python3 -m venv .venv && .venv/bin/pip install -e '.[test]'` at the repository root",
  );
}

const { values } = parseArgs({ options: { out: { type: "string" } } });
const outDir = path.resolve(values.out ?? path.join(PACKAGE_DIR, "src", "gen"));
if (!existsSync(PLUGIN)) throw new Error(`${PLUGIN} is missing: run npm ci first`);

const protos = readdirSync(path.join(PROTO_DIR, "sayiir", "v1"))
  .filter((name) => name.endsWith(".proto"))
  .sort()
  .map((name) => `sayiir/v1/${name}`);

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
const result = spawnSync(
  findPython(),
  [
    "-m",
    "grpc_tools.protoc",
    `--plugin=protoc-gen-ts_proto=${PLUGIN}`,
    `--ts_proto_out=${outDir}`,
    `--ts_proto_opt=${TS_PROTO_OPTIONS.join(",")}`,
    `-I${PROTO_DIR}`,
    ...protos,
  ],
  { cwd: PROTO_DIR, stdio: "inherit" },
);
if (result.status !== 0) process.exit(result.status ?? 1);
console.log(`generated ${protos.length} proto files into ${path.relative(process.cwd(), outDir) || "."}`);
