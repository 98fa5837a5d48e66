// `npm pack` makes a package with its types, and the README's TypeScript
// example, pasted into a new project that installs that package, compiles
// and runs against a real service.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { taskId } from "../src/index.js";
import { freshService, PACKAGE_DIR, REPO_DIR, type Service } from "./support/service.js";

const npm = process.platform === "win32" ? "npm.cmd" : "npm";
let workdir: string;
let tarball: string;

before(() => {
  workdir = mkdtempSync(path.join(tmpdir(), "sayiir-ts-pack-"));
  const packed = JSON.parse(
    execFileSync(npm, ["pack", "--json", "--pack-destination", workdir], { cwd: PACKAGE_DIR, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
  ) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(workdir, packed[0].filename);
});
after(() => {
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

test("the tarball ships ESM JavaScript with its type declarations, and no sources or tests", () => {
  const listed = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n");
  const files = listed.map((file) => file.replace(/^package\//, ""));
  for (const file of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/client.js", "dist/client.d.ts", "dist/gen/sayiir/v1/snapshot.d.ts"]) {
    assert.ok(files.includes(file), `${file} in ${files.join(", ")}`);
  }
  for (const js of files.filter((file) => file.endsWith(".js"))) {
    assert.ok(files.includes(js.replace(/\.js$/, ".d.ts")), `types of ${js}`);
  }
  assert.deepEqual(files.filter((file) => file.startsWith("src/") || file.startsWith("test/") || file.includes("node_modules")), []);
  const manifest = JSON.parse(readFileSync(path.join(PACKAGE_DIR, "package.json"), "utf8")) as { type: string; exports: { ".": { types: string } } };
  assert.equal(manifest.type, "module");
  assert.equal(manifest.exports["."].types, "./dist/index.d.ts");
});

let service: Service | undefined;
after(async () => {
  await service?.stop();
});

/** The ```ts block of the README's "Other languages" section. */
function readmeExample(): string {
  const readme = readFileSync(path.join(REPO_DIR, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Other languages"));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(match, "a ```ts block in the README's Other languages section");
  return match[1];
}

test("the README's five-line example works as pasted", async () => {
  const example = readmeExample();
  assert.equal(example.trim().split("\n").length, 5, example);
  const project = path.join(workdir, "project");
  execFileSync("mkdir", ["-p", project]);
  writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "readme-example", private: true }));
  // The README's commands: install the packed tarball, compile, run.
  execFileSync(npm, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", "typescript@5", "@types/node@20", tarball], {
    cwd: project,
    stdio: "pipe",
  });
  writeFileSync(path.join(project, "example.mts"), example);
  execFileSync(npm, ["exec", "--offline", "--", "tsc", "example.mts", "--module", "nodenext", "--target", "es2022"], { cwd: project, stdio: "pipe" });
  service = await freshService();
  const output = execFileSync(process.execPath, ["example.mjs"], {
    cwd: project,
    encoding: "utf8",
    env: { ...process.env, SAYIIR_TARGET: service.target },
    timeout: 30_000,
  });
  assert.match(output, /kind: 'InProgress'/);
  assert.ok(output.includes(taskId("charge-card")), output);
});
