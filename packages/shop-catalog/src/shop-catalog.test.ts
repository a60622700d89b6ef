import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { shopCatalog } from './index.js';

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
