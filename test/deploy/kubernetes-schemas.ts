// Kubernetes JSON schemas for kubeconform, made offline from the API's OpenAPI (v2) document:
// one standalone, strict schema per kind, named as kubeconform looks them up
// (`deployment-apps-v1.json`), plus the Prometheus Operator kinds the chart renders.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

type Schema = Record<string, unknown>;
interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

const REF_PREFIX = '#/definitions/';
/** Formats written as strings or numbers in manifests, where the document says string only. */
const STRING_OR: Record<string, string> = { 'int-or-string': 'integer', quantity: 'number' };

function fileName({ group, version, kind }: GroupVersionKind): string {
  const groupPart = group === '' ? '' : `-${group.split('.')[0]}`;
  return `${kind}${groupPart}-${version}.json`.toLowerCase();
}

/** `schema` with every $ref replaced by its definition, objects closed to unknown fields. */
function expand(schema: unknown, definitions: Record<string, Schema>, seen: string[]): unknown {
  if (Array.isArray(schema)) return schema.map((item) => expand(item, definitions, seen));
  if (typeof schema !== 'object' || schema === null) return schema;
  const node = schema as Schema;
  if (typeof node.$ref === 'string') {
    const name = node.$ref.slice(REF_PREFIX.length);
    if (seen.includes(name)) return {};
    return expand(definitions[name], definitions, [...seen, name]);
  }
  const alternative = typeof node.format === 'string' ? STRING_OR[node.format] : undefined;
  if (alternative !== undefined) return { oneOf: [{ type: 'string' }, { type: alternative }] };
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = key === 'description' ? value : expand(value, definitions, seen);
  }
  if (out.properties !== undefined && out.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  return out;
}

const labels = { type: 'object', additionalProperties: { type: 'string' } };
const metadata = {
  type: 'object',
  required: ['name'],
  properties: {
    name: { type: 'string' },
    namespace: { type: 'string' },
    labels,
    annotations: labels,
  },
  additionalProperties: false,
};
const closed = (properties: Schema, required: string[] = []): Schema => ({
  type: 'object',
  ...(required.length > 0 ? { required } : {}),
  properties,
  additionalProperties: false,
});
const resource = (kind: string, spec: Schema): Schema =>
  closed(
    {
      apiVersion: { enum: ['monitoring.coreos.com/v1'] },
      kind: { enum: [kind] },
      metadata,
      spec,
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  );

/** The parts of the Prometheus Operator's ServiceMonitor and PrometheusRule the chart uses. */
const PROMETHEUS_OPERATOR: Record<string, Schema> = {
  'servicemonitor-monitoring-v1.json': resource(
    'ServiceMonitor',
    closed(
      {
        selector: closed({ matchLabels: labels }),
        endpoints: {
          type: 'array',
          minItems: 1,
          items: closed({
            port: { type: 'string' },
            path: { type: 'string', pattern: '^/' },
            interval: { type: 'string', pattern: '^[0-9]+(ms|s|m|h)$' },
          }),
        },
      },
      ['selector', 'endpoints'],
    ),
  ),
  'prometheusrule-monitoring-v1.json': resource(
    'PrometheusRule',
    closed(
      {
        groups: {
          type: 'array',
          items: closed(
            {
              name: { type: 'string', minLength: 1 },
              interval: { type: 'string' },
              rules: {
                type: 'array',
                items: closed(
                  {
                    alert: { type: 'string' },
                    record: { type: 'string' },
                    expr: { type: 'string', minLength: 1 },
                    for: { type: 'string' },
                    labels,
                    annotations: labels,
                  },
                  ['expr'],
                ),
              },
            },
            ['name', 'rules'],
          ),
        },
      },
      ['groups'],
    ),
  ),
};

/**
 * Writes into `dir` a schema for every kind that the OpenAPI document at `swaggerPath`
 * (`api/openapi-spec/swagger.json` of Kubernetes) defines, and returns how many it wrote.
 */
export function writeKubernetesSchemas(swaggerPath: string, dir: string): number {
  const { definitions } = JSON.parse(readFileSync(swaggerPath, 'utf8')) as {
    definitions: Record<string, Schema>;
  };
  mkdirSync(dir, { recursive: true });
  let written = 0;
  for (const [name, definition] of Object.entries(definitions)) {
    const kinds = definition['x-kubernetes-group-version-kind'] as GroupVersionKind[] | undefined;
    const [kind] = kinds ?? [];
    if (kind === undefined || kinds?.length !== 1) continue;
    const schema = expand(definition, definitions, [name]);
    writeFileSync(join(dir, fileName(kind)), JSON.stringify(schema));
    written += 1;
  }
  for (const [file, schema] of Object.entries(PROMETHEUS_OPERATOR)) {
    writeFileSync(join(dir, file), JSON.stringify(schema));
    written += 1;
  }
  return written;
}
