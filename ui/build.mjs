// Bundles the dashboard's browser code into operator/dagflow/ui/static (served by the dashboard
// itself: no CDN, clusters may be offline). `make ui-assets` runs it; the built files are committed so
// that `pip install` needs no Node.js, and build-stamp.json records the sources they were built from
// (tests/unit/test_ui_assets.py fails when the sources changed and the bundle was not rebuilt).
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = join(here, "..", "operator", "dagflow", "ui", "static");

// The files the bundle is made of, in a stable order: what the stamp's hash covers.
export function sources() {
  const src = readdirSync(join(here, "src")).map((name) => join("src", name));
  return ["build.mjs", "index.html", "package.json", "package-lock.json", ...src].sort();
}

function sourcesHash() {
  const hash = createHash("sha256");
  for (const name of sources()) {
    hash.update(name + "\0");
    hash.update(readFileSync(join(here, name)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

await esbuild.build({
  entryPoints: [join(here, "src", "main.js"), join(here, "src", "style.css")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "eof",
  outdir: out,
  entryNames: "app",
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
writeFileSync(
  join(out, "build-stamp.json"),
  JSON.stringify({ sources: sourcesHash(), files: sources() }, null, 2) + "\n",
);
console.log(`Built the dashboard into ${relative(process.cwd(), out)}`);
