// Proves that the storefront the binary embeds (web/dist, checked in) is a build of web/src:
// builds into a temporary directory and compares every file byte for byte.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const web = new URL("..", import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), "attune-web-"));

function files(dir) {
  const list = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else list.push(relative(dir, p));
    }
  };
  walk(dir);
  return list.sort();
}

try {
  execFileSync("npx", ["vite", "build", "--outDir", out, "--emptyOutDir", "--logLevel", "warn"], {
    cwd: web,
    stdio: "inherit",
  });
  const built = files(out);
  const committed = files(join(web, "dist"));
  const problems = [];
  for (const f of new Set([...built, ...committed])) {
    if (!built.includes(f)) problems.push(`web/dist/${f} is not produced by the build`);
    else if (!committed.includes(f)) problems.push(`web/dist/${f} is missing`);
    else if (!readFileSync(join(out, f)).equals(readFileSync(join(web, "dist", f)))) {
      problems.push(`web/dist/${f} differs from the build`);
    }
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    console.error("web/dist is stale: run `npm --prefix web run build` and commit web/dist.");
    process.exit(1);
  }
  console.log(`web/dist matches a fresh build of web/src (${built.length} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
