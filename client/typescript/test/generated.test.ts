// The committed src/gen/ is what `npm run generate` makes from proto/ now.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { PACKAGE_DIR, python } from "./support/service.js";

function files(root: string): string[] {
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)))
    .sort();
}

test("src/gen is fresh (run `npm run generate` after editing proto/)", () => {
  const fresh = mkdtempSync(path.join(tmpdir(), "sayiir-ts-gen-"));
  try {
    execFileSync(process.execPath, [path.join(PACKAGE_DIR, "scripts", "generate.mjs"), "--out", fresh], {
      env: { ...process.env, SAYIIR_PYTHON: python() },
      stdio: "pipe",
    });
    const committed = path.join(PACKAGE_DIR, "src", "gen");
    assert.deepEqual(files(committed), files(fresh), "the same files");
    for (const file of files(fresh)) {
      assert.equal(readFileSync(path.join(committed, file), "utf8"), readFileSync(path.join(fresh, file), "utf8"), `${file} is stale`);
    }
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
});
