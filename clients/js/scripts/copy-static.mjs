// Copies the built modules to the Django project's static/realtime/, where the demo page and
// the browser tests load them: the Python side serves the package without needing Node.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const target = join(here, "..", "..", "..", "static", "realtime");

mkdirSync(target, { recursive: true });
for (const name of readdirSync(target)) {
  if (name.endsWith(".js")) rmSync(join(target, name));
}
for (const name of readdirSync(dist)) {
  if (name.endsWith(".js")) copyFileSync(join(dist, name), join(target, name));
}
