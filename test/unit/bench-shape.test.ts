import { describe, expect, it } from 'vitest';
import { validateResults } from '../../bench/shape.ts';
import { validResults } from './bench-fixtures.ts';

type Mutable = Record<string, unknown>;

/** A valid document with `edit` applied to a deep copy. */
const broken = (edit: (r: Mutable) => void): unknown => {
  const copy = structuredClone(validResults()) as unknown as Mutable;
  edit(copy);
  return copy;
};
const at = (r: Mutable, path: string): Mutable => path.split('.').reduce((o, k) => o[k] as Mutable, r);

describe('bench results validator', () => {
  it('accepts a complete document, and extra fields', () => {
    expect(validateResults(validResults())).toEqual([]);
    expect(validateResults({ ...validResults(), extra: { anything: 1 } })).toEqual([]);
  });

  it('accepts null numbers for a phase that could not measure', () => {
    const r = broken((x) => {
      x.switchLatencyMs = { n: 0, p50: null, p90: null, p99: null, max: null };
      at(x, 'scale').resolveAllMs = null;
      at(x, 'agent.rssMb')['5'] = null;
    });
    expect(validateResults(r)).toEqual([]);
  });

  it.each([
    ['not an object', () => 42, '$: expected an object'],
    ['machine missing', () => broken((x) => delete x.machine), '$.machine: missing'],
    ['cores zero', () => broken((x) => (at(x, 'machine').cores = 0)), '$.machine.cores: expected >= 1'],
    ['quick as a string', () => broken((x) => (x.quick = 'yes')), '$.quick: expected a boolean'],
    ['a percentile as a string', () => broken((x) => (at(x, 'switchLatencyMs').p90 = '400')), '$.switchLatencyMs.p90: expected a number or null'],
    ['n not an integer', () => broken((x) => (at(x, 'oldExitMs').n = 2.5)), '$.oldExitMs.n: expected an integer'],
    ['percentiles out of order', () => broken((x) => (at(x, 'switchLatencyMs').p50 = 999)), 'not ordered'],
    ['percentiles without samples', () => broken((x) => (at(x, 'switchLatencyMs').n = 0)), 'must be null without samples'],
    ['samples without percentiles', () => broken((x) => (x.oldExitMs = { n: 3, p50: null, p90: null, p99: null, max: null })), 'percentiles missing'],
    ['negative latency', () => broken((x) => (at(x, 'floorMs').watchEvent = -1)), '$.floorMs.watchEvent: expected >= 0'],
    ['NaN written as a number', () => broken((x) => (at(x, 'floorMs').tcpdumpStart = Number.NaN)), '$.floorMs.tcpdumpStart: expected a number'],
    ['fidelity without steps', () => broken((x) => delete at(x, 'fidelity').steps), '$.fidelity.steps: missing'],
    ['a step without raw', () => broken((x) => delete (at(x, 'fidelity').steps as Mutable[])[0]!.raw), '$.fidelity.steps[0].raw: missing'],
    ['scale writes missing', () => broken((x) => delete at(x, 'scale').writesPerCapture), '$.scale.writesPerCapture: missing'],
    ['scale recreate1000Ms missing', () => broken((x) => delete at(x, 'scale').recreate1000Ms), '$.scale.recreate1000Ms: missing'],
    ['scale resolve after the last create as a string', () => broken((x) => (at(x, 'scale').resolveAfterLastCreateMs = '3')), '$.scale.resolveAfterLastCreateMs: expected a number or null'],
    ['agent keyed by words', () => broken((x) => (at(x, 'agent').rssMb = { ten: 1 })), 'is not a session count'],
    ['agent with no keys', () => broken((x) => (at(x, 'agent').cpuPct = {})), '$.agent.cpuPct: expected an object keyed by session count'],
    ['errors not strings', () => broken((x) => (x.errors = [1])), '$.errors[0]: expected a non-empty string'],
  ])('rejects %s', (_name, make, message) => {
    const problems = validateResults(make());
    expect(problems.join('\n')).toContain(message);
  });
});
