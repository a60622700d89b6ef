import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { seal } from '@sluice/privacy';
import { shopCatalog, shopProtectedFields } from './index.js';

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

  it('validate in clear text and sealed, nothing else', () => {
    const customerId = '0195d7c2-7a3e-7000-8000-000000000001';
    const sealed = seal(randomBytes(32), customerId, 'ada@example.com');
    const errors = (email: string) =>
      shopCatalog.payloadErrors('customer.email_changed.v1', { customerId, email });
    expect(errors('ada@example.com')).toEqual([]);
    expect(errors(sealed)).toEqual([]);
    expect(errors('sluice:enc:v1:not-sealed')).not.toEqual([]);
  });
});
