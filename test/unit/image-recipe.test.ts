// The project's image has two recipes, the Dockerfile (docker build) and scripts/image (an
// OCI archive without a daemon), and the manifests in dist/ name it by DEFAULT_IMAGE. These
// must not drift apart: same packages, the same bundle, same entrypoint and user,
// and a tag that is the package's version.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_IMAGE } from '../../cdk8s/settings.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');
const dockerfile = read('Dockerfile');
const script = read('scripts/image');

/** The words of a bash array assignment in scripts/image: NAME=(a b c). */
function bashArray(name: string): string[] {
  const match = new RegExp(`^${name}=\\(([^)]*)\\)`, 'm').exec(script);
  if (!match) throw new Error(`scripts/image has no ${name}=(...)`);
  return match[1]!.split(/\s+/).filter(Boolean);
}

/** The words after `prefix` on the Dockerfile's line that has it, up to the line's end or `\`. */
function dockerWords(prefix: string): string[] {
  const line = dockerfile.split('\n').find((l) => l.includes(prefix));
  if (!line) throw new Error(`the Dockerfile has no line with ${prefix}`);
  return line.slice(line.indexOf(prefix) + prefix.length).replace(/\\$/, '').split(/\s+/).filter(Boolean);
}

describe('the image recipes', () => {
  it("tags DEFAULT_IMAGE with package.json's version", () => {
    const { version } = JSON.parse(read('package.json')) as { version: string };
    expect(DEFAULT_IMAGE.split(':').at(-1)).toBe(version);
  });

  it('installs the Dockerfile\'s Debian packages in scripts/image too (plus the libraries its Node needs)', () => {
    const docker = dockerWords('apt-get install -y --no-install-recommends');
    expect(bashArray('PACKAGES').filter((p) => p !== 'libstdc++6').sort()).toEqual(docker.sort());
  });

  it('ships the bundle npm run build makes and no node_modules, in both', () => {
    expect(JSON.parse(read('package.json')).scripts.build).toBe('scripts/build');
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    expect(dockerfile).toMatch(/^COPY --from=build \/src\/build \.\/build$/m);
    expect(script).toMatch(/^npm run --silent build >&2$/m);
    expect(script).toContain('cp -a build "$work.root/app/build"');
    for (const recipe of [dockerfile, script]) expect(recipe).not.toMatch(/^[^#]*node_modules\b[^#]*\.\/node_modules|npm ci --omit=dev/m);
  });

  it('runs the bundled CLI with the image\'s Node, as user 65532, from /app', () => {
    expect(dockerfile).toContain('ENTRYPOINT ["/usr/local/bin/node", "/app/build/cli/packet-capture.js"]');
    expect(script).toContain('--config.entrypoint /usr/local/bin/node --config.entrypoint /app/build/cli/packet-capture.js');
    expect(dockerfile).toMatch(/^USER 65532:65532$/m);
    expect(script).toContain('--config.user 65532:65532');
    expect(dockerfile).toMatch(/^WORKDIR \/app$/m);
    expect(script).toContain('--config.workingdir /app');
  });

  it('pins the Node of package.json in the Dockerfile', () => {
    const { dependencies } = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
    expect(dockerfile).toMatch(new RegExp(`^ARG NODE_IMAGE=node:${dependencies.node!.replaceAll('.', '\\.')}-bookworm-slim$`, 'm'));
  });
});
