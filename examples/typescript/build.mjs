// Builds the example: @extjob/worker compiled into node_modules/ (where npm
// would put the published package), then transcode.ts into dist/. It leaves
// wrappers/typescript/dist alone, which that package's tests may be running.
// Run: node build.mjs (needs `npm ci` in wrappers/typescript, done if missing).

import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const wrapper = join(here, "..", "..", "wrappers", "typescript");
const tsc = join(wrapper, "node_modules", ".bin", "tsc");
const run = (command, args, cwd) => execFileSync(command, args, { cwd, stdio: "inherit" });

if (!existsSync(tsc)) run("npm", ["ci", "--no-audit", "--no-fund"], wrapper);
const installed = join(here, "node_modules", "@extjob", "worker");
rmSync(installed, { recursive: true, force: true });
mkdirSync(installed, { recursive: true });
copyFileSync(join(wrapper, "package.json"), join(installed, "package.json"));
run(tsc, ["-p", join(wrapper, "tsconfig.json"), "--outDir", join(installed, "dist")], here);
run(tsc, ["-p", "tsconfig.json"], here);
