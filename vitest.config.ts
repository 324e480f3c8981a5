import { defineConfig } from 'vitest/config';

// Four suites, one command: `npm test` runs them all. Integration and e2e need a real
// control plane (built once, cached) and root for network namespaces; outside CI a suite
// that cannot run prints why and skips, under CI=true it fails instead (test/support/require.ts).
// Both share ONE control plane per run (test/support/control-plane-setup.ts), started
// only when a file of either project runs; each test file works in its own namespace.
// The projects run one after another (groupOrder): integration tests restart the API server
// and compact etcd, and e2e tests share one bridge, so neither may overlap the other. The
// real-node suite starts its own control plane (with the node lifecycle controller) and node.
export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          sequence: { groupOrder: 1 },
          globalSetup: ['test/support/control-plane-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          sequence: { groupOrder: 2 },
          globalSetup: ['test/support/control-plane-setup.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
      {
        // A real kubelet + containerd node running dist/ (local/real-node.ts): after e2e,
        // whose simulated nodes it must never run next to unless their cgroup roots differ
        test: {
          name: 'real-node',
          include: ['test/real-node/**/*.test.ts'],
          sequence: { groupOrder: 3 },
          testTimeout: 300_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
