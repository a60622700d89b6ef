// The projector refuses, before touching PostgreSQL or Kafka, a PROJECTOR_PROJECTIONS naming a
// projection its modules (here the shop's) do not export.
import { describe, expect, it } from 'vitest';
import { startService } from '../support/services.js';

describe('projector configuration', () => {
  it('exits 78 with config_invalid naming the unknown projection and the known ones, in one line', async () => {
    const projector = startService('projector', {
      // Nothing listens here: the process must fail on its configuration first.
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      KAFKA_BROKERS: '127.0.0.1:1',
      PROJECTOR_METRICS_PORT: '0',
      PROJECTOR_PROJECTIONS: 'cart_summary,cart_summray',
    });
    expect(await projector.exited()).toBe(78);
    expect(projector.output()).toBe(
      'sluice-projector: config_invalid: PROJECTOR_PROJECTIONS names unknown projections: cart_summray ' +
        '(known: audit_log, cart_summary, product_sales, removed_then_bought)\n',
    );
  });
});
