import type { BenchResults } from '../../bench/shape.ts';

/** A complete, well-formed results document; tests break one field at a time. */
export function validResults(): BenchResults {
  const step = { ratePps: 2000, sent: 6000, agent: 5990, raw: 6000, agentDrops: 10, rawDrops: 0, ratio: 0.9983, agentCpuPctPer10kpps: 4.2 };
  return {
    machine: { cpuModel: 'Test CPU @ 2.0GHz', cores: 2, memoryGb: 23.4, kernel: '6.8.0-test' },
    quick: true,
    startedAt: '2026-11-28T13:00:00.000Z',
    durationS: 120,
    switchLatencyMs: { n: 5, p50: 310.2, p90: 400, p99: 420.5, max: 420.5 },
    oldExitMs: { n: 5, p50: 1100, p90: 1500, p99: 1510, max: 1510 },
    floorMs: { watchEvent: 3.1, tcpdumpStart: 45.2 },
    fidelity: { ...step, steps: [step] },
    scale: {
      captures: 50,
      pods: 50,
      resolveAllMs: 2200,
      readyAllMs: 2300,
      writesPerCapture: 2.04,
      quietMinuteWrites: 0,
      quietWindowS: 10,
      controllerPeakRssMb: 120.5,
      controllerCpuS: 3.2,
      recreations: 10,
      resolveAfterLastCreateMs: 400,
      recreateMs: 150,
      recreate1000Ms: null,
    },
    agentWatchEventsPerForeignWrite: 0,
    statusWritesPerSessionMinute: 1.7,
    statusRateWindowS: 35,
    agent: {
      rssMb: { '0': 90, '5': 95, '10': 99 },
      cpuPct: { '0': 0.5, '5': 2, '10': 3.5 },
      tcpdumpRssMb: { '0': 0, '5': 40, '10': 80 },
      tcpdumpCount: { '0': 0, '5': 5, '10': 10 },
      windowS: 5,
    },
    errors: [],
  };
}
