import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { seal } from '@sluice/privacy';
import { shopCatalog, shopCatalogInClear, shopProtectedFields } from './index.js';

const schemaDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');

describe('the shop catalog', () => {
  it('publishes an up-to-date JSON Schema file per event type (run `pnpm --filter @sluice/shop-catalog schemas`)', () => {
    const files = shopCatalog.schemaFiles();
    expect(Object.keys(files)).toHaveLength(Object.keys(shopCatalog.events).length);
    for (const [name, text] of Object.entries(files)) {
      expect(readFileSync(join(schemaDir, name), 'utf8'), name).toBe(text);
    }
  });

  it('names versions and aggregate types', () => {
    expect(shopCatalog.events['order.placed.v1'].version).toBe(1);
    expect([...shopCatalog.aggregateTypes].sort()).toEqual([
      'cart',
      'customer',
      'order',
      'product',
    ]);
  });
});

describe('personal fields', () => {
  it('are marked with the subject they belong to', () => {
    expect(shopProtectedFields).toEqual({
      'customer.registered.v1': { subject: 'customerId', fields: ['email', 'name'] },
      'customer.renamed.v1': { subject: 'customerId', fields: ['name'] },
      'customer.email_changed.v1': { subject: 'customerId', fields: ['email'] },
    });
  });

  it('are published sealed only; clear text validates only as a writer input', () => {
    const customerId = '0195d7c2-7a3e-7000-8000-000000000001';
    const sealed = seal(randomBytes(32), customerId, 'ada@example.com');
    const published = (email: string) =>
      shopCatalog.payloadErrors('customer.email_changed.v1', { customerId, email });
    const input = (email: string) =>
      shopCatalogInClear.payloadErrors('customer.email_changed.v1', { customerId, email });
    expect(published(sealed)).toEqual([]);
    expect(published('ada@example.com')).not.toEqual([]);
    expect(published('sluice:enc:v1:not-sealed')).not.toEqual([]);
    expect(input('ada@example.com')).toEqual([]);
    expect(input('not an email')).not.toEqual([]);
    expect(input(`${'a'.repeat(250)}@example.com`)).not.toEqual([]);
    const named = (name: string) =>
      shopCatalogInClear.payloadErrors('customer.renamed.v1', { customerId, name });
    expect(named('Ada')).toEqual([]);
    expect(named('')).not.toEqual([]);
    expect(named('a'.repeat(201))).not.toEqual([]);
  });

  it('keep their clear constraints in the published description', () => {
    const schema = JSON.parse(
      readFileSync(join(schemaDir, 'customer.registered.v1.json'), 'utf8'),
    ) as { properties: Record<string, { anyOf?: unknown; description?: string }> };
    expect(schema.properties.email?.anyOf).toBeUndefined();
    expect(schema.properties.email?.description).toMatch(/email address .*254/);
    expect(schema.properties.name?.description).toMatch(/1 to 200/);
  });
});
