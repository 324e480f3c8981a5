// Starts a TypeScript entry point on the Node pinned in package.json (the `node` package),
// so `packet-capture` and `kubectl pcap` work from any shell, whatever node is first on PATH.
// tsx is loaded as an import hook in the same process (not its CLI wrapper, which SIGKILLs a
// child that is slow to acknowledge Ctrl-C, skipping its cleanup).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export function launch(entry) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  const node = existsSync(pinned) ? pinned : process.execPath;
  const tsx = pathToFileURL(join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
  const res = spawnSync(node, ['--import', tsx, join(root, entry), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (res.error) {
    console.error(`${entry}: ${res.error.message} (run \`npm ci\` in ${root})`);
    process.exit(1);
  }
  process.exit(res.status ?? (res.signal ? 128 : 1));
}
