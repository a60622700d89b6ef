// docker-compose.yml against the Compose Specification's schema, and its pipeline profile.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The schema docker-compose (a dependency of testcontainers) ships; ajv as shop-api has it.
const fromTest = createRequire(join(rootDir, 'test', 'package.json'));
const fromTestcontainers = createRequire(fromTest.resolve('testcontainers'));
const schemaPath = join(
  dirname(fromTestcontainers.resolve('docker-compose/package.json')),
  'schema',
  'compose-spec.json',
);
type Validate = ((data: unknown) => boolean) & { errors?: unknown };
const { Ajv } = createRequire(join(rootDir, 'services', 'shop-api', 'package.json'))('ajv') as {
  Ajv: new (options: object) => { compile(schema: object): Validate };
};

type Service = {
  profiles?: string[];
  image?: string;
  build?: { dockerfile: string };
  environment?: Record<string, unknown>;
  network_mode?: string;
};
const compose = parse(readFileSync(join(rootDir, 'docker-compose.yml'), 'utf8'), {
  merge: true,
}) as { services: Record<string, Service> };

it('follows the Compose Specification', () => {
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, 'utf8')) as object);
  expect(validate(compose), JSON.stringify(validate.errors, null, 2)).toBe(true);
  expect(validate({ ...compose, services: { relay: { profiles: 'pipeline' } } })).toBe(false);
});

it('runs the whole pipeline from the services images under the pipeline profile', () => {
  const pipeline = Object.entries(compose.services).filter(([, s]) =>
    s.profiles?.includes('pipeline'),
  );
  expect(pipeline.map(([name]) => name).sort()).toEqual(
    ['console', 'projector', 'relay', 'relay-standby', 'shop-api'].sort(),
  );
  for (const [name, service] of pipeline) {
    expect(service.network_mode, name).toBe('service:kafka');
    expect(service.environment?.DATABASE_URL, name).toBe(
      'postgres://postgres@postgres:5432/sluice',
    );
    const dockerfile = service.build?.dockerfile;
    if (dockerfile !== undefined)
      expect(readFileSync(join(rootDir, dockerfile), 'utf8')).toMatch(/^USER node$/m);
  }
  expect(compose.services['relay-standby']?.image).toBe(compose.services.relay?.image);
  expect(compose.services.jaeger?.profiles).toEqual(['tracing']);
  expect(compose.services.postgres?.profiles).toBeUndefined();
});
