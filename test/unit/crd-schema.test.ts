// The CRD's OpenAPI schema run by ajv: the schema half of admission, in milliseconds. CEL
// rules need a real API server (test/integration); here they are only checked to exist, to
// sit where the error must be reported, and to name that field in their message.

import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  DURATION_PATTERN,
  packetCaptureSchema,
  QUANTITY_PATTERN,
  type SchemaProps,
  type ValidationRule,
} from '../../crds/crd.ts';
import { API_VERSION, KIND } from '../../crds/packetcapture.ts';
import { parseDuration, parseQuantity } from '../../crds/units.ts';
import { INVALID_SPECS, VALID_SPECS, type RawSpec } from '../fixtures/specs.ts';

const EXAMPLES_DIR = fileURLToPath(new URL('../../examples/', import.meta.url));

/**
 * The CRD schema as plain JSON Schema: Kubernetes extensions dropped, and unknown fields
 * rejected as `kubectl apply` (fieldValidation=Strict) rejects them instead of pruning.
 */
function toJsonSchema(node: SchemaProps): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith('x-kubernetes-')) continue;
    if (key === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, SchemaProps>).map(([name, child]) => [name, toJsonSchema(child)]),
      );
      out.additionalProperties = false;
    } else if (key === 'items' || key === 'additionalProperties') {
      out[key] = toJsonSchema(value as SchemaProps);
    } else {
      out[key] = value;
    }
  }
  return out;
}

const ajv = new Ajv({
  allErrors: true,
  strict: true,
  // ranges only: a fraction is already a type error, reported once as the API server does
  formats: {
    int32: { type: 'number', validate: (n: number) => n >= -(2 ** 31) && n < 2 ** 31 },
    int64: { type: 'number', validate: (n: number) => Math.abs(n) <= Number.MAX_SAFE_INTEGER },
    'date-time': (s: string) => !Number.isNaN(Date.parse(s)) && /^\d{4}-\d\d-\d\dT/.test(s),
  },
});
const validate = ajv.compile(toJsonSchema(packetCaptureSchema));

/** An ajv error as the field path the API server would name: spec.a.b[0].c */
function fieldOf(error: ErrorObject): string {
  const segments = error.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
  if (error.keyword === 'required') segments.push((error.params as { missingProperty: string }).missingProperty);
  return segments.reduce((path, s) => (/^\d+$/.test(s) ? `${path}[${s}]` : path ? `${path}.${s}` : s), '');
}

const schemaErrors = (object: unknown): string[] =>
  validate(object) ? [] : (validate.errors ?? []).map((e) => `${fieldOf(e)}: ${e.message}`);

const capture = (spec: RawSpec) => ({ apiVersion: API_VERSION, kind: KIND, metadata: { name: 'test' }, spec });

/** Every CEL rule with the field the API server reports its error on (list items as []). */
function celRules(node: SchemaProps, path: string): (ValidationRule & { field: string })[] {
  const own = (node['x-kubernetes-validations'] ?? []).map((r) => ({ ...r, field: path + (r.fieldPath ?? '') }));
  const children = [
    ...Object.entries(node.properties ?? {}).map(([name, child]) => celRules(child, path ? `${path}.${name}` : name)),
    node.items ? celRules(node.items, `${path}[]`) : [],
    node.additionalProperties ? celRules(node.additionalProperties, `${path}[]`) : [],
  ];
  return [...own, ...children.flat()];
}

const RULES = celRules(packetCaptureSchema, '');
const withoutIndices = (field: string) => field.replace(/\[\d+\]/g, '[]');

describe('PacketCapture schema', () => {
  it.each(VALID_SPECS.map((v) => [v.name, v.spec] as const))('accepts %s', (_name, spec) => {
    expect(schemaErrors(capture(spec))).toEqual([]);
  });

  const bySchema = INVALID_SPECS.filter((s) => s.by === 'schema');
  it.each(bySchema.map((s) => [s.name, s] as const))('rejects %s, naming exactly its field', (_name, { spec, field }) => {
    const errors = schemaErrors(capture(spec));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^${field.replace(/[.[\]]/g, '\\$&')}: `));
  });

  it('rejects a field the API does not have, as strict field validation does', () => {
    expect(schemaErrors(capture({ target: { podName: 'web-0' }, filter: { prot: 'TCP' } }))).toEqual([
      'spec.filter: must NOT have additional properties',
    ]);
  });

  it('has at least 25 invalid specs for the API server to reject', () => {
    expect(INVALID_SPECS.length).toBeGreaterThanOrEqual(25);
    expect(new Set(INVALID_SPECS.map((s) => s.name)).size).toBe(INVALID_SPECS.length);
  });
});

describe('PacketCapture CEL rules', () => {
  it('every rule message starts with the field it is reported on', () => {
    expect(RULES.length).toBeGreaterThan(0);
    for (const rule of RULES) expect(rule.message, rule.rule).toMatch(new RegExp(`^${rule.field.replace(/[.[\]]/g, '\\$&')}: `));
  });

  const byCel = INVALID_SPECS.filter((s) => s.by === 'cel');
  it.each(byCel.map((s) => [s.name, s] as const))(
    '%s passes the schema and meets a rule reported on its field',
    (_name, { spec, field }) => {
      expect(schemaErrors(capture(spec))).toEqual([]);
      expect(RULES.map((r) => r.field)).toContain(withoutIndices(field));
    },
  );

  it('every rule is exercised by at least one invalid spec', () => {
    const exercised = new Set(byCel.map((s) => withoutIndices(s.field)));
    expect(RULES.filter((r) => !exercised.has(r.field)).map((r) => r.rule)).toEqual([]);
  });
});

describe('limits.duration and limits.fileSize patterns', () => {
  const parses = (parse: (s: string) => number, s: string) => {
    try {
      parse(s);
      return true;
    } catch {
      return false;
    }
  };
  const durations = ['0', '30s', '10m', '1h30m', '500ms', '1.5s', '.5h', '10us', '10µs', '2h45m0.5s', '', '10', '1d', '-5m', '5 m', 'm', '1.s'];
  const quantities = ['10Mi', '1G', '500000', '1.5Mi', '.5k', '1e3', '1E', '10MB', '10mi', '', 'Mi', '-1', '1 Mi', '1Ki1'];

  it.each(durations)('admits duration "%s" exactly when parseDuration accepts it', (text) => {
    expect(new RegExp(DURATION_PATTERN, 'u').test(text)).toBe(parses(parseDuration, text));
  });

  it.each(quantities)('admits fileSize "%s" exactly when parseQuantity accepts it', (text) => {
    expect(new RegExp(QUANTITY_PATTERN, 'u').test(text)).toBe(parses(parseQuantity, text));
  });
});

async function yamlFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.yaml')).map((e) => join(e.parentPath, e.name));
}

describe('examples/', () => {
  it('every PacketCapture in examples/ passes the schema', async () => {
    const captures: { file: string; object: unknown }[] = [];
    for (const file of await yamlFiles(EXAMPLES_DIR)) {
      for (const doc of parseAllDocuments(await readFile(file, 'utf8'))) {
        const object = doc.toJS() as { kind?: string } | null;
        if (object?.kind === KIND) captures.push({ file, object });
      }
    }
    expect(captures.length).toBeGreaterThanOrEqual(2);
    for (const { file, object } of captures) expect(schemaErrors(object), file).toEqual([]);
  });
});
