// Starts a TypeScript entry point on the Node pinned in package.json (the `node` package),
// so `packet-capture` and `kubectl pcap` work from any shell, whatever node is first on PATH.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function launch(entry) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  const node = existsSync(pinned) ? pinned : process.execPath;
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const res = spawnSync(node, [tsx, join(root, entry), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (res.error) {
    console.error(`${entry}: ${res.error.message} (run \`npm ci\` in ${root})`);
    process.exit(1);
  }
  process.exit(res.status ?? (res.signal ? 128 : 1));
}
